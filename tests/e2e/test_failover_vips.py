"""End to end in the local lab: failover-test with two VIPs held by different peers.

It probes both VIPs, faults the holder of each VIP in every scenario, putting the VIPs
back on their preferred peers before each run, and checks that the VIP held by the other
peer saw no failed probe and did not move. The inventory is a YAML dump of the lab's, so
it lost the lab's marker line: host-down still runs, because its peers are the running
lab's proxies.
"""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cli import edgekit, holders
from tests.e2e.inventories import default_scenarios

pytestmark = pytest.mark.lab

DEFAULTS = default_scenarios()


def two_vip_inventory(lab: Any, path: Path) -> tuple[Path, str, str, int]:
    """The lab's inventory with a second VIP: the first preferring proxy1, the second
    proxy2. Written by yaml.safe_dump, which drops the marker comment."""
    data = yaml.safe_load(Path(lab.inventory).read_text())
    first = data["vips"][0]
    prefix = str(first["address"]).split("/")[1]
    second = str(ipaddress.IPv4Address(lab.vip) + 1)
    first["preferred"] = "proxy1"
    data["vips"].append(
        {"address": f"{second}/{prefix}", "vrid": first["vrid"] + 1, "preferred": "proxy2"}
    )
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert not path.read_text().startswith("# edgekit-lab:")
    return path, lab.vip, second, first["vrid"] + 1


def put_on(lab_ssh: Any, inventory: Path, vip: str, vrid: int, target: str) -> None:
    """Move one VIP to `target`, as a lab-side action: the peer holding it stops sending
    that VRID's adverts for a moment (an nft drop of just those VRRP packets), `target`
    takes over, and the old holder yields to its higher-priority adverts."""
    now = holders(inventory)[vip]
    if now == [target]:
        return
    (old,) = now
    table = "ip edgekit_test_move"
    # VRRP's second byte is the VRID; the lab's IP headers carry no options (20 bytes).
    rules = (
        f"sudo nft add table {table} && sudo nft add chain {table} out "
        "'{ type filter hook output priority 0; }' && "
        f"sudo nft add rule {table} out ip protocol 112 @nh,168,8 {vrid} drop"
    )
    assert lab_ssh(old, rules).returncode == 0
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and target not in holders(inventory)[vip]:
            time.sleep(0.5)
    finally:
        assert lab_ssh(old, f"sudo nft delete table {table}").returncode == 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and holders(inventory)[vip] != [target]:
        time.sleep(0.5)
    assert holders(inventory)[vip] == [target]
    print(f"moved {vip} from {old} to {target}")


def test_failover_test_faults_the_holder_of_each_vip_and_spares_the_other(
    lab: Any, lab_ssh: Any, tmp_path: Path
) -> None:
    inv, first, second, second_vrid = two_vip_inventory(lab, tmp_path / "two-vips.yaml")
    result = edgekit("deploy", "-i", str(inv), "--yes")
    assert result.returncode == 0, result.stderr
    # Deploy puts each VIP on its preferred peer; should it not, place them here.
    if holders(inv)[first] != ["proxy1"]:
        put_on(lab_ssh, inv, first, second_vrid - 1, "proxy1")
    put_on(lab_ssh, inv, second, second_vrid, "proxy2")
    assert holders(inv) == {first: ["proxy1"], second: ["proxy2"]}

    report = tmp_path / "report"
    result = edgekit("failover-test", "-i", str(inv), "--report", str(report), timeout=900)
    print(result.stdout)
    assert (report / "results.json").is_file(), result.stderr
    data = json.loads((report / "results.json").read_text())
    runs = data["scenarios"]
    summary = [
        (r["name"], r["holder"], r["vips"], r["passed"], r["outage_s"], r["vip_move_s"])
        for r in runs
    ]
    print(json.dumps(summary))

    # host-down ran although the file has no marker; nothing was skipped.
    assert data["skipped"] == [] and list(dict.fromkeys(r["name"] for r in runs)) == DEFAULTS
    # Before each run failover-test put the VIPs back on their preferred peers: every
    # scenario faults proxy1 holding the first VIP, then proxy2 holding the second, and
    # each time the other VIP saw no failed probe and did not move.
    assert [(r["name"], r["holder"], r["vips"]) for r in runs] == [
        (name, peer, [vip])
        for name in DEFAULTS
        for peer, vip in (("proxy1", first), ("proxy2", second))
    ], summary
    for r in runs:
        assert [v["vip"] for v in r["per_vip"]] == [first, second]
        (other,) = [v for v in r["per_vip"] if not v["faulted"]]
        assert other["holder"] != r["holder"], (r["name"], other)
        assert other["failed_since_fault"] == 0 and other["moves_since_fault"] == 0, (
            r["name"],
            other,
        )
        assert r["others_undisturbed"]
        for v in r["per_vip"]:
            assert v["total_probes"] >= 20 * 3, (r["name"], v)  # both VIPs probed, >= 20/s
            assert not v["lasting_split_brain"], (r["name"], v)
        assert r["passed"], {k: r[k] for k in ("name", "holder", "vips", "per_vip", "error")}
    assert data["passed"] and result.returncode == 0
    # The table: a row per run, each with the other VIP "ok".
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [(r["name"], r["holder"], "PASS") for r in runs]
    assert [r[9:] for r in rows] == [["ok", r["vips"][0]] for r in runs]
    assert "SKIPPED" not in result.stdout
    assert (report / "graceful.proxy1.svg").is_file()
    assert (report / "graceful.proxy2.svg").is_file()
    after = edgekit("status", "-i", str(inv), "--json")
    assert json.loads(after.stdout)["healthy"], after.stdout
