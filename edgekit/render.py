"""Render the files each peer needs, as they will sit on the host. Pure: no I/O but templates.

haproxy.cfg and keepalived.conf are byte-identical on every peer: per-host
values reach haproxy through its environment (/etc/default/haproxy) and
keepalived through `@name` config-id lines, so drift is one hash compare.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from edgekit import firewall
from edgekit.inventory import Loaded, fields
from edgekit.inventory.checks import nofile_needed
from edgekit.inventory.model import Inventory, Peer, Server, Service, Vip

CHECK_SCRIPT = "/etc/keepalived/edgekit-check-haproxy"
NOTIFY_SCRIPT = "/etc/keepalived/edgekit-notify"
STATE_DIR = "/run/edgekit"
# 1 while haproxy.service is stopped or dead, written by its edgekit drop-in; keepalived
# watches it (track_file, inotify) and enters FAULT at once.
HAPROXY_DOWN_FILE = f"{STATE_DIR}/haproxy-down"
# Per-instance files keepalived.conf includes, absent but while deploy moves a VIP to its
# preferred peer: there, `preempt` (edgekit.deploy.placement).
PLACEMENT_DIR = f"{STATE_DIR}/placement"
# A drained peer (edgekit.deploy.drain): keepalived tracks this file with DRAIN_WEIGHT,
# so "1" in it puts the peer's priority at the floor (1) for every VIP. It lives under
# /var/lib, not /run: a drained peer stays drained across reboots until undrain.
DRAIN_DIR = "/var/lib/edgekit"
DRAIN_FILE = f"{DRAIN_DIR}/drained"
DRAIN_WEIGHT = -253  # the most a track_file may take away without meaning FAULT
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
        return {
            "path": self.path,
            "mode": f"{self.mode:04o}",
            "owner": self.owner,
            "sha256": None if self.secret else self.sha256,
            "service": self.service,
            "secret": self.secret,
        }


def templates_dir() -> Path:
    """templates/ inside an installed wheel, else the checkout's top-level templates/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "haproxy.cfg.j2").is_file():
            return candidate
    raise FileNotFoundError("edgekit templates not found (broken installation?)")


def template_environment() -> jinja2.Environment:
    """A new Jinja2 environment over templates/ with edgekit's settings: undefined
    values are errors, output is byte-for-byte what the template says."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    # One environment per process: each compiles a template once.
    return template_environment()


def inventory_hash(inv: Inventory) -> str:
    """Hash of the validated model (secrets are not in it): the manifest's inventory_sha256."""
    data = inv.model_dump(mode="json")
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# Where a header puts the file's own hash, and where a secret goes. Validation refuses
# control characters in every inventory value and secret, so nothing rendered from the
# inventory can hold a NUL: these slots are only ever the templates' own.
_OWN_HASH = "\0sha256\0"
_SECRET_SLOT = "\0secret:{}\0"


def _sealed(template: str, ctx: dict[str, object], secrets: dict[str, str] | None = None) -> str:
    """Render `template`; its header's hash is the sha256 of the file itself with that
    hash and every secret left out. A file changes only when what it is made of does."""
    secrets = secrets or {}
    slots = {name: _SECRET_SLOT.format(name) for name in secrets}
    text = _env().get_template(template).render({**ctx, **slots, "own_hash": _OWN_HASH})
    bare = text.replace(_OWN_HASH, "")
    for slot in slots.values():
        bare = bare.replace(slot, "")
    text = text.replace(_OWN_HASH, hashlib.sha256(bare.encode()).hexdigest())
    for name, slot in slots.items():
        text = text.replace(slot, secrets[name])
    return text


def priorities(inv: Inventory) -> list[dict[str, int]]:
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


def interface_of(inv: Inventory, peer: Peer, vip: Vip | None = None) -> str:
    return peer.interface or (vip.interface if vip else None) or inv.vrrp.interface


def peer_interfaces(inv: Inventory, peer: Peer) -> list[str]:
    """The interfaces keepalived.conf names on `peer` (they must exist there)."""
    return sorted({interface_of(inv, peer, vip) for vip in inv.vips})


def _server_extra(server: Server) -> str:
    # A host name is resolved when haproxy starts (on the proxy, not here); one that
    # does not resolve leaves that server disabled instead of stopping haproxy.
    return "" if fields.is_ipv4(server.address) else " init-addr last,libc,none"


def _check_line(svc: Service) -> str:
    opts = ["check", f"inter {svc.check.inter}", f"fall {svc.check.fall}", f"rise {svc.check.rise}"]
    if svc.health.type == "https":
        opts += ["check-ssl", "verify none"]
    if svc.proxy_protocol == "v2":
        opts += ["send-proxy-v2", "check-send-proxy"]
    elif svc.proxy_protocol == "v1":
        opts += ["send-proxy", "check-send-proxy"]
    return " ".join(opts)


def _context(loaded: Loaded) -> dict[str, object]:
    from edgekit.monitoring import exporter  # it builds on this module

    inv = loaded.inventory
    return {
        "inv": inv,
        "priorities": priorities(inv),
        "sticky": any(s.sticky for s in inv.services),
        "check_line": _check_line,
        "server_extra": _server_extra,
        "interface_of": lambda peer, vip=None: interface_of(inv, peer, vip),
        "nofile": nofile_needed(inv),
        "advert_int": f"{inv.vrrp.advert_int:g}",
        "vrrp_auth": loaded.secrets.vrrp_auth is not None,
        "check_script": CHECK_SCRIPT,
        "notify_script": NOTIFY_SCRIPT,
        "state_dir": STATE_DIR,
        "haproxy_down_file": HAPROXY_DOWN_FILE,
        "placement_dir": PLACEMENT_DIR,
        "drain_dir": DRAIN_DIR,
        "drain_file": DRAIN_FILE,
        "drain_weight": DRAIN_WEIGHT,
        # The same path as a glob pattern: keepalived is silent about a pattern in a
        # directory that does not exist, and warns about a missing plain path.
        "placement_pattern": f"{PLACEMENT_DIR[:-1]}[{PLACEMENT_DIR[-1]}]",
        # edgekit.monitoring.exporter: the stats frontend forwards this path to it.
        "exporter_metrics_path": exporter.METRICS_PATH,
        "exporter_socket": exporter.SOCKET_NAME,
    }


def render_shared(loaded: Loaded) -> list[RenderedFile]:
    """Files that are the same on every peer."""
    # edgekit.monitoring builds on this module: imported when first used.
    from edgekit.monitoring import render_exporter

    env = _env()
    ctx = _context(loaded)
    kconf_secret = loaded.secrets.vrrp_auth is not None
    return [
        RenderedFile(
            HAPROXY_CFG,
            _sealed("haproxy.cfg.j2", ctx),
            0o644,
            "root:root",
            "haproxy",
        ),
        RenderedFile(
            KEEPALIVED_CONF,
            _sealed("keepalived.conf.j2", ctx, {"vrrp_auth_pass": loaded.secrets.vrrp_auth or ""}),
            0o600 if kconf_secret else 0o644,
            "root:root",
            "keepalived",
            secret=kconf_secret,
        ),
        RenderedFile(
            CHECK_SCRIPT,
            env.get_template("check-haproxy.sh.j2").render(ctx),
            0o755,
            "root:root",
            "keepalived",
        ),
        RenderedFile(
            NOTIFY_SCRIPT,
            env.get_template("notify.sh.j2").render(ctx),
            0o755,
            "root:root",
            "keepalived",
        ),
        RenderedFile(
            "/etc/systemd/system/keepalived.service.d/edgekit.conf",
            env.get_template("keepalived-override.conf.j2").render(ctx),
            0o644,
            "root:root",
            "systemd",
        ),
        RenderedFile(
            "/etc/systemd/system/haproxy.service.d/edgekit.conf",
            env.get_template("haproxy-override.conf.j2").render(ctx),
            0o644,
            "root:root",
            "systemd",
        ),
        RenderedFile(
            "/etc/sysctl.d/60-edgekit.conf",
            env.get_template("sysctl.conf.j2").render(ctx),
            0o644,
            "root:root",
            "sysctl",
        ),
        *render_firewall(loaded),
        *render_exporter(loaded),
    ]


def _ruleset(inv: Inventory) -> str:
    ctx = {"inv": inv, "unit": firewall.UNIT, **firewall.ruleset_context(inv)}
    return _sealed("firewall.nft.j2", ctx)


def firewall_hash(inv: Inventory) -> str:
    """The hash the proxies' ruleset carries in its header and its table's comment."""
    match = re.search(r'comment "edgekit inventory sha256:([0-9a-f]{64})"', _ruleset(inv))
    assert match, "templates/firewall.nft.j2 names its hash in the table's comment"
    return match.group(1)


def render_firewall(loaded: Loaded) -> list[RenderedFile]:
    """The proxies' nftables ruleset and the unit that loads it at boot (none when off)."""
    inv = loaded.inventory
    if not inv.firewall.enabled:
        return []
    env = _env()
    ctx = {"inv": inv, "unit": firewall.UNIT, "ruleset": firewall.RULESET, "table": firewall.TABLE}
    return [
        RenderedFile(
            firewall.RULESET,
            _ruleset(inv),
            0o644,
            "root:root",
            "nftables",
        ),
        RenderedFile(
            firewall.UNIT_PATH,
            env.get_template("edgekit-firewall.service.j2").render(ctx),
            0o644,
            "root:root",
            "systemd",
        ),
    ]


def render_nodes(loaded: Loaded) -> list[RenderedFile]:
    """For the Kubernetes nodes (applied by their operator, not by edgekit): the NodePort
    fence ruleset and a README. Paths are relative to DIR/_nodes."""
    inv = loaded.inventory
    env = _env()
    ctx = {"inv": inv, "fence_file": firewall.FENCE_FILE, **firewall.fence_context(inv)}
    return [
        RenderedFile(
            f"/{firewall.FENCE_FILE}",
            _sealed("nodeport-fence.nft.j2", ctx),
            0o644,
            "root:root",
            "nftables",
        ),
        RenderedFile(
            "/README.md",
            env.get_template("nodes-README.md.j2").render(ctx),
            0o644,
            "root:root",
            "none",
        ),
    ]


def render_peer(
    loaded: Loaded, peer_name: str, shared: list[RenderedFile] | None = None
) -> list[RenderedFile]:
    """Every file for one peer: the shared ones (`shared`, when already rendered) plus
    its environment files."""
    env = _env()
    ctx = _context(loaded)
    peer = next(p for p in loaded.inventory.peers if p.name == peer_name)
    ctx = {**ctx, "peer": peer, "stats_password": loaded.secrets.stats_password}
    return [
        *(render_shared(loaded) if shared is None else shared),
        RenderedFile(
            "/etc/default/haproxy",
            env.get_template("default-haproxy.j2").render(ctx),
            0o600,
            "root:root",
            "haproxy",
            secret=True,
        ),
        RenderedFile(
            "/etc/default/keepalived",
            env.get_template("default-keepalived.j2").render(ctx),
            0o644,
            "root:root",
            "keepalived",
        ),
    ]


def render_all(loaded: Loaded) -> dict[str, list[RenderedFile]]:
    shared = render_shared(loaded)  # identical on every peer: rendered once
    return {p.name: render_peer(loaded, p.name, shared) for p in loaded.inventory.peers}


def manifest(
    loaded: Loaded, files: dict[str, list[RenderedFile]], nodes: list[RenderedFile] | None = None
) -> dict[str, object]:
    """Every peer's files; with `nodes`, also the files for DIR/_nodes (the node fence)."""
    data: dict[str, object] = {
        "cluster": loaded.inventory.cluster,
        "inventory_sha256": inventory_hash(loaded.inventory),
        "peers": {name: [f.manifest_entry() for f in fs] for name, fs in files.items()},
    }
    if nodes is not None:
        data["nodes"] = {"dir": firewall.NODES_DIR, "files": [f.manifest_entry() for f in nodes]}
    return data


def write_tree(loaded: Loaded, out: Path) -> dict[str, object]:
    """Write DIR/<peer>/<path> for every file, DIR/_nodes/ (the nodes' NodePort fence, for
    their operators), DIR/_monitoring/ (Prometheus rules and scrape jobs, a Grafana
    dashboard) and DIR/manifest.json; return the manifest."""
    from edgekit import monitoring  # it builds on this module

    files = render_all(loaded)
    nodes = render_nodes(loaded)
    watch = monitoring.render_monitoring(loaded)
    # "_nodes" and "_monitoring" cannot be a peer's name.
    trees = {**files, firewall.NODES_DIR: nodes, monitoring.MONITORING_DIR: watch}
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
    data["monitoring"] = {
        "dir": monitoring.MONITORING_DIR,
        "files": [f.manifest_entry() for f in watch],
    }
    (out / "manifest.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


_TIMEOUT_KEYS = {
    "connect": "haproxy.connect_timeout",
    "client": "haproxy.client_timeout",
    "server": "haproxy.server_timeout",
}


def haproxy_sources(inv: Inventory, text: str) -> dict[int, str]:
    """Which inventory key each line of a rendered haproxy.cfg comes from (line -> key
    path), so that an error haproxy -c reports on a line can name the key to fix."""
    out: dict[int, str] = {}
    services = {s.name: i for i, s in enumerate(inv.services)}
    peers = {p.name: j for j, p in enumerate(inv.peers)}
    lines = text.splitlines()
    section, name, servers_seen = "", "", False
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        words = line.split()
        if not words or line.startswith(("#", ".")):
            continue
        if not raw[0].isspace():  # a section header
            section, name, servers_seen = words[0], (words[1] if len(words) > 1 else ""), False
            if name in services and section in ("frontend", "backend"):
                out[n] = f"services[{services[name]}].name"
            continue
        key = _haproxy_key(inv, section, name, words, services, peers)
        if key:
            out[n] = key
        if (
            section == "backend"
            and name in services
            and (key or "").startswith("backends.")  # one of the template's server lines
            and not servers_seen
        ):
            # The template puts a service's haproxy_options right above its first server.
            servers_seen = True
            i = services[name]
            opts = inv.services[i].haproxy_options
            for j, opt in enumerate(opts):
                at = n - len(opts) + j
                if at >= 1 and lines[at - 1].strip() == opt.strip():
                    out[at] = f"services[{i}].haproxy_options[{j}]"
    return out


def _haproxy_key(
    inv: Inventory,
    section: str,
    name: str,
    words: list[str],
    services: dict[str, int],
    peers: dict[str, int],
) -> str | None:
    first = words[0]
    if section == "global" and first == "maxconn":
        return "haproxy.maxconn"
    if section == "defaults" and first == "timeout" and len(words) > 1:
        return _TIMEOUT_KEYS.get(words[1])
    if section == "peers" and first == "peer" and len(words) > 1 and words[1] in peers:
        return f"peers[{peers[words[1]]}]"
    if section == "userlist" and first == "user":
        return "stats.user"
    if section == "frontend" and name == "stats":
        return {"bind": "stats.port", "stats": "stats.uri"}.get(first)
    if name not in services:
        return None
    i = services[name]
    svc = inv.services[i]
    if section == "frontend":
        return {"bind": f"services[{i}].listen", "timeout": f"services[{i}].timeout"}.get(first)
    if first == "server" and len(words) > 1:
        servers = inv.backends.get(svc.backend, [])
        k = next((k for k, s in enumerate(servers) if s.name == words[1]), None)
        return None if k is None else f"backends.{svc.backend}[{k}]"
    if first == "http-check":
        return f"services[{i}].health"
    if first in ("stick-table", "stick"):
        return f"services[{i}].sticky"
    known = {"balance": "balance", "timeout": "timeout"}
    return f"services[{i}].{known[first]}" if first in known else None


_KEEPALIVED_WORD = re.compile(r"^(?:@\^?(\S+)\s+)?(\S+)")


def keepalived_sources(inv: Inventory, text: str) -> dict[int, str]:
    """Which inventory key each line of a rendered keepalived.conf comes from."""
    out: dict[int, str] = {}
    vrids = {str(v.vrid): i for i, v in enumerate(inv.vips)}
    peers = {p.name: j for j, p in enumerate(inv.peers)}
    vip = -1
    for n, raw in enumerate(text.splitlines(), start=1):
        match = _KEEPALIVED_WORD.match(raw.strip())
        if not match:
            continue
        who, word = match.groups()
        if word == "vrrp_instance":
            vip = vrids.get(raw.split("VI_", 1)[-1].split()[0], -1)
        j = peers.get(who or "")
        if word == "interface" and j is not None and vip >= 0:
            peer, v = inv.peers[j], inv.vips[vip]
            out[n] = (
                f"peers[{j}].interface"
                if peer.interface
                else f"vips[{vip}].interface"
                if v.interface
                else "vrrp.interface"
            )
        elif word == "auth_pass":
            out[n] = "vrrp.auth_pass_env" if inv.vrrp.auth_pass_env else "vrrp.auth_pass_file"
        elif vip >= 0 and word in ("virtual_router_id", "version", "advert_int"):
            out[n] = {
                "virtual_router_id": f"vips[{vip}].vrid",
                "version": "vrrp.version",
                "advert_int": "vrrp.advert_int",
            }[word]
        elif j is not None and word in ("unicast_src_ip", "router_id"):
            out[n] = f"peers[{j}].address" if word == "unicast_src_ip" else f"peers[{j}].name"
    return out
