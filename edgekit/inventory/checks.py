"""Rules that relate several inventory fields. Each returns (key path, message, value)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass

from edgekit.inventory.model import Inventory

# Passwords that scanners try first; the stats page must not accept them.
COMMON_PASSWORDS = frozenset(
    {
        "admin", "administrator", "password", "passw0rd", "haproxy", "stats", "changeme",
        "secret", "123456", "12345678", "123456789", "qwerty", "letmein", "default",
        "root", "toor", "test", "guest", "edgekit", "keepalived", "welcome",
    }
)
MIN_PASSWORD_LENGTH = 8
# render.py gives peers priorities 150, 140, ... 10; keepalived needs 1..254.
MAX_PEERS = 15
# Proxy names haproxy.cfg already uses; a service of the same name would clash.
RESERVED_SERVICE_NAMES = frozenset({"stats"})


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    value: object = None


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def check_inventory(inv: Inventory) -> Iterator[Problem]:
    yield from _check_peers(inv)
    yield from _check_vrrp(inv)
    yield from _check_vips(inv)
    yield from _check_backends(inv)
    yield from _check_services(inv)
    yield from _check_firewall(inv)


def _check_peers(inv: Inventory) -> Iterator[Problem]:
    if len(inv.peers) < 2:
        yield Problem("peers", "at least 2 peers are needed for failover", len(inv.peers))
    if len(inv.peers) > MAX_PEERS:
        yield Problem("peers", f"at most {MAX_PEERS} peers are supported", len(inv.peers))
    names: dict[str, int] = {}
    addresses: dict[str, int] = {}
    for i, peer in enumerate(inv.peers):
        if peer.name in names:
            yield Problem(
                f"peers[{i}].name", f"duplicate peer name (also peers[{names[peer.name]}])",
                peer.name,
            )
        names.setdefault(peer.name, i)
        addr = str(peer.address)
        if addr in addresses:
            yield Problem(
                f"peers[{i}].address",
                f"duplicate peer address (also peers[{addresses[addr]}])",
                addr,
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
        yield Problem("vrrp.advert_int", "VRRPv3 counts in centiseconds", v.advert_int)
    for key in ("auth_pass_env", "auth_pass_file"):
        if getattr(v, key) and v.version == 3:
            yield Problem(f"vrrp.{key}", "VRRP version 3 has no authentication; remove it "
                          "or set version: 2", getattr(v, key))


def _check_vips(inv: Inventory) -> Iterator[Problem]:
    vrids: dict[int, int] = {}
    addresses: dict[str, int] = {}
    peer_names = [p.name for p in inv.peers]
    for i, vip in enumerate(inv.vips):
        net = vip.address.network
        ip = vip.address.ip
        if not 1 <= vip.vrid <= 255:
            yield Problem(f"vips[{i}].vrid", "VRID must be within 1..255", vip.vrid)
        elif vip.vrid in vrids:
            yield Problem(f"vips[{i}].vrid", f"VRID repeated (also vips[{vrids[vip.vrid]}])",
                          vip.vrid)
        vrids.setdefault(vip.vrid, i)
        if str(ip) in addresses:
            yield Problem(f"vips[{i}].address",
                          f"VIP address repeated (also vips[{addresses[str(ip)]}])",
                          str(vip.address))
        addresses.setdefault(str(ip), i)
        if net.prefixlen < 31 and ip in (net.network_address, net.broadcast_address):
            yield Problem(f"vips[{i}].address",
                          f"the VIP is the network or broadcast address of {net}, "
                          "not a host inside it", str(vip.address))
        for j, peer in enumerate(inv.peers):
            if peer.address == ip:
                yield Problem(f"vips[{i}].address", f"the VIP equals peers[{j}].address",
                              str(vip.address))
            elif peer.address not in net:
                yield Problem(f"peers[{j}].address",
                              f"peer is outside the subnet {net} of vips[{i}]",
                              str(peer.address))
        if vip.preferred and vip.preferred not in peer_names:
            yield Problem(f"vips[{i}].preferred",
                          "no such peer" + did_you_mean(vip.preferred, peer_names),
                          vip.preferred)


def _check_backends(inv: Inventory) -> Iterator[Problem]:
    for name, servers in inv.backends.items():
        if not servers:
            yield Problem(f"backends.{name}", "backend has no servers", [])
        seen: set[str] = set()
        for i, server in enumerate(servers):
            if server.name in seen:
                yield Problem(f"backends.{name}[{i}].name", "duplicate server name",
                              server.name)
            seen.add(server.name)


def _check_services(inv: Inventory) -> Iterator[Problem]:
    # stats and the stick-table peers both bind the peer's own address.
    if inv.haproxy.peers_port == inv.stats.port:
        yield Problem("haproxy.peers_port", "same port as stats.port", inv.haproxy.peers_port)
    listens: dict[int, str] = {
        inv.haproxy.peers_port: "haproxy.peers_port",
        inv.stats.port: "stats.port",
    }
    names: set[str] = set()
    for i, svc in enumerate(inv.services):
        if svc.name in RESERVED_SERVICE_NAMES:
            yield Problem(f"services[{i}].name",
                          "reserved: haproxy.cfg already has a proxy of that name", svc.name)
        elif svc.name in names:
            yield Problem(f"services[{i}].name", "duplicate service name", svc.name)
        names.add(svc.name)
        if svc.listen in listens:
            yield Problem(f"services[{i}].listen",
                          f"listen port already used by {listens[svc.listen]}", svc.listen)
        listens.setdefault(svc.listen, f"services[{i}]")
        if svc.backend not in inv.backends:
            yield Problem(f"services[{i}].backend",
                          "no such backend" + did_you_mean(svc.backend, list(inv.backends)),
                          svc.backend)


def _check_firewall(inv: Inventory) -> Iterator[Problem]:
    fw = inv.firewall
    for i, svc in enumerate(inv.services):
        if svc.listen == inv.ssh.port:
            yield Problem(f"services[{i}].listen", "same port as ssh.port: haproxy could not "
                          "bind it, and the firewall would open SSH to the service's clients",
                          svc.listen)
    if not fw.enabled:
        # Firewall settings that nothing enforces would read as protection that is not there.
        unused: list[tuple[str, object]] = [
            ("firewall.admin_cidrs", fw.admin_cidrs),
            ("firewall.node_allow_cidrs", fw.node_allow_cidrs or None)]
        unused += [(f"services[{i}].client_cidrs", s.client_cidrs)
                   for i, s in enumerate(inv.services)]
        for path, value in unused:
            if value is not None:
                yield Problem(path, "has no effect with firewall.enabled: false; remove it "
                              "or enable the firewall")
        return
    if fw.admin_cidrs is not None and not fw.admin_cidrs:
        yield Problem("firewall.admin_cidrs", "an empty list would admit nobody to SSH: list "
                      "the operators' networks, or leave the key out for the VIPs' subnets", [])
    for i, svc in enumerate(inv.services):
        if svc.client_cidrs is not None and not svc.client_cidrs:
            yield Problem(f"services[{i}].client_cidrs", "an empty list would admit nobody: "
                          "leave the key out to admit everyone", [])


def check_password(password: str | None, user: str, source: str) -> Problem | None:
    """The stats password: present, not trivial. `source` is the key it came from."""
    if not password:
        return Problem(source, "the stats password is missing or empty")
    strong = "choose a strong one (e.g. `openssl rand -base64 18`)"
    if password.lower() == user.lower():
        return Problem(source, f"the stats password equals the user name; {strong}")
    if password.lower() in COMMON_PASSWORDS:
        return Problem(source, f"the stats password is a common default; {strong}")
    if len(password) < MIN_PASSWORD_LENGTH:
        return Problem(source, f"the stats password is shorter than {MIN_PASSWORD_LENGTH} "
                       "characters")
    if any(c in password for c in "\"'\\$`\n\r"):
        return Problem(source, "the stats password may not contain quotes, backslashes, "
                       "'$', '`' or line breaks (it travels through haproxy's environment)")
    return None
