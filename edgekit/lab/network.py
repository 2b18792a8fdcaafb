"""The lab's private segment: one bridge without uplink, a namespace per host."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

from edgekit.lab.plan import BRIDGE, NETNS_PREFIX, VETH_PREFIX, LabHost, LabInfo
from edgekit.lab.system import run

# Only names of exactly this shape are ever removed as leftovers of a lab.
LAB_NETNS = re.compile(rf"^{NETNS_PREFIX}(proxy|node)\d+$")
LAB_VETH = re.compile(rf"^{VETH_PREFIX}(proxy|node)\d+$")


def machine_routes() -> str:
    return run(["ip", "-4", "route", "show", "table", "all"]).stdout


def create_bridge(lab: LabInfo) -> None:
    prefix = ipaddress.IPv4Network(lab.subnet).prefixlen
    run(["ip", "link", "add", lab.bridge, "type", "bridge"])
    # Nothing that arrives on the bridge may be routed anywhere by the
    # machine: the lab stays on its segment even if ip_forward is on.
    _sysctl(f"net/ipv4/conf/{lab.bridge}/forwarding", "0")
    _sysctl(f"net/ipv6/conf/{lab.bridge}/disable_ipv6", "1")
    run(["ip", "addr", "add", f"{lab.gateway}/{prefix}", "dev", lab.bridge])
    run(["ip", "link", "set", lab.bridge, "up"])


def create_host_link(lab: LabInfo, host: LabHost) -> None:
    """netns + veth: eth1 inside with the host's address, the other end on the bridge."""
    prefix = ipaddress.IPv4Network(lab.subnet).prefixlen
    ns = host.netns
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth1", "netns", ns])
    run(["ip", "link", "set", host.veth, "master", lab.bridge, "up"])
    run(["ip", "-n", ns, "addr", "add", f"{host.address}/{prefix}", "dev", "eth1"])
    run(["ip", "-n", ns, "link", "set", "eth1", "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])


def set_link(host: LabHost, up: bool) -> None:
    run(["ip", "link", "set", host.veth, "up" if up else "down"])


def link_down_argv(host: LabHost) -> list[str]:
    return ["ip", "link", "set", host.veth, "down"]


def netns_path(host: LabHost) -> Path:
    return Path("/run/netns") / host.netns


def lab_netns() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [
        line.split()[0] for line in out.splitlines() if line and LAB_NETNS.match(line.split()[0])
    ]


def lab_links(bridge: str = BRIDGE) -> list[str]:
    out = run(["ip", "-j", "link", "show"], check=False).stdout or "[]"
    names = [link["ifname"] for link in json.loads(out)]
    return [n for n in names if n == bridge or LAB_VETH.match(n)]


def netns_pids(name: str) -> list[int]:
    out = run(["ip", "netns", "pids", name], check=False).stdout
    return [int(p) for p in out.split()]


def remove_network(bridge: str = BRIDGE) -> None:
    """Delete the lab's veths, bridge and namespaces; whatever part of them exists."""
    for link in lab_links(bridge):
        run(["ip", "link", "del", link], check=False)
    for ns in lab_netns():
        run(["ip", "netns", "del", ns], check=False)


def _sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key
    if path.exists():
        path.write_text(value)
