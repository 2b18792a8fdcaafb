"""The local lab's layout as data: names, addresses, inventory. No I/O here."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import InputError

BRIDGE = "ekbr0"
NETNS_PREFIX = "edgekit-"
VETH_PREFIX = "ek-"
CGROUP_DIR = "edgekit-lab"
ADMIN_USER = "edgekit"
CLUSTER = "edgekit-lab"
VRID = 51
# Candidates for the lab /24, tried in order; the first one that no route
# of the machine overlaps is used.
SUBNET_CANDIDATES = tuple(f"10.213.{n}.0/24" for n in range(0, 10)) + (
    "172.30.213.0/24",
    "192.168.213.0/24",
)
PEER_BASE = 11  # proxy1 = .11
NODE_BASE = 21  # node1 = .21
VIP_HOST = 100
MAX_PEERS = NODE_BASE - PEER_BASE
MAX_BACKENDS = VIP_HOST - NODE_BASE

BACKEND_HTTP_PORT = 30080
BACKEND_TLS_PORT = 30443
BACKEND_API_PORT = 6443


@dataclass(frozen=True)
class LabHost:
    name: str
    role: str  # "proxy" or "backend"
    address: str

    @property
    def netns(self) -> str:
        return NETNS_PREFIX + self.name

    @property
    def veth(self) -> str:
        # The machine's end of the host's veth pair; the host's end is eth1.
        return VETH_PREFIX + self.name


@dataclass(frozen=True)
class LabInfo:
    """What a running local lab is: everything a test or a user needs to reach it."""

    state_dir: Path
    inventory: Path
    subnet: str
    gateway: str  # the machine's address on the bridge
    vip: str  # without prefix length
    bridge: str
    peers: list[LabHost]
    backends: list[LabHost]
    ssh_user: str = ADMIN_USER
    identity_file: Path = field(default=Path())
    known_hosts: Path = field(default=Path())
    stats_password_file: Path = field(default=Path())
    stats_port: int = 8404
    lab_id: str = ""  # written into the inventory's marker line (edgekit.lab.base)

    @property
    def hosts(self) -> list[LabHost]:
        return [*self.peers, *self.backends]

    @property
    def peer_names(self) -> list[str]:
        return [h.name for h in self.peers]

    @property
    def backend_names(self) -> list[str]:
        return [h.name for h in self.backends]

    def host(self, name_or_address: str) -> LabHost:
        for host in self.hosts:
            if name_or_address in (host.name, host.address):
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise InputError(f"the lab has no host {name_or_address!r} (hosts: {known})")

    def address_of(self, name: str) -> str:
        return self.host(name).address

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabInfo:
        paths = {"state_dir", "inventory", "identity_file", "known_hosts", "stats_password_file"}
        kwargs: dict[str, Any] = {k: Path(v) if k in paths else v for k, v in data.items()}
        kwargs["peers"] = [LabHost(**h) for h in data["peers"]]
        kwargs["backends"] = [LabHost(**h) for h in data["backends"]]
        return cls(**kwargs)


def route_prefixes(ip_route_output: str) -> list[ipaddress.IPv4Network]:
    """Destinations in `ip route` / `ip -4 route show table all` output."""
    prefixes = []
    for line in ip_route_output.splitlines():
        words = line.split()
        if not words:
            continue
        dest = words[1] if words[0] in ("local", "broadcast", "unicast", "blackhole") else words[0]
        if dest == "default":
            continue
        try:
            prefixes.append(ipaddress.IPv4Network(dest, strict=False))
        except ValueError:
            continue  # IPv6 or keywords we do not need
    return prefixes


def choose_subnet(ip_route_output: str, candidates: tuple[str, ...] = SUBNET_CANDIDATES) -> str:
    """The first candidate /24 that no route of the machine overlaps."""
    taken = route_prefixes(ip_route_output)
    for candidate in candidates:
        net = ipaddress.IPv4Network(candidate)
        if not any(net.overlaps(t) for t in taken):
            return str(net)
    raise InputError(
        "every candidate lab subnet clashes with a route of this machine",
        hint="pass --subnet CIDR (a free /24)",
    )


def check_subnet(subnet: str, ip_route_output: str) -> str:
    """Validate a user-given subnet: a private /24 that does not clash."""
    try:
        net = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as exc:
        raise InputError(f"--subnet {subnet}: {exc}", hint="e.g. 10.213.0.0/24") from exc
    if net.prefixlen != 24 or not net.is_private:
        raise InputError(f"--subnet {subnet}: the lab needs a private /24")
    for taken in route_prefixes(ip_route_output):
        if net.overlaps(taken):
            raise InputError(f"--subnet {subnet} overlaps the machine's route {taken}")
    return str(net)


def check_counts(peers: int, backends: int) -> None:
    if not 1 <= peers <= MAX_PEERS:
        raise InputError(f"--peers must be between 1 and {MAX_PEERS}")
    if not 1 <= backends <= MAX_BACKENDS:
        raise InputError(f"--backends must be between 1 and {MAX_BACKENDS}")


def plan_lab(state_dir: Path, subnet: str, peers: int, backends: int) -> LabInfo:
    check_counts(peers, backends)
    net = ipaddress.IPv4Network(subnet)

    def host_address(n: int) -> str:
        return str(net.network_address + n)

    return LabInfo(
        state_dir=state_dir,
        inventory=state_dir / "edge.yaml",
        subnet=str(net),
        gateway=host_address(1),
        vip=host_address(VIP_HOST),
        bridge=BRIDGE,
        peers=[
            LabHost(f"proxy{i}", "proxy", host_address(PEER_BASE + i - 1))
            for i in range(1, peers + 1)
        ],
        backends=[
            LabHost(f"node{i}", "backend", host_address(NODE_BASE + i - 1))
            for i in range(1, backends + 1)
        ],
        identity_file=state_dir / "id_ed25519",
        known_hosts=state_dir / "known_hosts",
        stats_password_file=state_dir / "stats-password",
    )


def inventory_dict(lab: LabInfo) -> dict[str, Any]:
    """The lab's edge.yaml, as plain data for yaml.safe_dump."""
    prefix = ipaddress.IPv4Network(lab.subnet).prefixlen
    return {
        "cluster": CLUSTER,
        "vrrp": {"interface": "eth1"},
        "vips": [{"address": f"{lab.vip}/{prefix}", "vrid": VRID}],
        "peers": [{"name": h.name, "address": h.address} for h in lab.peers],
        "ssh": {
            "user": lab.ssh_user,
            "port": 22,
            "identity_file": str(lab.identity_file),
            "known_hosts": str(lab.known_hosts),
        },
        "backends": {"nodes": [{"name": h.name, "address": h.address} for h in lab.backends]},
        "services": [
            {"name": "http", "listen": 80, "backend": "nodes", "port": BACKEND_HTTP_PORT},
            {"name": "https", "listen": 443, "backend": "nodes", "port": BACKEND_TLS_PORT},
            {
                "name": "kubernetes-api",
                "listen": 6443,
                "backend": "nodes",
                "port": BACKEND_API_PORT,
                "timeout": "1h",
                "health": {"type": "https", "path": "/healthz"},
            },
        ],
        "stats": {
            "port": lab.stats_port,
            "user": "admin",
            "password_file": str(lab.stats_password_file),
        },
    }


def known_hosts_text(host_keys: dict[str, str]) -> str:
    """known_hosts lines: address -> public key line ("ssh-ed25519 AAAA... comment")."""
    lines = []
    for address, public_key in host_keys.items():
        key_type, key_data = public_key.split()[:2]
        lines.append(f"{address} {key_type} {key_data}\n")
    return "".join(lines)


def hosts_file_text(lab: LabInfo, own_name: str) -> str:
    lines = ["127.0.0.1\tlocalhost\n", f"127.0.1.1\t{own_name}\n"]
    lines += [f"{h.address}\t{h.name}\n" for h in lab.hosts if h.name != own_name]
    lines += [f"{lab.vip}\tvip\n"]
    lines += ["::1\tlocalhost ip6-localhost ip6-loopback\n"]
    return "".join(lines)
