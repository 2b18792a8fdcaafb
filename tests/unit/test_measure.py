"""Measurement logic on recorded series: outage, VIP move, split brain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.failover.measure import (
    Probe,
    Sample,
    holder_timeline,
    outage,
    split_brain,
    transitions,
    vip_move,
)
from edgekit.failover.run import ScenarioResult, score

DATA = Path(__file__).parent.parent / "data" / "recorded"


def probes(pattern: str, start: float = 100.0, step: float = 0.05) -> list[Probe]:
    return [Probe(start + i * step, c == "1") for i, c in enumerate(pattern)]


def test_outage_is_zero_when_every_probe_succeeds() -> None:
    assert outage(probes("1111111")) == 0.0


def test_outage_spans_first_failure_to_next_success() -> None:
    # failures at indexes 2..5, success again at 6: 4 probes x 50 ms
    assert outage(probes("1100001111")) == pytest.approx(0.20)


def test_outage_takes_the_longest_of_several_runs() -> None:
    assert outage(probes("10111000001011")) == pytest.approx(0.25)


def test_outage_still_failing_at_the_end_lasts_to_the_last_probe() -> None:
    assert outage(probes("11000")) == pytest.approx(0.10)


def test_outage_merges_targets_by_time() -> None:
    a = [Probe(1.0, True, "http"), Probe(1.1, False, "http"), Probe(1.3, True, "http")]
    b = [Probe(1.05, True, "api"), Probe(1.15, False, "api"), Probe(1.25, True, "api")]
    # 1.1 failed (http) ... 1.25 ok (api) ends the run
    assert outage(a + b) == pytest.approx(0.15)


def samples(rows: list[tuple[float, str, int]]) -> list[Sample]:
    return [Sample(t, p, bool(h)) for t, p, h in rows]


def test_vip_move_is_time_from_fault_to_a_new_single_holder() -> None:
    tl = holder_timeline(
        samples(
            [
                (0.0, "a", 1),
                (0.0, "b", 0),
                (1.0, "a", 1),
                (1.0, "b", 0),
                (1.2, "a", 0),
                (1.3, "b", 0),
                (1.6, "b", 1),
                (1.7, "a", 0),
            ]
        ),
        ["a", "b"],
    )
    assert vip_move(tl, "a", fault_t=1.1) == pytest.approx(0.5)


def test_vip_move_is_none_when_the_vip_never_left() -> None:
    tl = holder_timeline(
        samples([(t / 10, "a", 1) for t in range(30)] + [(t / 10, "b", 0) for t in range(30)]),
        ["a", "b"],
    )
    assert vip_move(tl, "a", fault_t=0.5) is None


def test_split_brain_counts_time_with_two_holders() -> None:
    tl = holder_timeline(
        samples(
            [
                (0.0, "a", 1),
                (0.0, "b", 0),
                (1.0, "b", 1),
                (1.0, "a", 1),
                (1.5, "a", 1),
                (1.5, "b", 1),
                (2.0, "a", 0),
                (2.0, "b", 1),
            ]
        ),
        ["a", "b"],
    )
    assert split_brain(tl) == pytest.approx(1.0)
    assert split_brain(tl, since=1.5) == pytest.approx(0.5)


def test_a_silent_peer_stops_holding_after_the_stale_window() -> None:
    # a dies at 1.0 holding the VIP; b takes it at 1.2; a's last word goes stale at 1.5
    tl = holder_timeline(
        samples(
            [
                (0.0, "a", 1),
                (0.0, "b", 0),
                (1.0, "a", 1),
                (1.2, "b", 1),
                (1.4, "b", 1),
                (1.6, "b", 1),
            ]
        ),
        ["a", "b"],
        stale_after=0.5,
    )
    assert tl[-1][1] == frozenset({"b"})
    assert split_brain(tl) == pytest.approx(0.4)


def test_transitions_count_holder_changes() -> None:
    tl = [
        (0.0, frozenset({"a"})),
        (1.0, frozenset({"a"})),
        (2.0, frozenset({"b"})),
        (3.0, frozenset({"b"})),
    ]
    assert transitions(tl) == 1


@pytest.mark.parametrize("name", ["link-down", "host-down"])
def test_recorded_series_give_the_figures_reported_at_run_time(name: str) -> None:
    """Series recorded by `failover-test --report` in the lab (probes every 50 ms per
    service, 0.3 s timeout); the figures are the ones that run printed."""
    data = json.loads((DATA / f"{name}.series.json").read_text())
    ps = [Probe(p["t"], p["ok"], p["target"]) for p in data["probes"]]
    ss = [Sample(s["t"], s["peer"], s["holds"]) for s in data["samples"]]
    tl = holder_timeline(ss, data["peers"])
    reported = data["result"]
    assert round(outage(ps), 3) == reported["outage_s"]
    assert round(vip_move(tl, data["holder"], data["fault_t"]) or -1, 3) == reported["vip_move_s"]
    assert round(split_brain(tl), 3) == reported["split_brain_s"]
    assert sum(not p.ok for p in ps) == reported["failed_probes"]
    # Independent of the code under test: the longest run of consecutive failures of
    # one target, times the probe interval, bounds the outage from below.
    for target in {p.target for p in ps}:
        run = longest = 0
        for p in (p for p in ps if p.target == target):
            run = 0 if p.ok else run + 1
            longest = max(longest, run)
        assert reported["outage_s"] >= (longest - 1) * 0.05 - 1e-9


def scored(
    rows: list[tuple[float, str, int]], probe_pattern: str, restore_t: float
) -> ScenarioResult:
    r = ScenarioResult(
        "keepalived-crash",
        holder="a",
        budget_s=1.0,
        recovered=True,
        fault_t=1.0,
        restore_t=restore_t,
    )
    r.samples = samples(rows)
    r.probes = probes(probe_pattern, start=0.0, step=0.1)
    score(r, ["a", "b"])
    return r


def test_a_crash_that_leaves_the_vip_behind_fails_as_a_lasting_split_brain() -> None:
    # b takes the VIP at 1.5 while a keeps it until the restore at 3.0
    rows = [(t / 10, "a", 1) for t in range(0, 35)]
    rows += [(t / 10, "b", int(t >= 15)) for t in range(0, 35)]
    rows += [(t / 10, "a", 0) for t in range(35, 40)] + [(t / 10, "b", 1) for t in range(35, 40)]
    r = scored(rows, "1" * 40, restore_t=3.0)
    assert r.outage_s == 0.0 and r.lasting_split_brain and not r.passed


def test_a_moment_of_overlap_during_a_takeover_is_not_lasting() -> None:
    rows = [(t / 10, "a", int(t <= 15)) for t in range(0, 40)]
    rows += [(t / 10, "b", int(t >= 15)) for t in range(0, 40)]
    r = scored(rows, "1" * 40, restore_t=3.0)
    assert r.split_brain_s > 0 and not r.lasting_split_brain and r.passed
    assert r.vip_move_s == pytest.approx(0.6)
