"""Scripted proxy hosts for rollout tests: FakeHosts that answer edgekit's fact script
like a Debian proxy would, and record every command deploy sends them."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from edgekit.inventory import Loaded, load_inventory
from edgekit.remote.fake import FakeHost

PASSWORD = "Zq8-vLm3pRt7xW"
ADMIN = "10.10.0.1"  # where this machine's SSH comes from, as the hosts see it

INVENTORY = """\
cluster: sim
vrrp: {{interface: eth1}}
vips:
  - {{address: 10.10.0.100/24, vrid: 51}}
peers:
  - {{name: proxy1, address: 10.10.0.11}}
  - {{name: proxy2, address: 10.10.0.12}}
  - {{name: proxy3, address: 10.10.0.13}}
ssh: {{user: root}}
backends:
  nodes:
    - {{name: node1, address: 10.10.0.21}}
services:
  - {{name: http, listen: 80, backend: nodes, port: 30080}}
stats: {{password_env: EDGEKIT_STATS_PASSWORD}}
firewall: {{enabled: {firewall}}}
"""


def inventory(tmp_path: Path, *, firewall: bool = False, extra: str = "") -> Loaded:
    """The simulated cluster's inventory; `extra` is appended YAML (top-level keys)."""
    path = tmp_path / "edge.yaml"
    path.write_text(INVENTORY.format(firewall="true" if firewall else "false") + extra)
    return load_inventory(path)


def facts_text(
    address: str,
    *,
    holds_vip: bool,
    files: dict[str, str | None],
    state: str = "BACKUP",
    active: str = "active",
    vip: str = "10.10.0.100",
    nr_open: int = 1048576,
    deploy: list[str] | None = None,
    modes: dict[str, tuple[int, str]] | None = None,
) -> str:
    """What edgekit's fact script prints on a Debian proxy with haproxy and keepalived
    installed and `active`; `files` maps a path to its content (None: absent)."""
    modes = modes or {}
    addrs = [{"family": "inet", "local": address, "prefixlen": 24}]
    if holds_vip:
        addrs.append({"family": "inet", "local": vip, "prefixlen": 24})
    lines = [
        "@os",
        "debian 12",
        "@packages",
        "haproxy installed",
        "keepalived installed",
        "@addresses",
        json.dumps([{"ifname": "eth1", "addr_info": addrs}]),
        "@files",
    ]
    for path, content in files.items():
        if content is None:
            lines.append(f"{path} -")
        else:
            mode, owner = modes.get(path, (0o644, "root:root"))
            lines.append(f"{path} {mode:o} {owner} {base64.b64encode(content.encode()).decode()}")
    lines += [
        "@units",
        f"haproxy {active} enabled",
        f"keepalived {active} enabled",
        "@haproxy",
        "4242",
        "4242 4250",
        "@deploy",
        *(deploy or []),
        "@limits",
        f"nr_open {nr_open}",
        "@vrrp",
        f"VI_51 {'MASTER' if holds_vip else state}",
        "@firewall",
        "@end",
    ]
    return "\n".join(lines) + "\n"


def proxy(
    name: str,
    address: str,
    *,
    holds_vip: bool = False,
    files: dict[str, str | None] | None = None,
    deploy: list[str] | None = None,
    modes: dict[str, tuple[int, str]] | None = None,
) -> FakeHost:
    """A Debian proxy with haproxy and keepalived running; of edgekit's files it has
    only `files` (a file the fact script is not told about reads as absent). `deploy`:
    lines of the facts' @deploy section (pending marks, leftovers, ...)."""
    host = FakeHost(name)
    facts = facts_text(address, holds_vip=holds_vip, files=files or {}, deploy=deploy, modes=modes)
    host.on(r"echo '@os'", stdout=facts)
    host.on(r"SSH_CONNECTION", stdout=f"{ADMIN} 50000 {address} 22\n")
    host.on(r"^mktemp -d /tmp/edgekit-upload", stdout="/tmp/edgekit-upload.sim\n")
    host.on(r"mktemp -d /run/edgekit-stage", stdout="/run/edgekit-stage.sim\n")
    host.on(r"flock -n 9", stdout="locked\n")  # the deploy lock is free
    return host


def cluster(holder: str = "proxy1") -> dict[str, FakeHost]:
    return {
        f"proxy{i}": proxy(f"proxy{i}", f"10.10.0.1{i}", holds_vip=f"proxy{i}" == holder)
        for i in (1, 2, 3)
    }


def deployed(loaded: Loaded, name: str, address: str, **kw: object) -> FakeHost:
    """A proxy that already has every file `loaded` renders for it, as rendered."""
    from edgekit.render import render_all

    files = render_all(loaded)[name]
    return proxy(
        name,
        address,
        files={f.path: f.content for f in files},
        modes={f.path: (f.mode, f.owner) for f in files},
        **kw,  # type: ignore[arg-type]
    )
