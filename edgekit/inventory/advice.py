"""Warnings: an inventory that works but probably not as its author meant. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from edgekit.inventory import limits
from edgekit.inventory.checks import Problem
from edgekit.inventory.fields import is_ipv4
from edgekit.inventory.model import Inventory

API_PORT = 6443
_ANYWHERE = (ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv6Network("::/0"))


def advise(inv: Inventory) -> Iterator[Problem]:
    yield from _firewall(inv)
    yield from _unused_backends(inv)
    yield from _services(inv)
    yield from _host_names(inv)


Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _anywhere_together(nets: list[Net]) -> Net | None:
    """The whole address space (0.0.0.0/0 or ::/0) that several networks cover
    together, none of them alone (0.0.0.0/1 and 128.0.0.0/1, say); None otherwise."""
    v4 = [net for net in nets if isinstance(net, ipaddress.IPv4Network)]
    v6 = [net for net in nets if isinstance(net, ipaddress.IPv6Network)]
    # A list that holds the whole space itself is named by the per-item warning.
    if _ANYWHERE[0] not in v4 and list(ipaddress.collapse_addresses(v4)) == [_ANYWHERE[0]]:
        return _ANYWHERE[0]
    if _ANYWHERE[1] not in v6 and list(ipaddress.collapse_addresses(v6)) == [_ANYWHERE[1]]:
        return _ANYWHERE[1]
    return None


def _open_to_anyone(key: str, nets: list[Net], what: str, instead: str) -> Iterator[Problem]:
    for i, net in enumerate(nets):
        if net in _ANYWHERE:
            yield Problem(f"{key}[{i}]", what, str(net), instead)
    together = _anywhere_together(nets)
    if together is not None:
        yield Problem(
            key,
            f"{what}: together these networks cover every "
            f"{'IPv4' if together.version == 4 else 'IPv6'} address ({together})",
            [str(net) for net in nets],
            instead,
        )


def _firewall(inv: Inventory) -> Iterator[Problem]:
    fw = inv.firewall
    if not fw.enabled:
        return
    yield from _open_to_anyone(
        "firewall.node_allow_cidrs",
        list(fw.node_allow_cidrs),
        "lets anyone reach the nodes' NodePorts directly, past the proxies and each "
        "service's client_cidrs",
        "list the cluster's node and pod networks instead",
    )
    if fw.admin_cidrs is not None:
        yield from _open_to_anyone(
            "firewall.admin_cidrs",
            list(fw.admin_cidrs),
            "admits SSH and the stats page from anywhere",
            "list the operators' networks instead",
        )
        return
    for i, vip in enumerate(inv.vips):
        net = vip.address.network
        if limits.MIN_VIP_PREFIX <= net.prefixlen < limits.WARN_VIP_PREFIX:
            yield Problem(
                f"vips[{i}].address",
                f"the firewall admits SSH and the stats page from the VIPs' "
                f"subnets by default, which is all of {net} "
                f"({net.num_addresses} addresses)",
                str(vip.address),
                "set firewall.admin_cidrs to the operators' networks",
            )


def _unused_backends(inv: Inventory) -> Iterator[Problem]:
    used = {s.backend for s in inv.services}
    for name in inv.backends:
        if name not in used:
            yield Problem(
                f"backends.{name}",
                "no service uses this backend",
                hint="remove it, or name it in a service's backend",
            )


def _services(inv: Inventory) -> Iterator[Problem]:
    for i, svc in enumerate(inv.services):
        if svc.health.type == "tcp":
            for key in ("path", "expect_status", "host"):
                if key in svc.health.model_fields_set:
                    yield Problem(
                        f"services[{i}].health.{key}",
                        "ignored: the health check is a TCP connect",
                        hint="set health.type: http (or https) to use it",
                    )
        if svc.proxy_protocol and API_PORT in (svc.port, svc.listen):
            yield Problem(
                f"services[{i}].proxy_protocol",
                "kube-apiserver does not accept PROXY protocol headers: on "
                f"port {API_PORT} its clients and health checks would fail",
                svc.proxy_protocol,
                "remove it unless this backend is not the Kubernetes API",
            )


def _host_names(inv: Inventory) -> Iterator[Problem]:
    """Host names are resolved by the proxies when haproxy starts, not here; render.py
    gives them `init-addr last,libc,none` so one that does not resolve there starts
    disabled instead of stopping haproxy."""
    named = []
    for backend, servers in inv.backends.items():
        for k, server in enumerate(servers):
            if not is_ipv4(server.address):
                named.append((f"backends.{backend}[{k}].address", server.address))
    if named:
        more = f" (and {len(named) - 1} more servers)" if len(named) > 1 else ""
        path, address = named[0]
        yield Problem(
            path,
            f"a host name{more}: each proxy resolves it when haproxy starts; "
            "one that does not resolve there starts disabled (init-addr "
            "last,libc,none)",
            address,
        )
