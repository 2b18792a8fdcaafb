"""Run failover scenarios against the VIP holder under live traffic and measure them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from edgekit.errors import EdgekitError, OperationError
from edgekit.failover import measure
from edgekit.failover.probes import OwnershipWatcher, Prober, Target
from edgekit.failover.scenarios import Fault, Scenario
from edgekit.inventory import Loaded
from edgekit.lab.base import FaultDriver
from edgekit.progress import Progress, wait_until
from edgekit.remote import Transport
from edgekit.status import ClusterStatus, cluster_status


@dataclass
class ScenarioResult:
    name: str
    holder: str = ""
    new_holder: str = ""
    vip_move_s: float | None = None
    outage_s: float = 0.0
    failed_probes: int = 0
    total_probes: int = 0
    split_brain_s: float = 0.0
    lasting_split_brain: bool = False
    recovered: bool = False
    passed: bool = False
    budget_s: float = 0.0
    description: str = ""  # from the scenario registry
    error: str = ""
    # For the report's timeline; left out of the JSON summary.
    fault_t: float = 0.0
    restore_t: float = 0.0
    probes: list[measure.Probe] = field(default_factory=list, repr=False)
    samples: list[measure.Sample] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, object]:
        d = asdict(self)
        for key in ("probes", "samples", "fault_t", "restore_t"):
            d.pop(key)
        return d


@dataclass
class Options:
    hold_s: float = 3.0  # how long a fault lasts before it is undone
    settle_s: float = 1.0
    recover_timeout_s: float = 60.0
    allow_drift: bool = False  # the benchmark runs baseline configs that differ on purpose
    move_wait_s: float = 15.0  # how long a fault may take to move the VIP before restore
    # The VIP must have stayed on one holder this long before a fault: after a restore a
    # preempting peer may still be taking it back, which would pass for a failover.
    stable_s: float = 3.0


def probe_targets(loaded: Loaded) -> list[Target]:
    vip = str(loaded.inventory.vips[0].address.ip)
    return [
        Target(
            s.name,
            vip,
            s.listen,
            http=(s.probe or ("http" if s.listen in (80, 8080) else "tcp")) == "http",
        )
        for s in loaded.inventory.services
    ]


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
) -> ScenarioResult:
    inv = loaded.inventory
    name = scenario.name
    result = ScenarioResult(name, budget_s=scenario.budget_s, description=scenario.description)
    vip = inv.vips[0]
    vip_ip = str(vip.address.ip)
    try:
        st = cluster_status(loaded, hosts)
        problems = _ready(st, opts.allow_drift)
        if problems:
            raise OperationError(
                f"{name}: the cluster is not healthy, refusing to inject a "
                f"fault: {'; '.join(problems)}"
            )
        watcher = OwnershipWatcher(hosts, vip_ip).start()
        prober = Prober(probe_targets(loaded)).start()
        try:
            _wait_for_samples(watcher, [p.name for p in inv.peers])
            result.holder = _stable_holder(watcher, [p.name for p in inv.peers], opts.stable_s)
            peer = next(p for p in inv.peers if p.name == result.holder)
            iface = peer.interface or vip.interface or inv.vrrp.interface
            holder_host = hosts[result.holder]
            fault = Fault(holder_host, iface, opts.hold_s, driver)
            progress(f"{name}: {scenario.description} ({result.holder})")
            result.fault_t = time.time()
            try:
                scenario.inject(fault)
                _wait_move(
                    watcher,
                    result.holder,
                    [p.name for p in inv.peers],
                    opts.hold_s,
                    opts.move_wait_s,
                )
                if scenario.self_restoring:
                    # The fault undoes itself; give it that time.
                    time.sleep(max(0.0, result.fault_t + opts.hold_s + 0.5 - time.time()))
            finally:
                result.restore_t = time.time()
                holder_host.close()  # its connection may have died with the fault
                try:
                    scenario.restore(fault)
                except EdgekitError as exc:
                    result.error = f"restore failed: {exc}"
            progress(f"{name}: restored; waiting for the cluster to be healthy")
            result.recovered = wait_healthy(loaded, hosts, opts.recover_timeout_s, opts.allow_drift)
            time.sleep(opts.settle_s)
        finally:
            result.probes = prober.stop()
            result.samples = watcher.stop()
        score(result, [p.name for p in inv.peers])
        return result
    finally:
        for host in hosts.values():
            host.close()


def _wait_for_samples(watcher: OwnershipWatcher, peers: list[str], timeout: float = 10.0) -> None:
    def every_peer_seen() -> bool:
        return {s.peer for s in watcher.samples[-50:]} >= set(peers)

    if wait_until(every_peer_seen, timeout, interval=0.1):
        return
    raise OperationError(
        f"no VIP ownership samples from every peer within {timeout:.0f}s (SSH to the peers?)"
    )


def _stable_holder(
    watcher: OwnershipWatcher, peers: list[str], stable_s: float, timeout: float = 90.0
) -> str:
    """The one peer that has held the VIP, alone, for the last stable_s seconds."""
    start = time.monotonic()
    since, last = start, frozenset(watcher.holders_now(peers))
    while time.monotonic() - start < timeout:
        time.sleep(0.1)
        now = frozenset(watcher.holders_now(peers))
        if now != last:
            since, last = time.monotonic(), now
        elif len(now) == 1 and time.monotonic() - since >= stable_s:
            return next(iter(now))
    raise OperationError(
        f"the VIP did not stay on one peer for {stable_s:g}s within "
        f"{timeout:.0f}s (holders now: {', '.join(sorted(last)) or 'none'})"
    )


def _wait_move(
    watcher: OwnershipWatcher, old: str, peers: list[str], hold_s: float, max_wait_s: float
) -> None:
    """Hold the fault for hold_s, and longer until another peer took the VIP (at most
    max_wait_s)."""
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        holders = watcher.holders_now(peers)
        moved = bool(holders) and old not in holders
        if (elapsed >= hold_s and moved) or elapsed >= max(hold_s, max_wait_s):
            return
        time.sleep(0.1)


def score(r: ScenarioResult, peers: list[str]) -> None:
    timeline = measure.holder_timeline(r.samples, peers)
    r.total_probes = len(r.probes)
    r.failed_probes = sum(1 for p in r.probes if not p.ok)
    r.outage_s = round(measure.outage(r.probes), 3)
    move = measure.vip_move(timeline, r.holder, r.fault_t)
    r.vip_move_s = None if move is None else round(move, 3)
    after = [h for t, h in timeline if t >= r.fault_t and h and r.holder not in h]
    r.new_holder = ",".join(sorted(after[0])) if after else ""
    r.split_brain_s = round(measure.split_brain(timeline), 3)
    # Two holders when the fault was about to be undone (a crashed keepalived that left
    # its VIP behind, say), or still at the end, is a split brain that lasted; a moment
    # of overlap during a takeover is not.
    at_restore = [h for t, h in timeline if t <= r.restore_t]
    end_holders = timeline[-1][1] if timeline else frozenset()
    r.lasting_split_brain = len(end_holders) > 1 or bool(at_restore and len(at_restore[-1]) > 1)
    r.passed = (
        r.recovered
        and r.vip_move_s is not None
        and r.outage_s <= r.budget_s
        and not r.lasting_split_brain
        and not r.error
    )


def run(
    loaded: Loaded,
    hosts: Mapping[str, Transport],
    scenarios: list[Scenario],
    driver: FaultDriver,
    opts: Options,
    progress: Progress,
) -> list[ScenarioResult]:
    results = []
    for scenario in scenarios:
        results.append(run_scenario(loaded, hosts, scenario, driver, opts, progress))
        r = results[-1]
        progress(
            f"{r.name}: {'PASS' if r.passed else 'FAIL'} outage {r.outage_s:.2f}s "
            f"(budget {r.budget_s}s), VIP moved in {r.vip_move_s}s"
        )
    return results
