"""failover-test covers every VIP: it probes and watches all of them, faults the holder
of each (a peer holding two VIPs once per scenario), checks that the VIPs held elsewhere
are not disturbed, and a scenario that cannot run fails the run unless the user left it
out with -s. No root, no network: recordings, scripted hosts and a fake `ip`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import edgekit.hosts
from edgekit.failover import report as failover_report
from edgekit.failover import run as runner
from edgekit.failover.faults import driver_for
from edgekit.failover.measure import Probe, Sample
from edgekit.failover.probes import OwnershipWatcher, watch_script
from edgekit.failover.run import (
    CannotRun,
    Options,
    RunReport,
    ScenarioResult,
    next_target,
    probe_targets,
    score,
)
from edgekit.failover.scenarios import SCENARIOS, Skipped
from edgekit.inventory import Loaded, load_inventory
from edgekit.lab.base import Capability, NoFaults, marker_line
from edgekit.lab.vagrant import VagrantLab
from edgekit.remote.fake import FakeHost
from edgekit.status import ClusterStatus
from tests.cli import run as cli
from tests.unit import simhost
from tests.unit.test_lab_provider import vagrant_lab  # noqa: F401 (a fixture)

A, B = "10.10.0.100", "10.10.0.101"
PEERS = ["proxy1", "proxy2"]

# The simulated cluster's inventory with a second VIP and a TCP service.
TWO_VIPS = (
    simhost.INVENTORY.format(firewall="false")
    .replace(
        "  - {address: 10.10.0.100/24, vrid: 51}\n",
        f"  - {{address: {A}/24, vrid: 51, preferred: proxy1}}\n"
        f"  - {{address: {B}/24, vrid: 52, preferred: proxy2}}\n",
    )
    .replace(
        "services:\n", "services:\n  - {name: api, listen: 6443, backend: nodes, port: 6443}\n"
    )
)


@pytest.fixture()
def inventory_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", simhost.PASSWORD)
    path = tmp_path / "edge.yaml"
    path.write_text(TWO_VIPS)
    assert TWO_VIPS.count("vrid") == 2 and "name: api" in TWO_VIPS
    return path


@pytest.fixture()
def loaded(inventory_file: Path) -> Loaded:
    return load_inventory(inventory_file)


# --- probing and watching every VIP ---------------------------------------------------


def test_every_service_is_probed_on_every_vip(loaded: Loaded) -> None:
    targets = {(t.address, t.name, t.port, t.http) for t in probe_targets(loaded)}
    assert targets == {
        (A, "http", 80, True),
        (A, "api", 6443, False),
        (B, "http", 80, True),
        (B, "api", 6443, False),
    }


def watch_line(tmp_path: Path, vips: list[str], addresses: list[str]) -> str:
    """The first line the watch script prints on a host whose `ip` shows `addresses`."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    lines = "".join(
        f"echo '3: eth1    inet {a}/24 brd 10.10.0.255 scope global eth1'\n" for a in addresses
    )
    (fake_bin / "ip").write_text("#!/bin/sh\n" + lines)
    (fake_bin / "ip").chmod(0o755)
    script = watch_script(vips)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    with subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.kill()
    return line


def test_the_watch_script_reports_each_vip_in_order(tmp_path: Path) -> None:
    line = watch_line(tmp_path, [A, B], ["10.10.0.11", B])
    stamp, bits = line.split()
    assert float(stamp) > 0 and bits == "01"
    # 10.10.0.10 is a prefix of 10.10.0.100: only the whole address counts.
    assert watch_line(tmp_path, ["10.10.0.10", A], [A]).split()[1] == "01"


class StreamingHost(FakeHost):
    """A FakeHost that remembers the command it was asked to stream."""

    streamed: list[str]

    def stream(self, command: str, on_line: Any, stop: Any, idle_timeout: float = 2.0) -> None:
        self.streamed = [*getattr(self, "streamed", []), command]
        super().stream(command, on_line, stop, idle_timeout)


def test_the_watcher_turns_each_line_into_one_sample_per_vip() -> None:
    host = StreamingHost("proxy1")
    host.shared.lines = ["100.0 10", "100.1 11", "garbage", "100.2 1", "100.3 1x"]
    watcher = OwnershipWatcher({"proxy1": host}, [A, B]).start()
    try:
        runner.wait_until(lambda: len(watcher.samples) >= 4, 5.0, interval=0.01)
    finally:
        samples = watcher.stop()
    assert [(s.t, s.vip, s.holds) for s in samples] == [
        (100.0, A, True),
        (100.0, B, False),
        (100.1, A, True),
        (100.1, B, True),
    ]
    assert f"for v in {A} {B};" in host.streamed[0]


# --- which peer is faulted ------------------------------------------------------------


def test_the_holder_of_the_first_uncovered_vip_is_faulted_with_every_vip_it_holds() -> None:
    assert next_target([A, B], {A: "proxy1", B: "proxy2"}) == ("proxy1", [A])
    assert next_target([B], {A: "proxy2", B: "proxy2"}) == ("proxy2", [A, B])
    assert next_target([A, B], {A: "proxy2", B: "proxy2"}) == ("proxy2", [A, B])


class SimCluster:
    """Stands in for run_scenario: VIPs on peers; a fault moves the target's VIPs to the
    other peer (nopreempt: they stay there)."""

    def __init__(self, placement: dict[str, str], cannot: set[str] | None = None) -> None:
        self.placement = placement
        self.cannot = cannot or set()
        self.runs: list[tuple[str, str, list[str]]] = []

    def run_scenario(
        self,
        loaded: Loaded,
        hosts: object,
        scenario: Any,
        driver: object,
        opts: Options,
        progress: object,
        pending: list[str],
    ) -> ScenarioResult:
        if scenario.name in self.cannot:
            raise CannotRun("the VIPs did not stay on one peer each")
        holder, held = next_target(pending, self.placement)
        self.runs.append((scenario.name, holder, held))
        other = next(p for p in PEERS if p != holder)
        for vip in held:
            self.placement[vip] = other
        return ScenarioResult(scenario.name, holder=holder, vips=held, passed=True)


@pytest.fixture()
def healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "cluster_status", lambda _l, _h: ClusterStatus([], {}, []))


def run_sim(
    loaded: Loaded,
    sim: SimCluster,
    names: list[str],
    place: Callable[[], str | None] | None = None,
    notes: list[str] | None = None,
) -> RunReport:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "run_scenario", sim.run_scenario)
        return runner.run(
            loaded,
            {},
            [SCENARIOS[n] for n in names],
            NoFaults(),
            Options(),
            (notes if notes is not None else []).append,
            place=place,
        )


def test_each_scenario_faults_the_holder_of_each_vip(loaded: Loaded, healthy: None) -> None:
    sim = SimCluster({A: "proxy1", B: "proxy2"})
    outcome = run_sim(loaded, sim, ["graceful", "haproxy-down"])
    assert sim.runs == [
        ("graceful", "proxy1", [A]),  # B, on proxy2, is the VIP held elsewhere
        ("graceful", "proxy2", [A, B]),  # A moved to proxy2: one fault covers both
        ("haproxy-down", "proxy1", [A, B]),
    ]
    assert outcome.passed and outcome.skipped == []


def test_with_placement_every_run_starts_where_the_inventory_puts_the_vips(
    loaded: Loaded, healthy: None
) -> None:
    preferred = {A: "proxy1", B: "proxy2"}
    sim = SimCluster(dict(preferred))

    def place() -> None:
        sim.placement.update(preferred)

    run_sim(loaded, sim, ["graceful", "host-down"], place=place)
    assert sim.runs == [
        ("graceful", "proxy1", [A]),
        ("graceful", "proxy2", [B]),  # A is back on proxy1: the VIP held elsewhere
        ("host-down", "proxy1", [A]),
        ("host-down", "proxy2", [B]),
    ]


def test_a_placement_that_fails_is_said_and_the_runs_go_on(loaded: Loaded, healthy: None) -> None:
    sim, notes = SimCluster({A: "proxy1", B: "proxy2"}), list[str]()
    outcome = run_sim(loaded, sim, ["graceful"], place=lambda: "proxy1: busy", notes=notes)
    assert "graceful: the VIPs stay where they are: proxy1: busy" in notes
    assert len(sim.runs) == 2 and outcome.passed

    def locked() -> str | None:
        raise runner.OperationError("proxy1: deploy lock held by pid 42")

    notes.clear()
    outcome = run_sim(loaded, SimCluster({A: "proxy1", B: "proxy2"}), ["graceful"], locked, notes)
    assert "graceful: the VIPs stay where they are: proxy1: deploy lock held by pid 42" in notes
    assert len(outcome.results) == 2


def test_a_peer_holding_both_vips_is_faulted_once_per_scenario(
    loaded: Loaded, healthy: None
) -> None:
    sim = SimCluster({A: "proxy1", B: "proxy1"})
    run_sim(loaded, sim, ["graceful"])
    assert sim.runs == [("graceful", "proxy1", [A, B])]


def test_a_run_that_cannot_start_is_skipped_with_its_reason_and_fails_the_run(
    loaded: Loaded, healthy: None
) -> None:
    sim = SimCluster({A: "proxy1", B: "proxy2"}, cannot={"link-down"})
    outcome = run_sim(loaded, sim, ["graceful", "link-down", "host-down"])
    assert outcome.skipped == [
        Skipped("link-down", "the VIPs did not stay on one peer each", (A, B))
    ]
    assert [name for name, _, _ in sim.runs] == ["graceful", "graceful", "host-down"]
    assert all(r.passed for r in outcome.results) and not outcome.passed


def test_an_unhealthy_cluster_is_refused_before_any_fault(
    loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        runner, "cluster_status", lambda _l, _h: ClusterStatus([], {}, ["proxy2: haproxy down"])
    )
    with pytest.raises(runner.OperationError, match="proxy2: haproxy down"):
        run_sim(loaded, SimCluster({A: "proxy1", B: "proxy2"}), ["graceful"])


# --- per-VIP figures and the check of the VIPs held elsewhere -------------------------


def recording(b_failures: tuple[float, float] | None = None) -> ScenarioResult:
    """proxy1 holds A and proxy2 holds B; the fault on proxy1 at 2.0 moves A to proxy2
    at 2.4 (A's probes fail from 2.0 to 2.35); restored at 4.0. `b_failures`: a span in
    which B's probes fail too."""
    samples = []
    for i in range(60):
        t = i / 10
        samples += [
            Sample(t, "proxy1", t < 2.3, A),
            Sample(t, "proxy2", t >= 2.4, A),
            Sample(t, "proxy1", False, B),
            Sample(t, "proxy2", True, B),
        ]
    probes = []
    for i in range(120):
        t = i / 20
        probes.append(Probe(t, not 2.0 <= t < 2.4, "http", A))
        b_ok = b_failures is None or not b_failures[0] <= t < b_failures[1]
        probes.append(Probe(t, b_ok, "http", B))
    r = ScenarioResult(
        "graceful",
        holder="proxy1",
        budget_s=1.0,
        recovered=True,
        fault_t=2.0,
        restore_t=4.0,
        per_vip=[runner.VipResult(A), runner.VipResult(B)],
    )
    r.samples, r.probes = samples, probes
    score(r, PEERS)
    return r


def test_figures_are_per_vip_and_the_vip_held_elsewhere_is_checked() -> None:
    r = recording()
    a, b = r.per_vip
    assert r.vips == [A] and a.faulted and not b.faulted
    assert a.holder == "proxy1" and a.new_holder == "proxy2"
    assert a.vip_move_s == pytest.approx(0.4) and a.outage_s == pytest.approx(0.4)
    assert a.failed_probes == 8 and a.total_probes == 120
    assert b.holder == "proxy2" and b.vip_move_s is None and b.failed_probes == 0
    assert b.moves_since_fault == 0 and not b.disturbed
    assert r.others_undisturbed and r.passed
    assert r.vip_move_s == pytest.approx(0.4) and r.new_holder == "proxy2"
    summary = json.loads(json.dumps(r.summary()))
    assert [v["vip"] for v in summary["per_vip"]] == [A, B]


def test_a_vip_held_elsewhere_that_failed_probes_during_the_fault_fails_the_run() -> None:
    r = recording(b_failures=(2.5, 2.7))
    b = r.per_vip[1]
    assert b.failed_since_fault == 4 and b.disturbed
    assert not r.others_undisturbed and not r.passed
    assert r.outage_s == pytest.approx(0.4)  # A's outage is within budget: B alone fails it


def test_failures_of_another_vip_before_the_fault_are_not_blamed_on_it() -> None:
    r = recording(b_failures=(0.5, 0.7))
    assert r.per_vip[1].failed_since_fault == 0 and r.others_undisturbed


def test_the_report_and_table_carry_every_run_with_its_vips_and_the_skipped(
    tmp_path: Path,
) -> None:
    runs = [recording(), recording(b_failures=(2.5, 2.6))]
    runs[1].name = "haproxy-down"
    skipped = [Skipped("host-down", "needs power control of the hosts")]
    failover_report.write_report(tmp_path, runs, PEERS, skipped)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["passed"] is False
    assert saved["skipped"] == [
        {"name": "host-down", "reason": "needs power control of the hosts", "vips": []}
    ]
    first = saved["scenarios"][0]
    assert first["holder"] == "proxy1" and first["vips"] == [A] and first["others_undisturbed"]
    assert {v["vip"]: v["holder"] for v in first["per_vip"]} == {A: "proxy1", B: "proxy2"}
    assert [v["disturbed"] for v in saved["scenarios"][1]["per_vip"]] == [False, True]
    assert (tmp_path / "graceful.proxy1.svg").read_text().count(f"probes {A}") == 1
    series = json.loads((tmp_path / "haproxy-down.proxy1.series.json").read_text())
    assert series["vips"] == [A, B] and {p["vip"] for p in series["probes"]} == {A, B}

    lines = failover_report.table_lines(runs, skipped)
    assert lines[1].split()[:3] == ["graceful", "proxy1", "PASS"] and " ok " in lines[1]
    assert lines[2].split()[:3] == ["haproxy-down", "proxy1", "FAIL"]
    assert "DISTURBED" in lines[2] and f"{B} disturbed: 2 failed probes" in lines[2]
    assert lines[3].split()[:3] == ["host-down", "-", "SKIPPED"]
    assert "needs power control" in lines[3]


def test_a_run_with_a_skipped_scenario_does_not_pass() -> None:
    ok = ScenarioResult("graceful", passed=True)
    assert failover_report.results_json([ok])["passed"] is True
    assert failover_report.results_json([ok], [Skipped("host-down", "why")])["passed"] is False
    assert RunReport([ok]).passed and not RunReport([ok], [Skipped("x", "y")]).passed
    assert not RunReport().passed


# --- the command line -----------------------------------------------------------------


@pytest.fixture()
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """failover-test's hosts are FakeHosts and its runner returns a passing run of each
    scenario it is given; yields the scenario names of each call."""
    calls: list[list[str]] = []

    def fake_run(
        loaded: Loaded, hosts: object, scenarios: list[Any], *_a: object, **_k: object
    ) -> RunReport:
        calls.append([s.name for s in scenarios])
        return RunReport(
            [ScenarioResult(s.name, holder="proxy1", vips=[A], passed=True) for s in scenarios]
        )

    monkeypatch.setattr(
        edgekit.hosts, "peer_hosts", lambda loaded, **_k: {n: FakeHost(n) for n in PEERS}
    )
    monkeypatch.setattr(runner, "run", fake_run)
    yield calls


def test_a_scenario_that_cannot_run_fails_the_run_with_exit_1(
    inventory_file: Path, fake_cluster: list[list[str]]
) -> None:
    result = cli("failover-test", "-i", str(inventory_file), "--json")
    assert "host-down" not in fake_cluster[0]
    data = json.loads(result.stdout)
    assert data["passed"] is False and result.exit_code == 1
    assert [s["name"] for s in data["skipped"]] == ["host-down"]
    assert "needs power" in data["skipped"][0]["reason"]

    table = cli("failover-test", "-i", str(inventory_file))
    assert table.exit_code == 1
    assert "host-down skipped: needs power control of the hosts" in table.stderr
    assert "--allow-host-down" in table.stderr
    assert any(
        line.split()[:3] == ["host-down", "-", "SKIPPED"] for line in table.stdout.splitlines()
    )


def test_scenarios_left_out_by_naming_the_others_do_not_fail_the_run(
    inventory_file: Path, fake_cluster: list[list[str]]
) -> None:
    result = cli("failover-test", "-i", str(inventory_file), "-s", "graceful", "--json")
    data = json.loads(result.stdout)
    assert fake_cluster == [["graceful"]]
    assert data["skipped"] == [] and data["passed"] is True and result.exit_code == 0


def test_a_run_skipped_while_running_fails_the_command(
    inventory_file: Path, fake_cluster: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def skipping(*_a: object, **_k: object) -> RunReport:
        return RunReport(
            [ScenarioResult("graceful", holder="proxy1", vips=[A], passed=True)],
            [Skipped("graceful", "the cluster is not healthy: proxy1: haproxy down", (B,))],
        )

    monkeypatch.setattr(runner, "run", skipping)
    result = cli("failover-test", "-i", str(inventory_file), "-s", "graceful", "--json")
    data = json.loads(result.stdout)
    assert result.exit_code == 1 and data["passed"] is False
    assert data["skipped"] == [
        {
            "name": "graceful",
            "reason": "the cluster is not healthy: proxy1: haproxy down",
            "vips": [B],
        }
    ]


# --- in the lab, host-down always runs ------------------------------------------------


@pytest.fixture()
def lab_of_these_peers(request: pytest.FixtureRequest, loaded: Loaded) -> Path:
    """A running Vagrant lab (test_lab_provider's) whose proxies are TWO_VIPS' peers."""
    lab_inventory: Path = request.getfixturevalue("vagrant_lab")
    peers = [{"name": p.name, "address": str(p.address)} for p in loaded.inventory.peers]
    lab_inventory.write_text(
        marker_line("vagrant", "f00d") + yaml.safe_dump({"cluster": "lab", "peers": peers})
    )
    return lab_inventory


def test_an_inventory_without_the_marker_for_the_labs_own_proxies_gets_the_labs_power(
    lab_of_these_peers: Path, loaded: Loaded, inventory_file: Path
) -> None:
    # TWO_VIPS names the lab's proxies but, written by hand or by a YAML dump, no marker.
    driver = driver_for(inventory_file, {}, False, loaded.inventory.peers)
    assert isinstance(driver, VagrantLab) and Capability.POWER in driver.capabilities()


def test_an_inventory_whose_peers_are_not_the_labs_gets_no_power(
    lab_of_these_peers: Path, inventory_file: Path
) -> None:
    inventory_file.write_text(TWO_VIPS.replace("10.10.0.12}", "10.10.0.14}"))
    other = load_inventory(inventory_file)
    driver = driver_for(inventory_file, {}, False, other.inventory.peers)
    assert driver.capabilities() == frozenset()
