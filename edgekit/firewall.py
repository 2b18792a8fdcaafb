"""The firewall as data: what the proxies accept, what the nodes' NodePort fence admits,
and whether an SSH session may keep administering a proxy once it is loaded. Pure.

The proxies' ruleset lives in its own nftables table, `inet edgekit`, so loading it
replaces only that table and leaves every other table alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from edgekit.inventory.model import Inventory, Service

TABLE = "edgekit"
FENCE_TABLE = "edgekit_nodeport_fence"
RULESET = "/etc/edgekit/firewall.nft"
UNIT = "edgekit-firewall.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
# Where `edgekit render` puts the node fence: not a valid peer name, so never a peer's tree.
NODES_DIR = "_nodes"
FENCE_FILE = "edgekit-nodeport-fence.nft"
API_PORT = 6443

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ANY4 = ipaddress.IPv4Network("0.0.0.0/0")


def collapse(nets: Iterable[Network]) -> list[Network]:
    """Drop repeated networks and those inside another one (nftables interval sets refuse
    overlaps), keep adjacent ones apart so the listing reads as written; IPv4 first."""
    out: list[Network] = []
    for version in (4, 6):
        family = sorted(
            {n for n in nets if n.version == version},
            key=lambda n: (n.network_address, n.prefixlen),
        )
        for net in family:
            if not any(
                net.subnet_of(kept)  # type: ignore[arg-type]
                for kept in out
                if kept.version == version
            ):
                out.append(net)
    return out


def show(net: Network) -> str:
    """A network as nft and people write it: a single address without its /32 or /128."""
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def admin_cidrs(inv: Inventory) -> list[Network]:
    """Who may use SSH and the stats page: as written, else the VIPs' subnets."""
    if inv.firewall.admin_cidrs is not None:
        return collapse(inv.firewall.admin_cidrs)
    return collapse(v.address.network for v in inv.vips)


def client_cidrs(svc: Service) -> list[ipaddress.IPv4Network] | None:
    """Who may reach a service on the VIPs; None means anyone."""
    if svc.client_cidrs is None:
        return None
    nets = [n for n in collapse(svc.client_cidrs) if isinstance(n, ipaddress.IPv4Network)]
    return None if ANY4 in nets else nets


def ssh_ports(inv: Inventory) -> list[int]:
    """Every port edgekit's SSH may arrive on: ssh.port and any peer's ssh_port."""
    return sorted({inv.ssh.port} | {p.ssh_port for p in inv.peers if p.ssh_port})


def fenced_ports(inv: Inventory) -> list[int]:
    """The ports the proxies connect to on the nodes (NodePorts, the API)."""
    ports: set[int] = set()
    for svc in inv.services:
        ports.add(svc.port)
        ports.update(s.port for s in inv.backends.get(svc.backend, []) if s.port)
    return sorted(ports)


def fence_sources(inv: Inventory) -> list[Network]:
    """Who the node fence admits: every proxy (its own address and the VIPs) and extras."""
    own: list[Network] = [ipaddress.ip_network(p.address) for p in inv.peers]
    own += [ipaddress.ip_network(v.address.ip) for v in inv.vips]
    return collapse([*own, *inv.firewall.node_allow_cidrs])


def _family(nets: list[Network], version: int) -> list[str]:
    return [show(n) for n in nets if n.version == version]


def ruleset_context(inv: Inventory) -> dict[str, object]:
    """What templates/firewall.nft.j2 needs, as plain strings and numbers."""
    admin = admin_cidrs(inv)
    services = []
    for svc in inv.services:
        clients = client_cidrs(svc)
        services.append(
            {
                "name": svc.name,
                "port": svc.listen,
                "clients": None if clients is None else [show(n) for n in clients],
            }
        )
    return {
        "table": TABLE,
        "peers4": [str(p.address) for p in inv.peers],
        "vips4": [str(v.address.ip) for v in inv.vips],
        "admin4": _family(admin, 4),
        "admin6": _family(admin, 6),
        "ssh_ports": ssh_ports(inv),
        "stats_port": inv.stats.port,
        "peers_port": inv.haproxy.peers_port if any(s.sticky for s in inv.services) else None,
        "multicast": not inv.vrrp.unicast,
        "services": services,
    }


def fence_context(inv: Inventory) -> dict[str, object]:
    sources = fence_sources(inv)
    ports = fenced_ports(inv)
    return {
        "table": FENCE_TABLE,
        "ports": ports,
        "sources": [show(n) for n in sources],
        "sources4": _family(sources, 4),
        "sources6": _family(sources, 6),
        "extra": [show(n) for n in collapse(inv.firewall.node_allow_cidrs)],
        "api_port": API_PORT,
        "api_fenced": API_PORT in ports,
    }


def parse_ssh_connection(text: str) -> tuple[str, int] | None:
    """`$SSH_CONNECTION` ("client port server-address server-port") -> (client, server port)."""
    words = text.split()
    if len(words) != 4 or not words[3].isdigit():
        return None
    try:
        ip = ipaddress.ip_address(words[0].split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), int(words[3])


def admin_refusal(inv: Inventory, client: str, server_port: int) -> str | None:
    """Why loading the firewall would cut this SSH session (None: it would not)."""
    ip = ipaddress.ip_address(client)
    nets = admin_cidrs(inv)
    if not any(ip in n for n in nets):
        where = (
            "firewall.admin_cidrs"
            if inv.firewall.admin_cidrs is not None
            else "firewall.admin_cidrs (default: the VIPs' subnets)"
        )
        return (
            f"this machine reaches it from {client}, which is outside {where} "
            f"{', '.join(map(str, nets))}: the firewall would lock it out"
        )
    if server_port not in ssh_ports(inv):
        return (
            f"SSH arrives on port {server_port}, which the firewall does not open "
            f"(ssh ports: {', '.join(map(str, ssh_ports(inv)))})"
        )
    return None


def allows_client(svc: Service, address: str) -> bool:
    """Whether the firewall lets `address` reach the service on the VIPs."""
    nets = client_cidrs(svc)
    if nets is None:
        return True
    ip = ipaddress.ip_address(address)
    return any(ip in n for n in nets)
