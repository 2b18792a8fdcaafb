"""Run failover scenarios against the holder of each VIP under live traffic and measure
them: every VIP and every service is probed, and a fault on one VIP's holder must not
disturb the VIPs held elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

from edgekit.errors import EdgekitError, OperationError
from edgekit.failover import measure
from edgekit.failover.probes import OwnershipWatcher, Prober, Streams, Target, tally
from edgekit.failover.scenarios import Established, Fault, Scenario, Skipped
from edgekit.inventory import Loaded
from edgekit.lab.base import FaultDriver
from edgekit.progress import Progress, wait_until
from edgekit.remote import Transport
from edgekit.status import ClusterStatus, cluster_status


class CannotRun(Exception):
    """This run of a scenario cannot start (the cluster is unhealthy, a VIP has no
    steady holder): it is reported as skipped, with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class VipResult:
    """What one VIP's clients saw during one run."""

    vip: str
    holder: str = ""  # who held it when the fault began
    faulted: bool = False  # that was the faulted peer
    new_holder: str = ""
    vip_move_s: float | None = None  # only for a faulted VIP
    outage_s: float = 0.0
    failed_probes: int = 0
    total_probes: int = 0
    failed_since_fault: int = 0
    moves_since_fault: int = 0  # holder changes after the fault
    split_brain_s: float = 0.0
    lasting_split_brain: bool = False

    @property
    def disturbed(self) -> bool:
        """A VIP held elsewhere that failed a probe or changed holder after the fault."""
        return not self.faulted and bool(self.failed_since_fault or self.moves_since_fault)


@dataclass
class ScenarioResult:
    """One run of a scenario: its fault on one peer, which held `vips` at that moment."""

    name: str
    holder: str = ""  # the faulted peer
    vips: list[str] = field(default_factory=list)  # the VIPs it held when the fault began
    new_holder: str = ""
    vip_move_s: float | None = None  # the slowest of `vips` to move
    outage_s: float = 0.0  # the longest outage of any VIP
    failed_probes: int = 0
    total_probes: int = 0
    split_brain_s: float = 0.0
    lasting_split_brain: bool = False
    others_undisturbed: bool = True  # the VIPs held elsewhere saw no failure and no move
    recovered: bool = False
    passed: bool = False
    budget_s: float = 0.0
    description: str = ""  # from the scenario registry
    error: str = ""
    per_vip: list[VipResult] = field(default_factory=list)
    # Long-lived connections through the faulted VIPs (scenarios that open them):
    # "within" the handover window and "beyond" it -> {"ok": n, "fin": n, "rst": n, ...}.
    established: dict[str, dict[str, int]] = field(default_factory=dict)
    # For the report's timeline; left out of the JSON summary.
    fault_t: float = 0.0
    restore_t: float = 0.0
    probes: list[measure.Probe] = field(default_factory=list, repr=False)
    samples: list[measure.Sample] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, object]:
        d = asdict(self)
        for key in ("probes", "samples", "fault_t", "restore_t"):
            d.pop(key)
        d["per_vip"] = [{**asdict(v), "disturbed": v.disturbed} for v in self.per_vip]
        return d

    def disturbed(self) -> list[VipResult]:
        return [v for v in self.per_vip if v.disturbed]


@dataclass
class RunReport:
    """Every run of every scenario, and what was skipped."""

    results: list[ScenarioResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and not self.skipped and all(r.passed for r in self.results)


@dataclass
class Options:
    hold_s: float = 3.0  # how long a fault lasts before it is undone
    settle_s: float = 1.0
    recover_timeout_s: float = 60.0
    allow_drift: bool = False  # the benchmark runs baseline configs that differ on purpose
    move_wait_s: float = 15.0  # how long a fault may take to move the VIPs before restore
    # Every VIP must have stayed on one holder this long before a fault: after a restore
    # a preempting peer may still be taking it back, which would pass for a failover.
    stable_s: float = 3.0


def probe_targets(loaded: Loaded) -> list[Target]:
    """Every service on every VIP."""
    return [
        Target(
            s.name,
            str(vip.address.ip),
            s.listen,
            http=(s.probe or ("http" if s.listen in (80, 8080) else "tcp")) == "http",
        )
        for vip in loaded.inventory.vips
        for s in loaded.inventory.services
    ]


def next_target(pending: list[str], placement: Mapping[str, str]) -> tuple[str, list[str]]:
    """The peer to fault next: the holder of the first VIP not yet covered, and every
    VIP it holds (a peer holding two VIPs is faulted once for both)."""
    holder = placement[pending[0]]
    return holder, [vip for vip, peer in placement.items() if peer == holder]


def _ready(st: ClusterStatus, allow_drift: bool) -> list[str]:
    return [p for p in st.problems if not (allow_drift and p.startswith("drift on "))]


def wait_healthy(
    loaded: Loaded, hosts: Mapping[str, Transport], timeout: float, allow_drift: bool
) -> bool:
    def healthy() -> bool:
        try:
            return not _ready(cluster_status(loaded, hosts), allow_drift)
        except EdgekitError:
            return False

    return bool(wait_until(healthy, timeout, interval=1.0))


def run_scenario(
    loaded: Loaded,
    hosts: Mapping[str, Transport],
    scenario: Scenario,
    driver: FaultDriver,
    opts: Options,
    progress: Progress,
    pending: list[str] | None = None,
) -> ScenarioResult:
    """One run: fault the holder of pending[0] (default: the first VIP), watching and
    probing every VIP. CannotRun when the cluster is not ready for it."""
    inv = loaded.inventory
    name = scenario.name
    peers = [p.name for p in inv.peers]
    vips = [str(v.address.ip) for v in inv.vips]
    result = ScenarioResult(
        name,
        budget_s=scenario.budget_s,
        description=scenario.description,
        per_vip=[VipResult(v) for v in vips],
    )
    try:
        problems = _ready(cluster_status(loaded, hosts), opts.allow_drift)
        if problems:
            raise CannotRun(f"the cluster is not healthy: {'; '.join(problems)}")
        watcher = OwnershipWatcher(hosts, vips).start()
        prober = Prober(probe_targets(loaded))
        try:
            # The watcher's SSH handshakes first: on a small machine they would compete
            # with the first probes (0.3 s timeout) for the CPU. Probing still starts
            # --stable seconds or more before the fault.
            _wait_for_samples(watcher, peers)
            prober.start()
            placement = _stable_placement(watcher, peers, opts.stable_s)
            result.holder, held = next_target(pending or vips, placement)
            vip = inv.vips[vips.index(held[0])]
            peer = next(p for p in inv.peers if p.name == result.holder)
            iface = peer.interface or vip.interface or inv.vrrp.interface
            holder_host = hosts[result.holder]
            fault = Fault(holder_host, iface, opts.hold_s, driver, hosts, loaded)
            progress(f"{name}: {scenario.description} ({result.holder}: {', '.join(held)})")
            kept = _open_streams(scenario.established, held)
            result.fault_t = time.time()
            try:
                try:
                    scenario.inject(fault)
                except EdgekitError as exc:  # a drain that could not move the VIP, say
                    result.error = f"inject failed: {exc}"
                _wait_move(watcher, result.holder, held, peers, opts.hold_s, opts.move_wait_s)
                if scenario.self_restoring:
                    # The fault undoes itself; give it that time.
                    time.sleep(max(0.0, result.fault_t + opts.hold_s + 0.5 - time.time()))
            finally:
                result.restore_t = time.time()
                holder_host.close()  # its connection may have died with the fault
                try:
                    scenario.restore(fault)
                except EdgekitError as exc:
                    result.error = "; ".join(
                        e for e in (result.error, f"restore failed: {exc}") if e
                    )
            progress(f"{name}: restored; waiting for the cluster to be healthy")
            result.recovered = wait_healthy(loaded, hosts, opts.recover_timeout_s, opts.allow_drift)
            if scenario.established is not None:
                result.established = _tally_streams(scenario.established, kept)
            time.sleep(opts.settle_s)
        finally:
            result.probes = prober.stop()
            result.samples = watcher.stop()
        score(result, peers)
        return result
    finally:
        for host in hosts.values():
            host.close()


def _open_streams(established: Established | None, vips: list[str]) -> list[Streams]:
    if established is None:
        return []
    e = established
    uploads = [e.within_s] * e.count + [e.beyond_s] * e.count
    downloads = [e.within_s] * e.downloads + [e.beyond_s] * e.downloads
    return [Streams(v, uploads, downloads=downloads).start() for v in vips]


def _tally_streams(established: Established, kept: list[Streams]) -> dict[str, dict[str, int]]:
    outcomes = [o for s in kept for o in s.stop()]
    return {
        "within": tally([o for o in outcomes if o[0] == established.within_s]),
        "beyond": tally([o for o in outcomes if o[0] == established.beyond_s]),
    }


def _wait_for_samples(watcher: OwnershipWatcher, peers: list[str], timeout: float = 10.0) -> None:
    def every_peer_seen() -> bool:
        return {s.peer for s in watcher.samples[-50 * len(watcher.vips) :]} >= set(peers)

    if wait_until(every_peer_seen, timeout, interval=0.1):
        return
    raise OperationError(
        f"no VIP ownership samples from every peer within {timeout:.0f}s (SSH to the peers?)"
    )


def _stable_placement(
    watcher: OwnershipWatcher, peers: list[str], stable_s: float, timeout: float = 90.0
) -> dict[str, str]:
    """Each VIP's one holder, once every VIP has stayed alone on its holder for the last
    stable_s seconds."""

    def now() -> dict[str, frozenset[str]]:
        return {v: frozenset(h) for v, h in watcher.placement_now(peers).items()}

    since, last = [time.monotonic()], [now()]  # when the holders last changed, and to what

    def settled() -> dict[str, str] | None:
        current = now()
        if current != last[0]:
            since[0], last[0] = time.monotonic(), current
        elif all(len(h) == 1 for h in current.values()) and time.monotonic() - since[0] >= stable_s:
            return {v: next(iter(h)) for v, h in current.items()}
        return None

    placed = wait_until(settled, timeout, 0.1)
    if placed:
        return placed
    unsettled = ", ".join(
        f"{v} on {', '.join(sorted(h)) or 'nobody'}" for v, h in last[0].items() if len(h) != 1
    )
    raise CannotRun(
        f"the VIPs did not stay on one peer each for {stable_s:g}s within {timeout:.0f}s "
        f"({unsettled or 'holders kept changing'})"
    )


def _wait_move(
    watcher: OwnershipWatcher,
    old: str,
    vips: list[str],
    peers: list[str],
    hold_s: float,
    max_wait_s: float,
) -> None:
    """Hold the fault for hold_s, and longer until other peers took every one of `vips`
    (at most max_wait_s)."""
    start = time.monotonic()

    def held_and_moved() -> bool:
        placement = watcher.placement_now(peers)
        moved = all(placement[v] and old not in placement[v] for v in vips)
        return time.monotonic() - start >= hold_s and moved

    wait_until(held_and_moved, max(hold_s, max_wait_s), 0.1)


def score_vip(v: VipResult, r: ScenarioResult, peers: list[str]) -> None:
    """One VIP's figures from its probes and ownership samples in r's recording."""
    probes = measure.of_vip(r.probes, v.vip)
    timeline = measure.holder_timeline(measure.of_vip(r.samples, v.vip), peers)
    at_fault = measure.holders_at(timeline, r.fault_t)
    v.holder = ",".join(sorted(at_fault))
    v.faulted = r.holder in at_fault
    v.total_probes = len(probes)
    v.failed_probes = sum(1 for p in probes if not p.ok)
    v.failed_since_fault = sum(1 for p in probes if not p.ok and p.t >= r.fault_t)
    v.outage_s = round(measure.outage(probes), 3)
    since_fault = [(t, h) for t, h in timeline if t >= r.fault_t]
    v.moves_since_fault = measure.transitions(since_fault)
    if v.faulted:
        move = measure.vip_move(timeline, r.holder, r.fault_t)
        v.vip_move_s = None if move is None else round(move, 3)
        after = [h for _, h in since_fault if h and r.holder not in h]
        v.new_holder = ",".join(sorted(after[0])) if after else ""
    v.split_brain_s = round(measure.split_brain(timeline), 3)
    # Two holders when the fault was about to be undone (a crashed keepalived that left
    # its VIP behind, say), or still at the end, is a split brain that lasted; a moment
    # of overlap during a takeover is not.
    end_holders = timeline[-1][1] if timeline else frozenset()
    at_restore = measure.holders_at(timeline, r.restore_t)
    v.lasting_split_brain = len(end_holders) > 1 or len(at_restore) > 1


def score(r: ScenarioResult, peers: list[str]) -> None:
    """Per-VIP figures, then the run's: the faulted VIPs moved within the budget, none
    split for good, and the VIPs held elsewhere were not disturbed."""
    if not r.per_vip:  # a recording without the VIP list: the VIPs it names
        named = [s.vip for s in r.samples] + [p.vip for p in r.probes]
        r.per_vip = [VipResult(v) for v in dict.fromkeys(named)]
    for v in r.per_vip:
        score_vip(v, r, peers)
    faulted = [v for v in r.per_vip if v.faulted]
    r.vips = [v.vip for v in faulted]
    r.total_probes = len(r.probes)
    r.failed_probes = sum(1 for p in r.probes if not p.ok)
    r.outage_s = max((v.outage_s for v in r.per_vip), default=0.0)
    moves = [v.vip_move_s for v in faulted]
    r.vip_move_s = max(m for m in moves if m is not None) if faulted and None not in moves else None
    r.new_holder = ",".join(sorted({n for v in faulted for n in v.new_holder.split(",") if n}))
    r.split_brain_s = max((v.split_brain_s for v in r.per_vip), default=0.0)
    r.lasting_split_brain = any(v.lasting_split_brain for v in r.per_vip)
    r.others_undisturbed = not r.disturbed()
    r.passed = (
        r.recovered
        and r.vip_move_s is not None
        and r.outage_s <= r.budget_s
        and not r.lasting_split_brain
        and r.others_undisturbed
        and not r.error
        # Connections that ended inside a planned handover's window were all served.
        and all(n == 0 for k, n in r.established.get("within", {}).items() if k != "ok")
    )


def run(
    loaded: Loaded,
    hosts: Mapping[str, Transport],
    scenarios: list[Scenario],
    driver: FaultDriver,
    opts: Options,
    progress: Progress,
    place: Callable[[], str | None] | None = None,
) -> RunReport:
    """Each scenario against the holder of each VIP, in turn. Refuses to start on an
    unhealthy cluster; a run that cannot start later is skipped with the reason.

    `place` (deploy's placement: each VIP to its preferred peer, make-before-break; an
    error or None) runs before each run, so every run starts where the inventory puts
    the VIPs and shows whether a fault disturbs the VIPs held elsewhere; without it a
    moved VIP stays where it went (nopreempt)."""
    problems = _ready(cluster_status(loaded, hosts), opts.allow_drift)
    if problems:
        raise OperationError(
            f"the cluster is not healthy, refusing to inject a fault: {'; '.join(problems)}"
        )
    vips = [str(v.address.ip) for v in loaded.inventory.vips]
    report = RunReport()
    for scenario in scenarios:
        pending = list(vips)
        while pending:
            try:
                error = place() if place is not None else None
            except EdgekitError as exc:  # a deploy holding the hosts' locks, say
                error = str(exc)
            if error:
                progress(f"{scenario.name}: the VIPs stay where they are: {error}")
            try:
                r = run_scenario(loaded, hosts, scenario, driver, opts, progress, pending)
            except CannotRun as exc:
                report.skipped.append(Skipped(scenario.name, exc.reason, tuple(pending)))
                progress(report.skipped[-1].line())
                break
            report.results.append(r)
            progress(
                f"{r.name} on {r.holder} ({', '.join(r.vips) or '-'}): "
                f"{'PASS' if r.passed else 'FAIL'} outage {r.outage_s:.2f}s "
                f"(budget {r.budget_s}s), VIPs moved in {r.vip_move_s}s"
                + "".join(f"; {v.vip} on {v.holder} disturbed" for v in r.disturbed())
            )
            covered = {pending[0], *r.vips}
            pending = [v for v in pending if v not in covered]
    return report
