"""Render the files each peer needs, as they will sit on the host. Pure: no I/O but templates.

haproxy.cfg and keepalived.conf are byte-identical on every peer: per-host
values reach haproxy through its environment (/etc/default/haproxy) and
keepalived through `@name` config-id lines, so drift is one hash compare.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import jinja2

from edgekit import firewall
from edgekit.inventory import Loaded
from edgekit.inventory.model import Inventory, Service

CHECK_SCRIPT = "/etc/keepalived/edgekit-check-haproxy"
NOTIFY_SCRIPT = "/etc/keepalived/edgekit-notify"
STATE_DIR = "/run/edgekit"
# 1 while haproxy.service is stopped or dead, written by its edgekit drop-in; keepalived
# watches it (track_file, inotify) and enters FAULT at once.
HAPROXY_DOWN_FILE = f"{STATE_DIR}/haproxy-down"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"


@dataclass(frozen=True)
class RenderedFile:
    path: str  # absolute path on the host
    content: str
    mode: int
    owner: str
    # What a change takes effect through: haproxy, keepalived, sysctl, systemd (a unit
    # file: daemon-reload) or nftables (the ruleset, which deploy loads itself,
    # commit-confirmed: edgekit.deploy.confirm).
    service: str
    secret: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()

    def manifest_entry(self) -> dict[str, object]:
        # A secret file's hash would let anyone holding the manifest (or `render --json`
        # output in a CI log) test password guesses offline: it is left out.
        return {"path": self.path, "mode": f"{self.mode:04o}", "owner": self.owner,
                "sha256": None if self.secret else self.sha256, "service": self.service,
                "secret": self.secret}


def templates_dir() -> Path:
    """templates/ inside an installed wheel, else the checkout's top-level templates/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "haproxy.cfg.j2").is_file():
            return candidate
    raise FileNotFoundError("edgekit templates not found (broken installation?)")


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def inventory_hash(inv: Inventory, sections: tuple[str, ...] | None = None) -> str:
    """Hash of the validated model (secrets are not in it): the same on every peer.

    With `sections`, only those top-level keys count: keepalived.conf carries the hash of
    what it is made from, so a backend change does not touch (and reload) keepalived.
    """
    data = inv.model_dump(mode="json")
    if sections is not None:
        data = {k: v for k, v in data.items() if k in sections}
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


KEEPALIVED_SECTIONS = ("cluster", "vrrp", "vips", "peers")


def _priorities(inv: Inventory) -> list[dict[str, int]]:
    """Per VIP, each peer's priority: the preferred peer highest, then inventory order.

    Distinct priorities avoid ties that keepalived would break by address.
    """
    names = [p.name for p in inv.peers]
    result = []
    for vip in inv.vips:
        order = list(names)
        if vip.preferred:
            start = order.index(vip.preferred)
            order = order[start:] + order[:start]
        result.append({name: 150 - 10 * i for i, name in enumerate(order)})
    return result


def _check_line(svc: Service) -> str:
    opts = ["check", f"inter {svc.check.inter}", f"fall {svc.check.fall}",
            f"rise {svc.check.rise}"]
    if svc.health.type == "https":
        opts += ["check-ssl", "verify none"]
    if svc.proxy_protocol == "v2":
        opts += ["send-proxy-v2", "check-send-proxy"]
    elif svc.proxy_protocol == "v1":
        opts += ["send-proxy", "check-send-proxy"]
    return " ".join(opts)


def _context(loaded: Loaded) -> dict[str, object]:
    inv = loaded.inventory
    return {
        "inv": inv,
        "inventory_hash": inventory_hash(inv),
        "vrrp_hash": inventory_hash(inv, KEEPALIVED_SECTIONS),
        "priorities": _priorities(inv),
        "sticky": any(s.sticky for s in inv.services),
        "check_line": _check_line,
        "interface_of": lambda peer, vip=None: (
            peer.interface or (vip.interface if vip else None) or inv.vrrp.interface
        ),
        "advert_int": f"{inv.vrrp.advert_int:g}",
        "vrrp_auth": loaded.secrets.vrrp_auth is not None,
        "vrrp_auth_pass": loaded.secrets.vrrp_auth or "",
        "check_script": CHECK_SCRIPT,
        "notify_script": NOTIFY_SCRIPT,
        "state_dir": STATE_DIR,
        "haproxy_down_file": HAPROXY_DOWN_FILE,
    }


def render_shared(loaded: Loaded) -> list[RenderedFile]:
    """Files that are the same on every peer."""
    env = _env()
    ctx = _context(loaded)
    kconf_secret = loaded.secrets.vrrp_auth is not None
    return [
        RenderedFile(HAPROXY_CFG, env.get_template("haproxy.cfg.j2").render(ctx), 0o644,
                     "root:root", "haproxy"),
        RenderedFile(KEEPALIVED_CONF, env.get_template("keepalived.conf.j2").render(ctx),
                     0o600 if kconf_secret else 0o644, "root:root", "keepalived",
                     secret=kconf_secret),
        RenderedFile(CHECK_SCRIPT, env.get_template("check-haproxy.sh.j2").render(ctx), 0o755,
                     "root:root", "keepalived"),
        RenderedFile(NOTIFY_SCRIPT, env.get_template("notify.sh.j2").render(ctx), 0o755,
                     "root:root", "keepalived"),
        RenderedFile("/etc/systemd/system/keepalived.service.d/edgekit.conf",
                     env.get_template("keepalived-override.conf.j2").render(ctx), 0o644,
                     "root:root", "systemd"),
        RenderedFile("/etc/systemd/system/haproxy.service.d/edgekit.conf",
                     env.get_template("haproxy-override.conf.j2").render(ctx), 0o644,
                     "root:root", "systemd"),
        RenderedFile("/etc/sysctl.d/60-edgekit.conf",
                     env.get_template("sysctl.conf.j2").render(ctx), 0o644, "root:root",
                     "sysctl"),
        *render_firewall(loaded),
    ]


def render_firewall(loaded: Loaded) -> list[RenderedFile]:
    """The proxies' nftables ruleset and the unit that loads it at boot (none when off)."""
    inv = loaded.inventory
    if not inv.firewall.enabled:
        return []
    env = _env()
    ctx = {"inv": inv, "firewall_hash": inventory_hash(inv, firewall.SECTIONS),
           "unit": firewall.UNIT, "ruleset": firewall.RULESET,
           **firewall.ruleset_context(inv)}
    return [
        RenderedFile(firewall.RULESET, env.get_template("firewall.nft.j2").render(ctx), 0o644,
                     "root:root", "nftables"),
        RenderedFile(firewall.UNIT_PATH,
                     env.get_template("edgekit-firewall.service.j2").render(ctx), 0o644,
                     "root:root", "systemd"),
    ]


def render_nodes(loaded: Loaded) -> list[RenderedFile]:
    """For the Kubernetes nodes (applied by their operator, not by edgekit): the NodePort
    fence ruleset and a README. Paths are relative to DIR/_nodes."""
    inv = loaded.inventory
    env = _env()
    ctx = {"inv": inv, "fence_hash": inventory_hash(inv, firewall.FENCE_SECTIONS),
           "fence_file": firewall.FENCE_FILE, **firewall.fence_context(inv)}
    return [
        RenderedFile(f"/{firewall.FENCE_FILE}",
                     env.get_template("nodeport-fence.nft.j2").render(ctx), 0o644, "root:root",
                     "nftables"),
        RenderedFile("/README.md", env.get_template("nodes-README.md.j2").render(ctx), 0o644,
                     "root:root", "none"),
    ]


def render_peer(loaded: Loaded, peer_name: str) -> list[RenderedFile]:
    """Every file for one peer: the shared ones plus its environment files."""
    env = _env()
    ctx = _context(loaded)
    peer = next(p for p in loaded.inventory.peers if p.name == peer_name)
    ctx = {**ctx, "peer": peer, "stats_password": loaded.secrets.stats_password}
    return [
        *render_shared(loaded),
        RenderedFile("/etc/default/haproxy", env.get_template("default-haproxy.j2").render(ctx),
                     0o600, "root:root", "haproxy", secret=True),
        RenderedFile("/etc/default/keepalived",
                     env.get_template("default-keepalived.j2").render(ctx), 0o644, "root:root",
                     "keepalived"),
    ]


def render_all(loaded: Loaded) -> dict[str, list[RenderedFile]]:
    return {p.name: render_peer(loaded, p.name) for p in loaded.inventory.peers}


def manifest(loaded: Loaded, files: dict[str, list[RenderedFile]],
             nodes: list[RenderedFile] | None = None) -> dict[str, object]:
    """Every peer's files; with `nodes`, also the files for DIR/_nodes (the node fence)."""
    data: dict[str, object] = {
        "cluster": loaded.inventory.cluster,
        "inventory_sha256": inventory_hash(loaded.inventory),
        "peers": {name: [f.manifest_entry() for f in fs] for name, fs in files.items()},
    }
    if nodes is not None:
        data["nodes"] = {"dir": firewall.NODES_DIR,
                         "files": [f.manifest_entry() for f in nodes]}
    return data


def write_tree(loaded: Loaded, out: Path) -> dict[str, object]:
    """Write DIR/<peer>/<path> for every file, DIR/_nodes/ (the nodes' NodePort fence, for
    their operators) and DIR/manifest.json; return the manifest."""
    files = render_all(loaded)
    nodes = render_nodes(loaded)
    trees = {**files, firewall.NODES_DIR: nodes}  # "_nodes" cannot be a peer's name
    for peer, peer_files in trees.items():
        for f in peer_files:
            target = out / peer / f.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            # Create with the final mode so a secret never sits world-readable.
            if target.exists():
                target.unlink()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, f.mode)
            with os.fdopen(fd, "w") as fh:
                fh.write(f.content)
            target.chmod(f.mode)
    data = manifest(loaded, files, nodes)
    (out / "manifest.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data
