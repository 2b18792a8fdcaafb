"""One scenario registry: a scenario added in one place shows in failover-test's --help,
its --json listing, the report and the benchmark's table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType

import pytest

from edgekit.failover import scenarios
from edgekit.failover.measure import Probe
from edgekit.failover.report import results_json, write_report
from edgekit.failover.run import ScenarioResult
from edgekit.lab.base import Capability, NoFaults
from tests.cli import run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def blip() -> Iterator[scenarios.Scenario]:
    added = scenarios.register(
        scenarios.Scenario(
            "test-blip",
            "a fault that exists only in this test",
            0.7,
            inject=lambda _f: None,
            restore=lambda _f: None,
        )
    )
    try:
        yield added
    finally:
        del scenarios.SCENARIOS[added.name]


def bench_failover() -> ModuleType:
    loader = SourceFileLoader("bench_failover", str(ROOT / "bench" / "failover"))
    spec = spec_from_loader("bench_failover", loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_a_new_scenario_shows_in_help_json_report_and_bench(
    blip: scenarios.Scenario, tmp_path: Path
) -> None:
    help_text = run("failover-test", "--help", env={"COLUMNS": "200"})
    assert help_text.exit_code == 0 and "test-blip" in help_text.stdout

    listing = run("failover-test", "--list", "--json")
    entries = {s["name"]: s for s in json.loads(listing.stdout)["scenarios"]}
    assert entries["test-blip"]["budget_s"] == 0.7
    assert entries["test-blip"]["description"] == blip.description

    result = ScenarioResult(
        "test-blip",
        budget_s=blip.budget_s,
        description=blip.description,
        recovered=True,
        passed=True,
        probes=[Probe(1.0, True, "http"), Probe(1.05, False, "http")],
    )
    write_report(tmp_path, [result], ["proxy1", "proxy2"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [s["name"] for s in saved["scenarios"]] == ["test-blip"]
    assert saved["skipped"] == [] and saved["passed"]
    assert blip.description in (tmp_path / "test-blip.svg").read_text()
    summary = results_json([result])["scenarios"]
    assert isinstance(summary, list) and summary[0]["description"] == blip.description

    bench = bench_failover()
    table = bench.table([{"default": [result.summary()]}], bench.scenarios(listing.stdout))
    row = next(line for line in table.splitlines() if line.startswith("| test-blip |"))
    assert "0.7 s" in row


def test_scenarios_that_need_what_the_hosts_lack_are_skipped_with_the_reason() -> None:
    chosen, left = scenarios.select(None, NoFaults())
    names = [s.name for s in chosen]
    assert "host-down" not in names and "graceful" in names
    assert [s.line() for s in left] == ["host-down skipped: needs power control of the hosts"]
    # cable-cut is opt-in: not running it by default is not a skip.
    assert [s.name for s in left] == ["host-down"]


def test_naming_the_scenarios_to_run_excludes_the_others_without_skipping_them() -> None:
    chosen, left = scenarios.select(["graceful", "link-down"], NoFaults())
    assert [s.name for s in chosen] == ["graceful", "link-down"] and left == []


def test_asking_for_a_scenario_the_hosts_cannot_take_is_refused() -> None:
    with pytest.raises(ValueError, match="host-down needs power"):
        scenarios.select(["host-down"], NoFaults())
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        scenarios.select(["nope"], NoFaults())


def test_a_lab_with_power_and_link_control_runs_host_down_by_default() -> None:
    class Lab(NoFaults):
        def capabilities(self) -> frozenset[Capability]:
            return frozenset({Capability.POWER, Capability.LINK})

    names = [s.name for s in scenarios.select(None, Lab())[0]]
    assert names == [
        "graceful",
        "haproxy-down",
        "keepalived-crash",
        "link-down",
        "host-down",
        "drain",
    ]


def test_unknown_scenario_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run(
        "failover-test",
        "-i",
        str(ROOT / "templates" / "edge.example.yaml"),
        "-s",
        "nope",
        env={"EDGEKIT_STATS_PASSWORD": "Zq8-vLm3pRt7xW"},
    )
    assert result.exit_code == 2
    assert "unknown scenario 'nope'" in result.stderr
