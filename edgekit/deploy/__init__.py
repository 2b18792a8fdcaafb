"""edgekit deploy: preflight every host, plan, then apply host by host, VIP holders last."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edgekit import firewall
from edgekit.deploy import confirm as fw_load
from edgekit.deploy.apply import ApplyError, apply_host
from edgekit.deploy.plan import HostPlan, plan_host
from edgekit.errors import OperationError
from edgekit.facts import HostFacts
from edgekit.hosts import close_all, gather, in_parallel, peer_hosts
from edgekit.inventory import Loaded
from edgekit.net import tcp_answers
from edgekit.remote import Host, HostError
from edgekit.render import inventory_hash, render_all

Progress = Callable[[str], None]


@dataclass
class DeployReport:
    plans: dict[str, HostPlan]
    applied: list[str] = field(default_factory=list)
    failed: str | None = None
    error: str | None = None
    holders: dict[str, list[str]] = field(default_factory=dict)
    service_checks: dict[str, bool] = field(default_factory=dict)
    # Per host, what happens to the edgekit firewall beyond its files: "load" (the loaded
    # table is not what the installed ruleset loads), "remove" (firewall.enabled: false).
    firewall: dict[str, str] = field(default_factory=dict)
    skipped_checks: dict[str, str] = field(default_factory=dict)  # service check -> why

    @property
    def pending(self) -> bool:
        return any(p.changed for p in self.plans.values()) or "remove" in self.firewall.values()

    def to_dict(self) -> dict[str, object]:
        return {
            "hosts": {
                name: {"changed": plan.changed, "files": plan.paths(),
                       "install": plan.missing_packages, "enable": plan.enable_units,
                       "start": plan.start_units, "firewall": self.firewall.get(name, ""),
                       "applied": name in self.applied}
                for name, plan in self.plans.items()},
            "failed_host": self.failed, "error": self.error,
            "vip_holders": self.holders, "services": self.service_checks,
            "services_not_checked": self.skipped_checks,
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


def _order(report: DeployReport, facts: dict[str, HostFacts], loaded: Loaded) -> list[str]:
    """Hosts that hold no VIP first; VIP holders last (a failure there moves the VIP)."""
    vips = [v.address for v in loaded.inventory.vips]
    names = [p.name for p in loaded.inventory.peers if p.name in report.plans and (
        report.plans[p.name].changed or report.firewall.get(p.name) == "remove")]
    return sorted(names, key=lambda n: any(facts[n].holds(v) for v in vips))


def vip_holders(loaded: Loaded, facts: dict[str, HostFacts]) -> dict[str, list[str]]:
    return {str(v.address.ip): [n for n, f in facts.items() if f.holds(v.address)]
            for v in loaded.inventory.vips}




def _firewall_plans(loaded: Loaded, plans: dict[str, HostPlan],
                    facts: dict[str, HostFacts], progress: Progress) -> dict[str, str]:
    """What the firewall needs on each host beyond its files (see DeployReport.firewall)."""
    inv = loaded.inventory
    out: dict[str, str] = {}
    expected = inventory_hash(inv, firewall.SECTIONS)
    for name, plan in plans.items():
        fw = facts[name].firewall
        if not inv.firewall.enabled:
            if fw.present:
                out[name] = "remove"
                progress(f"{name}: firewall.enabled is false: the edgekit firewall (table "
                         f"inet {firewall.TABLE}, {firewall.UNIT}) will be removed")
            continue
        files_change = {firewall.RULESET, firewall.UNIT_PATH} & set(plan.paths())
        if not files_change and fw_load.wants_load(fw, expected):
            out[name] = "load"
            plan.start_units.append(firewall.UNIT)  # shows in the plan; loaded commit-confirmed
        elif files_change:
            out[name] = "load"
    return out


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
        if inv.firewall.enabled:
            # Before any host changes: the firewall must keep admitting this machine.
            clients = in_parallel(hosts, lambda h: fw_load.admin_source(inv, h))
            if fw_load.test_lockout_requested():
                progress(f"TEST ONLY ({fw_load.LOCKOUT_ENV}=1): the firewall drops this "
                         "machine's own address, to exercise the host's rollback")
                files = {n: fw_load.with_test_lockout(files[n], clients[n]) if n in clients
                         else fs for n, fs in files.items()}
        facts = in_parallel(hosts, lambda h: gather(h, paths))
        for name, host in hosts.items():
            if inv.firewall.enabled and facts[name].firewall.table == "no-nft":
                facts[name].packages["nftables"] = False  # installed like haproxy
            preflight(loaded, host, facts[name])
        plans = {n: plan_host(n, files[n], facts[n]) for n in hosts}
        report = DeployReport(plans)
        report.firewall = _firewall_plans(loaded, plans, facts, progress)
        if dry_run or not report.pending:
            report.holders = vip_holders(loaded, facts)
            return report
        instances = [f"VI_{v.vrid}" for v in inv.vips]
        for name in _order(report, facts, loaded):
            progress(f"{name}: applying ({len(plans[name].changes)} file(s) differ)")
            try:
                if plans[name].changed:
                    apply_host(hosts[name], name, plans[name], files[name],
                               facts[name].units, instances, inv.stats.port, progress,
                               firewall_load=report.firewall.get(name) == "load")
                if report.firewall.get(name) == "remove":
                    _remove_firewall(hosts[name], progress)
            except (ApplyError, HostError) as exc:
                report.failed, report.error = name, str(exc)
                return report
            report.applied.append(name)
            progress(f"{name}: healthy")
        _verify(loaded, hosts, paths, report, progress)
        return report
    finally:
        close_all(hosts)


def _remove_firewall(host: Host, progress: Progress) -> None:
    progress(f"{host.name}: removing the edgekit firewall (firewall.enabled is false)")
    result = host.run(fw_load.removal_command(), sudo=True, timeout=60)
    if not result.ok:
        raise HostError(host.name, f"removing the firewall failed: {result.last_line()}")


def local_address_towards(address: str) -> str | None:
    """The source address this machine uses to reach `address` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((address, 9))
            return str(s.getsockname()[0])
    except OSError:
        return None


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
    inv = loaded.inventory
    for svc in inv.services:
        for vip in inv.vips:
            key = f"{svc.name}@{vip.address.ip}:{svc.listen}"
            own = local_address_towards(str(vip.address.ip))
            if inv.firewall.enabled and own and not firewall.allows_client(svc, own):
                # The firewall refuses this machine on purpose: not a failure.
                report.skipped_checks[key] = f"{own} is outside the service's client_cidrs"
                continue
            ok = tcp_answers(str(vip.address.ip), svc.listen, timeout=3.0)
            report.service_checks[key] = ok
            if not ok:
                report.error = (f"service {svc.name} does not answer on "
                                f"{vip.address.ip}:{svc.listen}")
    progress("verified: one holder per VIP" + ("" if report.error else
                                               ", every service answers through its VIP"))


__all__ = ["DeployReport", "deploy", "OperationError"]
