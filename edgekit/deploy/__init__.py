"""edgekit deploy: `plan()` preflights every host and says what would change; `apply()`
rolls exactly that plan out, host by host, VIP holders last, and verifies the result.

    the_plan = plan(loaded, hosts)      # the user sees this (diffs, --dry-run, --json)
    report = apply(the_plan, hosts)     # applies that data; nothing is planned again
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from enum import StrEnum

from edgekit import firewall
from edgekit.deploy import confirm as fw_load
from edgekit.deploy import lock as deploy_lock
from edgekit.deploy import placement
from edgekit.deploy.apply import (
    ApplyError,
    Timing,
    apply_host,
    converge_host,
    service_actions,
    sweep,
)
from edgekit.deploy.drain import drained_for_restart
from edgekit.deploy.plan import HostPlan, plan_host
from edgekit.errors import EdgekitError, InputError, OperationError
from edgekit.facts import (
    HANDOVER_DIR,
    PLACEMENT_DIR,
    ROLLBACK_PID,
    ROLLBACK_UNIT,
    HostFacts,
    TableState,
)
from edgekit.hosts import gather, in_parallel
from edgekit.inventory import Loaded, maxconn_refusal
from edgekit.net import tcp_answers
from edgekit.progress import Progress, silent, wait_until
from edgekit.remote import HostError, Transport
from edgekit.render import KEEPALIVED_CONF, RenderedFile, firewall_hash, render_all


class FirewallAction(StrEnum):
    """What happens to a host's edgekit firewall beyond its files."""

    LOAD = "load"  # (re)load commit-confirmed: its files change, or the table differs
    REMOVE = "remove"  # firewall.enabled is false: take table, unit and files away


@dataclass
class DeployPlan:
    """Everything apply() needs, computed once: the user approves exactly this."""

    loaded: Loaded
    files: dict[str, list[RenderedFile]]  # host -> its rendered files
    facts: dict[str, HostFacts]  # host -> what preflight read
    hosts: dict[str, HostPlan]
    firewall: dict[str, FirewallAction] = field(default_factory=dict)
    # VIPs not on their healthy preferred peer: apply() moves them, also when no host
    # has anything else to do.
    moves: list[placement.Move] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return any(self.touches(n) for n in self.hosts) or bool(self.moves)

    def stale(self, name: str) -> list[str]:
        """Units on `name` that run older configs than its installed ones (a deploy
        stopped before it reloaded them): the apply reloads or restarts them."""
        return list(self.stale_actions(name))

    def stale_actions(self, name: str) -> dict[str, str]:
        return self.facts[name].stale_actions() if name in self.facts else {}

    def touches(self, name: str) -> bool:
        return (
            self.hosts[name].changed
            or self.firewall.get(name) is FirewallAction.REMOVE
            or bool(self.stale(name))
            or self.unfinished(name)
        )

    def unfinished(self, name: str) -> bool:
        """A stopped deploy left a pending mark or staging/backup files on `name`."""
        facts = self.facts.get(name)
        return facts is not None and bool(facts.pending_deploy or facts.leftovers)

    def order(self) -> list[str]:
        """Hosts to change: those holding no VIP first, then VIP holders (a failure there
        moves the VIP), then hosts joining (keepalived not running): a joiner started
        before the others list it would hear no adverts and take the VIPs too. Inventory
        order otherwise."""
        vips = [v.address for v in self.loaded.inventory.vips]
        names = [
            p.name
            for p in self.loaded.inventory.peers
            if p.name in self.hosts and self.touches(p.name)
        ]

        def rank(name: str) -> tuple[bool, bool]:
            facts = self.facts[name]
            joining = facts.units.get("keepalived", ("",))[0] != "active"
            return joining, any(facts.holds(v) for v in vips)

        return sorted(names, key=rank)

    def holders(self) -> dict[str, list[str]]:
        return vip_holders(self.loaded, self.facts)


@dataclass
class DeployReport:
    plan: DeployPlan
    applied: list[str] = field(default_factory=list)
    failed: str | None = None
    error: str | None = None
    holders: dict[str, list[str]] = field(default_factory=dict)
    service_checks: dict[str, bool] = field(default_factory=dict)
    skipped_checks: dict[str, str] = field(default_factory=dict)  # service check -> why
    moved: list[placement.Move] = field(default_factory=list)  # VIPs put on preferred peers

    @property
    def plans(self) -> dict[str, HostPlan]:
        return self.plan.hosts

    @property
    def pending(self) -> bool:
        return self.plan.pending

    def to_dict(self) -> dict[str, object]:
        return {
            "hosts": {
                name: {
                    "changed": p.changed,
                    "files": p.paths(),
                    "install": p.missing_packages,
                    "enable": p.enable_units,
                    "start": p.start_units,
                    "firewall": str(self.plan.firewall.get(name, "")),
                    "reload_stale": self.plan.stale(name),
                    "applied": name in self.applied,
                }
                for name, p in self.plan.hosts.items()
            },
            "failed_host": self.failed,
            "error": self.error,
            "vip_holders": self.holders,
            "services": self.service_checks,
            "services_not_checked": self.skipped_checks,
            "vip_moves": [m.to_dict() for m in self.plan.moves],  # planned
            "vip_moved": [m.to_dict() for m in self.moved],
            "ok": self.error is None,
        }


def preflight(loaded: Loaded, host: Transport, facts: HostFacts) -> None:
    """Every reason this host cannot take the deploy, as one HostError."""
    inv = loaded.inventory
    if facts.os_id != "debian":
        raise HostError(host.name, f"not a Debian host (os-release ID={facts.os_id or '?'})")
    peer = next(p for p in inv.peers if p.name == host.name)
    for vip in inv.vips:
        iface = peer.interface or vip.interface or inv.vrrp.interface
        addrs = facts.interface_addresses(iface)
        if iface not in facts.addresses:
            raise HostError(
                host.name,
                f"VRRP interface {iface} does not exist",
                hint="set vrrp.interface or peers[].interface",
            )
        if not any(a.ip in vip.address.network for a in addrs):
            raise HostError(
                host.name,
                f"interface {iface} has no address in "
                f"{vip.address.network} (the subnet of VIP {vip.address})",
            )
    refusal = maxconn_refusal(inv, facts.nr_open) if facts.nr_open is not None else None
    if refusal:
        raise HostError(host.name, refusal)
    missing = [p for p, ok in facts.packages.items() if not ok]
    if missing:
        r = host.run("apt-cache show " + " ".join(missing) + " >/dev/null", sudo=True)
        if not r.ok:
            raise HostError(
                host.name,
                f"packages {', '.join(missing)} are missing and not "
                "installable (apt-cache show failed)",
                hint="run apt-get update",
            )


def _check_sudo(host: Transport) -> None:
    if host.needs_sudo and not host.run("true", sudo=True, timeout=30).ok:
        raise HostError(
            host.name,
            f"user {host.user!r} cannot run sudo without a password",
            hint="grant NOPASSWD sudo or use ssh.user: root",
        )


def vip_holders(loaded: Loaded, facts: Mapping[str, HostFacts]) -> dict[str, list[str]]:
    return {
        str(v.address.ip): [n for n, f in facts.items() if f.holds(v.address)]
        for v in loaded.inventory.vips
    }


def _firewall_actions(
    loaded: Loaded, plans: dict[str, HostPlan], facts: dict[str, HostFacts], progress: Progress
) -> dict[str, FirewallAction]:
    inv = loaded.inventory
    out: dict[str, FirewallAction] = {}
    expected = firewall_hash(inv)
    for name, host_plan in plans.items():
        fw = facts[name].firewall
        if not inv.firewall.enabled:
            if fw.present:
                out[name] = FirewallAction.REMOVE
                progress(
                    f"{name}: firewall.enabled is false: the edgekit firewall (table "
                    f"inet {firewall.TABLE}, {firewall.UNIT}) will be removed"
                )
            continue
        files_change = {firewall.RULESET, firewall.UNIT_PATH} & set(host_plan.paths())
        if files_change:
            out[name] = FirewallAction.LOAD
        elif fw_load.wants_load(fw, expected):
            out[name] = FirewallAction.LOAD
            host_plan.start_units.append(firewall.UNIT)  # shows; loaded commit-confirmed
    return out


def select(hosts: Mapping[str, Transport], limit: list[str] | None) -> dict[str, Transport]:
    """The hosts --limit names (all without it); InputError for a name that is no peer."""
    if not limit:
        return dict(hosts)
    unknown = sorted(set(limit) - set(hosts))
    if unknown:
        raise InputError(f"--limit: no such peer: {', '.join(unknown)}")
    return {n: h for n, h in hosts.items() if n in limit}


def plan(
    loaded: Loaded, hosts: Mapping[str, Transport], *, progress: Progress = silent
) -> DeployPlan:
    """Preflight every host (nothing changes anywhere if one fails) and plan each."""
    inv = loaded.inventory
    files = render_all(loaded)
    paths = [f.path for f in next(iter(files.values()))]
    progress(f"preflight: {', '.join(hosts)}")
    in_parallel(hosts, lambda h: h.connect())
    in_parallel(hosts, _check_sudo)
    if inv.firewall.enabled:
        # Before any host changes: the firewall must keep admitting this machine.
        clients = in_parallel(hosts, lambda h: fw_load.admin_source(inv, h))
        if fw_load.test_lockout_requested():
            progress(
                f"TEST ONLY ({fw_load.LOCKOUT_ENV}=1): the firewall drops this "
                "machine's own address, to exercise the host's rollback"
            )
            files = {
                n: fw_load.with_test_lockout(files[n], clients[n]) if n in clients else fs
                for n, fs in files.items()
            }
    facts = in_parallel(hosts, lambda h: gather(h, paths))
    for name, host in hosts.items():
        if inv.firewall.enabled and facts[name].firewall.table is TableState.NO_NFT:
            facts[name].packages["nftables"] = False  # installed like haproxy
        preflight(loaded, host, facts[name])
    plans = {n: plan_host(n, files[n], facts[n]) for n in hosts}
    return DeployPlan(
        loaded,
        {n: files[n] for n in hosts},
        facts,
        plans,
        _firewall_actions(loaded, plans, facts, progress),
        placement.planned_moves(loaded, facts),
    )


def apply(
    the_plan: DeployPlan,
    hosts: Mapping[str, Transport],
    *,
    progress: Progress = silent,
    timing: Timing | None = None,
    answers: Callable[[str, int], bool] | None = None,
) -> DeployReport:
    """Apply `the_plan` host by host in plan order; stop at the first host that fails
    (that host is rolled back). `answers(address, port)` checks a service through a VIP
    (a TCP connect by default)."""
    timing = timing or Timing()
    report = DeployReport(the_plan, holders=the_plan.holders())
    if not the_plan.pending:
        return report
    deploy_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"
    order = the_plan.order()
    try:
        with deploy_lock.host_locks({n: hosts[n] for n in order}, deploy_lock.owner()):
            for name in order:
                host_plan = the_plan.hosts[name]
                action = the_plan.firewall.get(name)
                stale = the_plan.stale_actions(name)
                progress(f"{name}: applying ({len(host_plan.changes)} file(s) differ)")
                _clean_up_stopped(hosts[name], the_plan.facts[name], progress)
                restarts = _restarts(host_plan, the_plan.facts[name], stale)
                with (
                    drained_for_restart(the_plan.loaded, hosts, name, progress)
                    if restarts
                    else nullcontext()
                ):
                    _apply_one(the_plan, hosts, name, progress, timing, deploy_id)
                if action is FirewallAction.REMOVE:
                    _remove_firewall(hosts[name], progress)
                report.applied.append(name)
                progress(f"{name}: healthy")
    except (ApplyError, HostError, OperationError) as exc:  # OperationError: a drain
        report.failed = getattr(exc, "host", None) or name
        report.error = str(exc)
        return report
    _verify(
        the_plan.loaded,
        hosts,
        report,
        progress,
        timing.verify_s,
        answers or (lambda address, port: tcp_answers(address, port, timeout=3.0)),
    )
    if report.error is None:
        try:
            report.error = placement.place_vips(
                the_plan.loaded, hosts, progress, timing.verify_s, moved=report.moved
            )
        except EdgekitError as exc:  # a busy lock, a failed restore: in the report too
            report.error = str(exc)
        if report.moved:
            report.holders = vip_holders(
                the_plan.loaded, in_parallel(hosts, lambda h: gather(h, []))
            )
    return report


def _clean_up_stopped(host: Transport, facts: HostFacts, progress: Progress) -> None:
    """Holding the host's lock: finish what a stopped deploy left running. Its firewall
    rollback timer would otherwise fire under this deploy (restoring a ruleset older
    than the files), and a VIP move's preempt or handover would outlive it."""
    left = set(facts.leftovers)
    if {f"{ROLLBACK_UNIT}.timer", ROLLBACK_PID} & left:
        # This deploy reached the host over a new connection: the firewall in place
        # admits it, which is what the stopped deploy would have confirmed.
        said = host.check(
            fw_load.cancel_script(), "cancelling a stopped deploy's rollback", sudo=True
        )
        progress(f"{host.name}: a stopped deploy's firewall rollback: {said.stdout.strip()}")
    if {PLACEMENT_DIR, HANDOVER_DIR} & left:
        host.check(placement.restore_script(), "undoing a stopped VIP move", sudo=True)
        progress(f"{host.name}: undid a stopped deploy's VIP move (preempt, handover)")
    sweep(host, progress)


def _remove_firewall(host: Transport, progress: Progress) -> None:
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


def _restarts(host_plan: HostPlan, facts: HostFacts, stale: dict[str, str]) -> bool:
    """Whether applying this host restarts haproxy or keepalived (not a reload) while
    its running keepalived can be drained (its config is edgekit's, with the drain
    mark: a first deploy over another keepalived.conf cannot move VIPs this way)."""
    live = facts.files.get(KEEPALIVED_CONF)
    if live is None or live.content is None or "track_file edgekit_drained" not in live.content:
        return False
    actions = service_actions(host_plan, facts.units) if host_plan.changed else []
    return any(a.startswith("systemctl restart") for a in actions) or "restart" in stale.values()


def _apply_one(
    the_plan: DeployPlan,
    hosts: Mapping[str, Transport],
    name: str,
    progress: Progress,
    timing: Timing,
    deploy_id: str,
) -> None:
    """Install one host's changed files and reload, or converge what a stopped deploy
    left there."""
    inv = the_plan.loaded.inventory
    instances = [f"VI_{v.vrid}" for v in inv.vips]
    host_plan = the_plan.hosts[name]
    stale = the_plan.stale_actions(name)
    if host_plan.changed:
        apply_host(
            hosts[name],
            name,
            host_plan,
            the_plan.files[name],
            the_plan.facts[name],
            instances,
            inv.stats.port,
            progress,
            firewall_load=the_plan.firewall.get(name) is FirewallAction.LOAD,
            timing=timing,
            deploy_id=deploy_id,
            stale=stale,
        )
    elif stale or the_plan.unfinished(name):
        progress(
            f"{name}: converging after a stopped deploy"
            + "".join(f" ({verb} {unit})" for unit, verb in stale.items())
        )
        converge_host(
            hosts[name],
            stale,
            the_plan.facts[name],
            instances,
            inv.stats.port,
            progress,
            timing=timing,
            deploy_id=deploy_id,
        )


def _verify(
    loaded: Loaded,
    hosts: Mapping[str, Transport],
    report: DeployReport,
    progress: Progress,
    timeout: float,
    answers: Callable[[str, int], bool],
) -> None:
    """Exactly one holder per VIP, and each service answers through the VIP."""

    def one_holder_each() -> bool:
        report.holders = vip_holders(loaded, in_parallel(hosts, lambda h: gather(h, [])))
        return all(len(h) == 1 for h in report.holders.values())

    if not wait_until(one_holder_each, timeout, interval=0.5):
        address, h = next((v, h) for v, h in report.holders.items() if len(h) != 1)
        report.error = (
            f"VIP {address} has {len(h)} holders ({', '.join(h) or 'none'}) after the deploy"
        )
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
            ok = answers(str(vip.address.ip), svc.listen)
            report.service_checks[key] = ok
            if not ok:
                report.error = (
                    f"service {svc.name} does not answer on {vip.address.ip}:{svc.listen}"
                )
    progress(
        "verified: one holder per VIP"
        + ("" if report.error else ", every service answers through its VIP")
    )


__all__ = [
    "DeployPlan",
    "DeployReport",
    "FirewallAction",
    "OperationError",
    "apply",
    "plan",
    "select",
]
