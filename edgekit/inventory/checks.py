"""Rules that relate several inventory fields. Each yields Problem(key path, message, value).

A value that fails one rule is not checked against the rules that depend on it, so one
fault gives one line (a /32 VIP is one problem, not one per peer outside it).
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from edgekit.inventory import limits
from edgekit.inventory.model import Inventory, Peer

# Passwords that scanners try first; the stats page must not accept them.
COMMON_PASSWORDS = frozenset(
    {
        "admin",
        "administrator",
        "password",
        "passw0rd",
        "haproxy",
        "stats",
        "changeme",
        "secret",
        "123456",
        "12345678",
        "123456789",
        "qwerty",
        "letmein",
        "default",
        "root",
        "toor",
        "test",
        "guest",
        "edgekit",
        "keepalived",
        "welcome",
    }
)
MIN_PASSWORD_LENGTH = limits.MIN_PASSWORD_LENGTH
MAX_PEERS = limits.MAX_PEERS
# Proxy names haproxy.cfg already uses; a service of the same name would clash.
RESERVED_SERVICE_NAMES = frozenset({"stats"})
# Characters keepalived.conf reads as syntax: blocks, comments, quotes, escapes. The
# template quotes the secret as well, but these are refused outright.
KEEPALIVED_SYNTAX = frozenset('{}#!"\\')
# Ranges no VIP or peer can live in, with what they are.
RESERVED_RANGES = [
    (ipaddress.IPv4Network("0.0.0.0/8"), "in 0.0.0.0/8 ('this network', never a host's address)"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "a loopback address (127.0.0.0/8)"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "a link-local address (169.254.0.0/16)"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "a multicast address (224.0.0.0/4)"),
    (ipaddress.IPv4Network("255.255.255.255/32"), "the limited broadcast address"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "in the reserved range 240.0.0.0/4"),
    # RFC 5737: for examples in documentation, never routed.
    (ipaddress.IPv4Network("192.0.2.0/24"), "in 192.0.2.0/24, reserved for documentation"),
    (ipaddress.IPv4Network("198.51.100.0/24"), "in 198.51.100.0/24, reserved for documentation"),
    (ipaddress.IPv4Network("203.0.113.0/24"), "in 203.0.113.0/24, reserved for documentation"),
    # RFC 6890, 2544, 7526: protocol assignments, benchmarking, the retired 6to4 relays.
    (
        ipaddress.IPv4Network("192.0.0.0/24"),
        "in 192.0.0.0/24, reserved for IETF protocol assignments",
    ),
    (
        ipaddress.IPv4Network("198.18.0.0/15"),
        "in 198.18.0.0/15, reserved for benchmarking networks",
    ),
    (
        ipaddress.IPv4Network("192.88.99.0/24"),
        "in 192.88.99.0/24, reserved (the retired 6to4 relay anycast range)",
    ),
    # Not here: 100.64.0.0/10 (shared address space, RFC 6598), which a provider's
    # private network may well use for its hosts, nor public addresses.
]


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    value: object = None
    hint: str | None = None  # what to write instead, after the value


def _a_host(net: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """An example host address of `net` (its 100th, or its last)."""
    return net.network_address + min(100, net.num_addresses - 2)


def _free_vrid(inv: Inventory) -> int:
    used = {vip.vrid for vip in inv.vips}
    return next((v for v in range(51, 256) if v not in used), 1)


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def reserved(ip: ipaddress.IPv4Address) -> str | None:
    """What reserved range `ip` is in, or None."""
    return next((what for net, what in RESERVED_RANGES if ip in net), None)


def check_inventory(inv: Inventory) -> Iterator[Problem]:
    yield from _check_peers(inv)
    yield from _check_vrrp(inv)
    yield from _check_vips(inv)
    yield from _check_backends(inv)
    yield from _check_services(inv)
    yield from _check_ports(inv)
    yield from _check_maxconn(inv)
    yield from _check_firewall(inv)


def _check_peers(inv: Inventory) -> Iterator[Problem]:
    if len(inv.peers) < 2:
        yield Problem(
            "peers",
            "at least 2 peers are needed for failover",
            len(inv.peers),
            "list every proxy, each with its name and address",
        )
    if len(inv.peers) > MAX_PEERS:
        yield Problem(
            "peers",
            f"at most {MAX_PEERS} peers are supported",
            len(inv.peers),
            "split the proxies into several edges (one inventory each)",
        )
    names: dict[str, int] = {}
    addresses: dict[str, int] = {}
    for i, peer in enumerate(inv.peers):
        if peer.name in names:
            yield Problem(
                f"peers[{i}].name",
                f"duplicate peer name (also peers[{names[peer.name]}])",
                peer.name,
                "give each peer its own name",
            )
        names.setdefault(peer.name, i)
        addr = str(peer.address)
        what = reserved(peer.address)
        if what:
            yield Problem(
                f"peers[{i}].address",
                f"the peer address is {what}",
                addr,
                "write the address the peer has on the VIPs' segment",
            )
        elif addr in addresses:
            yield Problem(
                f"peers[{i}].address",
                f"duplicate peer address (also peers[{addresses[addr]}])",
                addr,
                "write each peer's own address",
            )
        addresses.setdefault(addr, i)


def _check_vrrp(inv: Inventory) -> Iterator[Problem]:
    v = inv.vrrp
    if v.version == 2 and (v.advert_int < 1 or v.advert_int != int(v.advert_int)):
        yield Problem(
            "vrrp.advert_int",
            "VRRP version 2 needs a whole number of seconds >= 1; use version: 3 for sub-second",
            v.advert_int,
        )
    # Compare with a tolerance: 0.29 * 100 is 28.999999999999996 in binary floating point.
    if v.version == 3 and abs(v.advert_int * 100 - round(v.advert_int * 100)) > 1e-6:
        yield Problem(
            "vrrp.advert_int",
            "VRRPv3 counts in centiseconds",
            v.advert_int,
            "write at most two decimals, e.g. 0.25",
        )
    for key in ("auth_pass_env", "auth_pass_file"):
        if getattr(v, key) and v.version == 3:
            yield Problem(
                f"vrrp.{key}",
                "VRRP version 3 has no authentication; remove it or set version: 2",
                getattr(v, key),
            )


def _vip_prefix_problem(i: int, vip_text: str, prefix: int, peers: int) -> Problem | None:
    if prefix < limits.MIN_VIP_PREFIX:
        return Problem(
            f"vips[{i}].address",
            f"the prefix /{prefix} is too wide for one VRRP segment (and the "
            "firewall's default admin set would become that whole range)",
            vip_text,
            f"write the segment's own prefix, e.g. /24 (at least /{limits.MIN_VIP_PREFIX})",
        )
    if prefix >= 31:
        return Problem(
            f"vips[{i}].address",
            f"the prefix /{prefix} leaves no room for the peers: a VIP's prefix "
            "is its segment's, which the peers share",
            vip_text,
            "write the segment's prefix, e.g. /24",
        )
    hosts = 2 ** (32 - prefix) - 2
    if hosts < peers + 1:
        return Problem(
            f"vips[{i}].address",
            f"the prefix /{prefix} holds {hosts} host addresses, too few for the VIP and "
            f"{peers} peers: a VIP's prefix is its segment's, which the peers share",
            vip_text,
            "write the segment's prefix, e.g. /24",
        )
    return None


def _vip_without_peers(i: int, vip: ipaddress.IPv4Interface, peers: list[Peer]) -> Problem | None:
    """A VIP whose subnet holds none of the peers as a host: its prefix (or address) is
    at fault, whichever peer is looked at; None when some peer is a host in it."""
    net = vip.network
    ends = (net.network_address, net.broadcast_address)
    if not peers or any(p.address in net and p.address not in ends for p in peers):
        return None
    shown = ", ".join(str(p.address) for p in peers[:3]) + (", ..." if len(peers) > 3 else "")
    # The longest prefix whose subnet around the VIP would hold every peer.
    holds = next(
        (
            prefix
            for prefix in range(net.prefixlen - 1, limits.MIN_VIP_PREFIX - 1, -1)
            if all(
                p.address in ipaddress.IPv4Network((vip.ip, prefix), strict=False) for p in peers
            )
        ),
        None,
    )
    if holds is not None and holds >= limits.WARN_VIP_PREFIX:
        return Problem(
            f"vips[{i}].address",
            f"the prefix /{net.prefixlen} is too narrow: {net} holds none of the peers "
            f"({shown}), and a VIP's prefix is its segment's, which the peers share",
            str(vip),
            f"write the segment's prefix, e.g. {vip.ip}/{limits.WARN_VIP_PREFIX}",
        )
    return Problem(
        f"vips[{i}].address",
        f"the VIP's subnet {net} holds none of the peers ({shown}): a VIP lives on the "
        "peers' segment",
        str(vip),
        "write a free address of the peers' segment, with its prefix",
    )


def _check_vips(inv: Inventory) -> Iterator[Problem]:
    vrids: dict[int, int] = {}
    addresses: dict[str, int] = {}
    peer_names = [p.name for p in inv.peers]
    # A peer already refused (reserved address) is not checked against the subnets too.
    bad_peers = {j for j, p in enumerate(inv.peers) if reserved(p.address)}
    outside: set[int] = set()
    for i, vip in enumerate(inv.vips):
        net = vip.address.network
        ip = vip.address.ip
        if not 1 <= vip.vrid <= 255:
            yield Problem(
                f"vips[{i}].vrid", "VRID must be within 1..255", vip.vrid, "write e.g. 51"
            )
        elif vip.vrid in vrids:
            yield Problem(
                f"vips[{i}].vrid",
                f"VRID repeated (also vips[{vrids[vip.vrid]}])",
                vip.vrid,
                f"write a VRID no other VIP of this segment uses, e.g. {_free_vrid(inv)}",
            )
        vrids.setdefault(vip.vrid, i)
        if vip.preferred and vip.preferred not in peer_names:
            yield Problem(
                f"vips[{i}].preferred",
                "no such peer" + did_you_mean(vip.preferred, peer_names),
                vip.preferred,
            )
        what = reserved(ip)
        if what:
            yield Problem(
                f"vips[{i}].address",
                f"the VIP is {what}",
                str(vip.address),
                "write an address on the proxies' own segment, e.g. 10.10.0.100/24",
            )
            continue
        wide = _vip_prefix_problem(i, str(vip.address), net.prefixlen, len(inv.peers))
        if wide:
            yield wide
            continue
        if str(ip) in addresses:
            yield Problem(
                f"vips[{i}].address",
                f"VIP address repeated (also vips[{addresses[str(ip)]}])",
                str(vip.address),
                "remove it, or write another free address",
            )
        addresses.setdefault(str(ip), i)
        sound_peers = [p for j, p in enumerate(inv.peers) if j not in bad_peers]
        outsider = _vip_without_peers(i, vip.address, sound_peers)
        if outsider:
            yield outsider  # one line for the VIP, not one per peer outside it
            outside.update(range(len(inv.peers)))
            continue
        if ip in (net.network_address, net.broadcast_address):
            yield Problem(
                f"vips[{i}].address",
                f"the VIP is the network or broadcast address of {net}, not a host inside it",
                str(vip.address),
                f"write a free host address, e.g. {_a_host(net)}/{net.prefixlen}",
            )
        for j, peer in enumerate(inv.peers):
            if j in bad_peers:
                continue
            if peer.address == ip:
                yield Problem(
                    f"vips[{i}].address",
                    f"the VIP equals peers[{j}].address",
                    str(vip.address),
                    "write an address no peer has: the VIP moves between them",
                )
            elif peer.address not in net:
                if j not in outside:  # once per peer, not once per VIP
                    yield Problem(
                        f"peers[{j}].address",
                        f"peer is outside the subnet {net} of vips[{i}]",
                        str(peer.address),
                        "write the peer's address on that segment (the one it sends VRRP "
                        "from), or widen the VIP's prefix",
                    )
                outside.add(j)
            elif peer.address in (net.network_address, net.broadcast_address):
                if j not in outside:
                    kind = "network" if peer.address == net.network_address else "broadcast"
                    yield Problem(
                        f"peers[{j}].address",
                        f"the peer is the {kind} address of {net} (vips[{i}]'s "
                        "subnet), not a host inside it",
                        str(peer.address),
                        "write the peer's own address",
                    )
                outside.add(j)


def _check_backends(inv: Inventory) -> Iterator[Problem]:
    for name, servers in inv.backends.items():
        if not servers:
            yield Problem(
                f"backends.{name}",
                "backend has no servers",
                [],
                "list its servers (- {name: ..., address: ...}), or remove the backend",
            )
        seen: set[str] = set()
        for i, server in enumerate(servers):
            if server.name in seen:
                yield Problem(
                    f"backends.{name}[{i}].name",
                    "duplicate server name",
                    server.name,
                    "give each server of a backend its own name",
                )
            seen.add(server.name)


def _check_services(inv: Inventory) -> Iterator[Problem]:
    sticky = any(s.sticky for s in inv.services)
    # stats and the stick-table peers both bind the peer's own address; the peers
    # section exists only when a service is sticky.
    if sticky and inv.haproxy.peers_port == inv.stats.port:
        if "peers_port" in inv.haproxy.model_fields_set:
            yield Problem(
                "haproxy.peers_port",
                "same port as stats.port",
                inv.haproxy.peers_port,
                "choose another port",
            )
        else:  # the default peers port: the stats port is the key the file holds
            yield Problem(
                "stats.port",
                "same port as haproxy.peers_port, which the stick tables of sticky "
                f"services bind ({inv.stats.port} by default: the file does not set it)",
                inv.stats.port,
                "choose another stats port, or set haproxy.peers_port to a free port",
            )
    listens: dict[int, str] = {inv.stats.port: "stats.port"}
    if sticky:
        listens.setdefault(inv.haproxy.peers_port, "haproxy.peers_port")
    names: set[str] = set()
    for i, svc in enumerate(inv.services):
        if svc.name in RESERVED_SERVICE_NAMES:
            yield Problem(
                f"services[{i}].name",
                "reserved: haproxy.cfg already has a proxy of that name",
                svc.name,
                "choose another name, e.g. web-stats",
            )
        elif svc.name in names:
            yield Problem(
                f"services[{i}].name",
                "duplicate service name",
                svc.name,
                "give each service its own name",
            )
        names.add(svc.name)
        if svc.listen in listens:
            yield Problem(
                f"services[{i}].listen",
                f"listen port already used by {listens[svc.listen]}",
                svc.listen,
                "choose another port",
            )
        listens.setdefault(svc.listen, f"services[{i}]")
        if svc.backend not in inv.backends:
            yield Problem(
                f"services[{i}].backend",
                "no such backend" + did_you_mean(svc.backend, list(inv.backends)),
                svc.backend,
            )


def _ssh_ports(inv: Inventory) -> dict[int, str]:
    ports = {inv.ssh.port: "ssh.port"}
    for j, peer in enumerate(inv.peers):
        if peer.ssh_port:
            ports.setdefault(peer.ssh_port, f"peers[{j}].ssh_port")
    return ports


def _check_ports(inv: Inventory) -> Iterator[Problem]:
    """Nothing haproxy binds may take a port SSH arrives on: haproxy could not bind it
    (or would take SSH's place), and the firewall would open SSH to the service's
    clients."""
    ssh = _ssh_ports(inv)
    binds = [(f"services[{i}].listen", s.listen, True) for i, s in enumerate(inv.services)]
    binds.append(("stats.port", inv.stats.port, "port" in inv.stats.model_fields_set))
    if any(s.sticky for s in inv.services):
        written = "peers_port" in inv.haproxy.model_fields_set
        binds.append(("haproxy.peers_port", inv.haproxy.peers_port, written))
    for path, port, written in binds:
        if port not in ssh:
            continue
        if written:
            yield Problem(
                path, f"same port as {ssh[port]}: SSH needs it", port, "choose another port"
            )
        else:  # the default: the SSH port is what the file says, so point at it
            user = (
                "the stick tables of sticky services bind"
                if "peers" in path
                else "the stats page binds"
            )
            yield Problem(
                ssh[port],
                f"same port as {path}, which {user} ({port} by default: the file does not set it)",
                port,
                f"choose another SSH port, or set {path} to a free port",
            )


def nofile_needed(inv: Inventory) -> int | None:
    """Open files haproxy needs for a fixed maxconn (None: unset, haproxy derives it)."""
    if inv.haproxy.maxconn is None:
        return None
    servers = sum(len(inv.backends.get(s.backend, [])) for s in inv.services)
    listeners = len(inv.services) * len(inv.vips) + 3  # stats (2) and peers
    # Two per connection (client and server side), one per health check in flight.
    return 2 * inv.haproxy.maxconn + servers + listeners + limits.NOFILE_RESERVE


def max_maxconn(inv: Inventory, nofile_limit: int) -> int:
    base = (
        nofile_needed(
            inv.model_copy(update={"haproxy": inv.haproxy.model_copy(update={"maxconn": 0})})
        )
        or 0
    )
    return max(0, (nofile_limit - base) // 2)


def maxconn_refusal(inv: Inventory, nofile_limit: int) -> str | None:
    """Why haproxy could not run with the inventory's maxconn on a host that lets one
    process open at most `nofile_limit` files (its fs.nr_open); None when it can."""
    needed = nofile_needed(inv)
    if needed is None or needed <= nofile_limit:
        return None
    return (
        f"haproxy.maxconn {inv.haproxy.maxconn} needs {needed} open files, but this "
        f"host lets a process open at most {nofile_limit} (fs.nr_open): lower "
        f"haproxy.maxconn to {max_maxconn(inv, nofile_limit)} or less, or raise "
        "fs.nr_open"
    )


def _check_maxconn(inv: Inventory) -> Iterator[Problem]:
    needed = nofile_needed(inv)
    if needed is not None and needed > limits.NR_OPEN:
        yield Problem(
            "haproxy.maxconn",
            f"needs {needed} open files, more than Linux lets one process open "
            f"by default (fs.nr_open {limits.NR_OPEN})",
            inv.haproxy.maxconn,
            f"write at most {max_maxconn(inv, limits.NR_OPEN)}, or leave it out "
            "for haproxy to derive it",
        )


def _check_firewall(inv: Inventory) -> Iterator[Problem]:
    fw = inv.firewall
    if not fw.enabled:
        # Firewall settings that nothing enforces would read as protection that is not there.
        unused: list[tuple[str, object]] = [
            ("firewall.admin_cidrs", fw.admin_cidrs),
            ("firewall.node_allow_cidrs", fw.node_allow_cidrs or None),
        ]
        unused += [
            (f"services[{i}].client_cidrs", s.client_cidrs) for i, s in enumerate(inv.services)
        ]
        for path, value in unused:
            if value is not None:
                yield Problem(
                    path,
                    "has no effect with firewall.enabled: false; remove it or enable the firewall",
                )
        return
    if fw.admin_cidrs is not None and not fw.admin_cidrs:
        yield Problem(
            "firewall.admin_cidrs",
            "an empty list would admit nobody to SSH: list "
            "the operators' networks, or leave the key out for the VIPs' subnets",
            [],
        )
    for i, svc in enumerate(inv.services):
        if svc.client_cidrs is not None and not svc.client_cidrs:
            yield Problem(
                f"services[{i}].client_cidrs",
                "an empty list would admit nobody: leave the key out to admit everyone",
                [],
            )


def check_password(password: str | None, user: str, source: str) -> Problem | None:
    """The stats password: present, not trivial. `source` is the key it came from."""
    strong = "choose a strong one (e.g. `openssl rand -base64 18`)"
    if not password:
        return Problem(source, f"the stats password is missing or empty; {strong}")
    if password.lower() == user.lower():
        return Problem(source, f"the stats password equals the user name; {strong}")
    if password.lower() in COMMON_PASSWORDS:
        return Problem(source, f"the stats password is a common default; {strong}")
    if len(password) < MIN_PASSWORD_LENGTH:
        return Problem(
            source, f"the stats password is shorter than {MIN_PASSWORD_LENGTH} characters; {strong}"
        )
    if any(c in password for c in "\"'\\$`\n\r") or not password.isprintable():
        return Problem(
            source,
            "the stats password may not contain quotes, backslashes, "
            "'$', '`', line breaks or other control characters (it travels "
            f"through haproxy's environment); {strong}",
        )
    return None


def check_vrrp_auth(secret: str, source: str) -> Problem | None:
    """VRRPv2 PASS authentication, as keepalived.conf carries it (in double quotes)."""
    if not 1 <= len(secret) <= limits.MAX_AUTH_PASS:
        return Problem(
            source,
            f"VRRP PASS authentication takes 1 to {limits.MAX_AUTH_PASS} "
            "printable characters without spaces (keepalived cuts a longer one "
            "short); choose one of 8 letters and digits, e.g. from `openssl rand -hex 4`",
        )
    if not secret.isascii() or not secret.isprintable():
        return Problem(
            source,
            "VRRP PASS authentication takes 1 to 8 printable ASCII "
            "characters without spaces or control characters (the secret "
            "holds another); choose one of letters, digits and ASCII punctuation",
        )
    if any(c.isspace() for c in secret):
        return Problem(
            source,
            "VRRP PASS authentication takes 1 to 8 printable characters "
            "without spaces; choose one without whitespace",
        )
    if any(c in KEEPALIVED_SYNTAX for c in secret):
        # Which character is not said: the message must not narrow the secret down.
        return Problem(
            source,
            "the VRRP secret holds a character keepalived.conf reads as "
            f"syntax (one of {' '.join(sorted(KEEPALIVED_SYNTAX))}); choose one of "
            "letters, digits and other punctuation",
        )
    return None
