"""edgekit deploy: preflight every host, plan, then apply host by host, VIP holders last."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edgekit.deploy.apply import ApplyError, apply_host
from edgekit.deploy.plan import HostPlan, plan_host
from edgekit.errors import OperationError
from edgekit.facts import HostFacts
from edgekit.hosts import close_all, gather, in_parallel, peer_hosts
from edgekit.inventory import Loaded
from edgekit.remote import Host, HostError
from edgekit.render import render_all

Progress = Callable[[str], None]


@dataclass
class DeployReport:
    plans: dict[str, HostPlan]
    applied: list[str] = field(default_factory=list)
    failed: str | None = None
    error: str | None = None
    holders: dict[str, list[str]] = field(default_factory=dict)
    service_checks: dict[str, bool] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        return any(p.changed for p in self.plans.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "hosts": {
                name: {"changed": plan.changed, "files": plan.paths(),
                       "install": plan.missing_packages, "enable": plan.enable_units,
                       "start": plan.start_units, "applied": name in self.applied}
                for name, plan in self.plans.items()},
            "failed_host": self.failed, "error": self.error,
            "vip_holders": self.holders, "services": self.service_checks,
            "ok": self.error is None,
        }


def preflight(loaded: Loaded, host: Host, facts: HostFacts) -> None:
    """Every reason this host cannot take the deploy, as one HostError."""
    inv = loaded.inventory
    if facts.os_id != "debian":
        raise HostError(host.name, f"not a Debian host (os-release ID={facts.os_id or '?'})")
    peer = next(p for p in inv.peers if p.name == host.name)
    for vip in inv.vips:
        iface = peer.interface or vip.interface or inv.vrrp.interface
        addrs = facts.interface_addresses(iface)
        if iface not in facts.addresses:
            raise HostError(host.name, f"VRRP interface {iface} does not exist",
                            hint="set vrrp.interface or peers[].interface")
        if not any(a.ip in vip.address.network for a in addrs):
            raise HostError(host.name, f"interface {iface} has no address in "
                            f"{vip.address.network} (the subnet of VIP {vip.address})")
    missing = [p for p, ok in facts.packages.items() if not ok]
    if missing:
        r = host.run("apt-cache show " + " ".join(missing) + " >/dev/null", sudo=True)
        if not r.ok:
            raise HostError(host.name, f"packages {', '.join(missing)} are missing and not "
                            "installable (apt-cache show failed)", hint="run apt-get update")


def _check_sudo(host: Host) -> None:
    if host.sudo_prefix and not host.run("true", sudo=True, timeout=30).ok:
        raise HostError(host.name, f"user {host.target.user!r} cannot run sudo without a "
                        "password", hint="grant NOPASSWD sudo or use ssh.user: root")


def _order(plans: dict[str, HostPlan], facts: dict[str, HostFacts],
           loaded: Loaded) -> list[str]:
    """Hosts that hold no VIP first; VIP holders last (a failure there moves the VIP)."""
    vips = [v.address for v in loaded.inventory.vips]
    names = [p.name for p in loaded.inventory.peers if plans[p.name].changed]
    return sorted(names, key=lambda n: any(facts[n].holds(v) for v in vips))


def vip_holders(loaded: Loaded, facts: dict[str, HostFacts]) -> dict[str, list[str]]:
    return {str(v.address.ip): [n for n, f in facts.items() if f.holds(v.address)]
            for v in loaded.inventory.vips}


def service_reachable(address: str, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def deploy(loaded: Loaded, *, dry_run: bool = False, limit: list[str] | None = None,
           accept_new: bool = False, progress: Progress = lambda _m: None) -> DeployReport:
    inv = loaded.inventory
    hosts = peer_hosts(loaded, accept_new=accept_new)
    if limit:
        unknown = sorted(set(limit) - set(hosts))
        if unknown:
            from edgekit.errors import InputError
            raise InputError(f"--limit: no such peer: {', '.join(unknown)}")
        hosts = {n: h for n, h in hosts.items() if n in limit}
    files = render_all(loaded)
    paths = [f.path for f in next(iter(files.values()))]
    try:
        progress(f"preflight: {', '.join(hosts)}")
        in_parallel(hosts, lambda h: h.connect())
        in_parallel(hosts, _check_sudo)
        facts = in_parallel(hosts, lambda h: gather(h, paths))
        for name, host in hosts.items():
            preflight(loaded, host, facts[name])
        plans = {n: plan_host(n, files[n], facts[n]) for n in hosts}
        report = DeployReport(plans)
        if dry_run or not report.pending:
            report.holders = vip_holders(loaded, facts)
            return report
        instances = [f"VI_{v.vrid}" for v in inv.vips]
        for name in _order(plans, facts, loaded):
            progress(f"{name}: applying ({len(plans[name].changes)} file(s) differ)")
            try:
                apply_host(hosts[name], name, plans[name], files[name], facts[name].units,
                           instances, inv.stats.port, progress)
            except (ApplyError, HostError) as exc:
                report.failed, report.error = name, str(exc)
                return report
            report.applied.append(name)
            progress(f"{name}: healthy")
        _verify(loaded, hosts, paths, report, progress)
        return report
    finally:
        close_all(hosts)


def _verify(loaded: Loaded, hosts: dict[str, Host], paths: list[str], report: DeployReport,
            progress: Progress, timeout: float = 15.0) -> None:
    """Exactly one holder per VIP, and each service answers through the VIP."""
    deadline = time.monotonic() + timeout
    while True:
        facts = in_parallel(hosts, lambda h: gather(h, paths[:0]))
        report.holders = vip_holders(loaded, facts)
        if all(len(h) == 1 for h in report.holders.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    bad = {vip: h for vip, h in report.holders.items() if len(h) != 1}
    if bad:
        address, h = next(iter(bad.items()))
        report.error = (f"VIP {address} has {len(h)} holders ({', '.join(h) or 'none'}) "
                        "after the deploy")
        return
    for svc in loaded.inventory.services:
        for vip in loaded.inventory.vips:
            ok = service_reachable(str(vip.address.ip), svc.listen)
            report.service_checks[f"{svc.name}@{vip.address.ip}:{svc.listen}"] = ok
            if not ok:
                report.error = (f"service {svc.name} does not answer on "
                                f"{vip.address.ip}:{svc.listen}")
    progress("verified: one holder per VIP" + ("" if report.error else
                                               ", every service answers through its VIP"))


__all__ = ["DeployReport", "deploy", "OperationError"]
