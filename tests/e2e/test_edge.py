"""End to end in the local lab: deploy, status and failover-test against real hosts.

molecule's shape: refuse bad access, converge, converge again and expect no
change, change under traffic, inject a failure, verify. The tests run in file
order and share one lab; each states what it leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgekit.failover.measure import holder_timeline, transitions
from edgekit.failover.probes import OwnershipWatcher, Prober, Target
from edgekit.hosts import close_all, peer_hosts
from edgekit.inventory import load_inventory
from tests.conftest import need_program
from tests.e2e.cli import edgekit, one_line_error
from tests.e2e.inventories import default_scenarios

pytestmark = pytest.mark.lab

MANAGED = ("/etc/haproxy/haproxy.cfg", "/etc/keepalived/keepalived.conf")


@pytest.fixture(scope="module")
def base(lab: Any) -> dict[str, Any]:
    return yaml.safe_load(Path(lab.inventory).read_text())


def write_inventory(tmp: Path, data: dict[str, Any], name: str = "edge.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edge")


@pytest.fixture(scope="module")
def two_nodes(base: dict[str, Any], workdir: Path) -> Path:
    """The lab inventory with node3 left out: the backend change later adds it."""
    data = json.loads(json.dumps(base))
    data["backends"]["nodes"] = [n for n in data["backends"]["nodes"] if n["name"] != "node3"]
    return write_inventory(workdir, data, "two-nodes.yaml")


def sha256s(lab_ssh: Any, host: str) -> dict[str, str]:
    out = lab_ssh(host, "sudo sha256sum " + " ".join(MANAGED)).stdout
    return {line.split()[1]: line.split()[0] for line in out.splitlines()}


# --- refusals before anything changes -------------------------------------------------


@pytest.fixture(scope="module")
def pristine(lab: Any, lab_ssh: Any) -> dict[str, dict[str, str]]:
    return {p.name: sha256s(lab_ssh, p.name) for p in lab.peers}


def assert_unchanged(lab: Any, lab_ssh: Any, before: dict[str, dict[str, str]]) -> None:
    assert {p.name: sha256s(lab_ssh, p.name) for p in lab.peers} == before


def test_unknown_host_key_is_refused_and_nothing_changes(
    lab: Any, lab_ssh: Any, base: dict, workdir: Path, pristine: dict
) -> None:
    empty = workdir / "empty_known_hosts"
    empty.write_text("")
    inv = write_inventory(
        workdir, {**base, "ssh": {**base["ssh"], "known_hosts": str(empty)}}, "unknown-key.yaml"
    )
    result = edgekit("deploy", "-i", str(inv), "--yes")
    assert result.returncode == 1
    line = one_line_error(result)
    assert "proxy1" in line and "is not in" in line and "known_hosts" in line
    assert_unchanged(lab, lab_ssh, pristine)


def test_refused_ssh_is_one_line_naming_the_host(
    lab: Any, lab_ssh: Any, base: dict, workdir: Path, pristine: dict
) -> None:
    inv = write_inventory(workdir, {**base, "ssh": {**base["ssh"], "port": 2222}}, "refused.yaml")
    result = edgekit("deploy", "-i", str(inv), "--yes")
    assert result.returncode == 1
    line = one_line_error(result)
    assert "proxy1" in line and "connection refused" in line
    assert_unchanged(lab, lab_ssh, pristine)


def test_wrong_user_is_one_line_naming_the_host(
    lab: Any, lab_ssh: Any, base: dict, workdir: Path, pristine: dict
) -> None:
    inv = write_inventory(
        workdir, {**base, "ssh": {**base["ssh"], "user": "nobody-here"}}, "wrong-user.yaml"
    )
    result = edgekit("deploy", "-i", str(inv), "--yes")
    assert result.returncode == 1
    line = one_line_error(result)
    assert "proxy1" in line and "authentication failed" in line and "nobody-here" in line
    assert_unchanged(lab, lab_ssh, pristine)


def test_missing_sudo_is_one_line_naming_the_host(
    lab: Any, lab_ssh: Any, base: dict, workdir: Path, pristine: dict
) -> None:
    # A user that may log in with the lab key but has no sudo rights.
    for p in lab.peers:
        r = lab_ssh(
            p.name,
            "id nosudo >/dev/null 2>&1 || { sudo useradd -m -s /bin/sh nosudo"
            " && sudo install -d -o nosudo -m 700 /home/nosudo/.ssh && sudo install"
            " -o nosudo -m 600 ~/.ssh/authorized_keys /home/nosudo/.ssh/; }",
        )
        assert r.returncode == 0, r.stderr
    inv = write_inventory(
        workdir, {**base, "ssh": {**base["ssh"], "user": "nosudo"}}, "nosudo.yaml"
    )
    result = edgekit("deploy", "-i", str(inv), "--yes")
    assert result.returncode == 1
    line = one_line_error(result)
    assert "proxy1" in line and "cannot run sudo" in line
    assert_unchanged(lab, lab_ssh, pristine)


# --- converge, converge again ---------------------------------------------------------


def test_dry_run_shows_pending_changes_with_exit_3(
    lab: Any, lab_ssh: Any, two_nodes: Path, pristine: dict
) -> None:
    result = edgekit("deploy", "-i", str(two_nodes), "--dry-run")
    assert result.returncode == 3, result.stderr
    assert "+++ /etc/haproxy/haproxy.cfg (rendered)" in result.stdout
    password = Path(lab.stats_password_file).read_text().strip()
    assert password not in result.stdout + result.stderr
    assert "EDGEKIT_STATS_PASSWORD=********" in result.stdout
    assert_unchanged(lab, lab_ssh, pristine)


def test_first_deploy_gives_one_holder_and_traffic_through_the_vip(
    lab: Any, lab_ssh: Any, two_nodes: Path
) -> None:
    result = edgekit("deploy", "-i", str(two_nodes), "--yes", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["vip_holders"][lab.vip] in (["proxy1"], ["proxy2"])
    body = urllib.request.urlopen(f"http://{lab.vip}/", timeout=3).read().decode()
    assert body.strip() in ("node1", "node2")
    hashes = [sha256s(lab_ssh, p.name) for p in lab.peers]
    assert len(hashes[0]) == 2 and all(h == hashes[0] for h in hashes)


def haproxy_pids(lab_ssh: Any, host: str) -> list[str]:
    return sorted(lab_ssh(host, "pgrep -x haproxy").stdout.split())


def test_second_deploy_changes_and_reloads_nothing(lab: Any, lab_ssh: Any, two_nodes: Path) -> None:
    before = {p.name: haproxy_pids(lab_ssh, p.name) for p in lab.peers}
    assert all(len(v) >= 2 for v in before.values())  # master and worker
    result = edgekit("deploy", "-i", str(two_nodes), "--yes")
    assert result.returncode == 0, result.stderr
    assert "no changes" in result.stderr
    assert {p.name: haproxy_pids(lab_ssh, p.name) for p in lab.peers} == before
    assert edgekit("deploy", "-i", str(two_nodes), "--dry-run").returncode == 0


def test_status_is_healthy_after_deploy(two_nodes: Path) -> None:
    result = edgekit("status", "-i", str(two_nodes), "--json")
    assert result.returncode == 0, result.stdout
    data = json.loads(result.stdout)
    assert data["healthy"] and data["verdict"] == "healthy"
    assert all(s == "UP" for p in data["peers"] for b in p["servers"].values() for s in b.values())


# --- change under traffic -------------------------------------------------------------


def test_backend_change_under_traffic_fails_no_request(
    lab: Any, lab_ssh: Any, base: dict, workdir: Path
) -> None:
    three = write_inventory(workdir, base, "three-nodes.yaml")
    prober = Prober([Target("http", lab.vip, 80, http=True)], interval=0.04, timeout=1.0).start()
    time.sleep(1.0)
    result = edgekit("deploy", "-i", str(three), "--yes")
    time.sleep(1.0)
    probes = prober.stop()
    assert result.returncode == 0, result.stderr
    assert "systemctl reload haproxy" in result.stderr
    assert "systemctl reload keepalived" not in result.stderr
    assert "restart" not in result.stderr
    duration = probes[-1].t - probes[0].t
    assert len(probes) / duration >= 20
    assert [p for p in probes if not p.ok] == []
    served = {
        urllib.request.urlopen(f"http://{lab.vip}/", timeout=3).read().decode().strip()
        for _ in range(12)
    }
    assert "node3" in served


def test_change_failing_validation_keeps_old_files_and_stops(
    lab: Any, lab_ssh: Any, base: dict, workdir: Path
) -> None:
    before = {p.name: sha256s(lab_ssh, p.name) for p in lab.peers}
    data = json.loads(json.dumps(base))
    data["services"][0]["haproxy_options"] = ["no-such-haproxy-keyword on"]
    bad = write_inventory(workdir, data, "bad-option.yaml")
    result = edgekit("deploy", "-i", str(bad), "--yes")
    assert result.returncode == 1
    line = one_line_error(result)
    assert "validation failed" in line and "haproxy -c" in line
    failed = line.split(":")[1].strip()
    assert failed in ("proxy1", "proxy2")
    assert {p.name: sha256s(lab_ssh, p.name) for p in lab.peers} == before
    # The rollout stopped at the failing host: no other host was applied after it.
    assert result.stderr.count(": applying") == 1


# --- status: drift and split brain ----------------------------------------------------


def test_status_reports_drift_when_a_live_file_is_edited(
    lab: Any, lab_ssh: Any, base: dict, workdir: Path
) -> None:
    inv = write_inventory(workdir, base, "three-nodes.yaml")
    lab_ssh("proxy2", "echo '# hand edit' | sudo tee -a /etc/haproxy/haproxy.cfg >/dev/null")
    try:
        result = edgekit("status", "-i", str(inv))
        assert result.returncode == 1
        assert "drift on proxy2: /etc/haproxy/haproxy.cfg" in result.stdout
    finally:
        assert edgekit("deploy", "-i", str(inv), "--yes").returncode == 0
    assert edgekit("status", "-i", str(inv)).returncode == 0


def test_status_reports_split_brain_when_the_vip_is_on_two_peers(
    lab: Any, lab_ssh: Any, base: dict, workdir: Path
) -> None:
    inv = write_inventory(workdir, base, "three-nodes.yaml")
    data = json.loads(edgekit("status", "-i", str(inv), "--json").stdout)
    holder = data["vip_holders"][lab.vip][0]
    other = next(p.name for p in lab.peers if p.name != holder)
    lab_ssh(other, f"sudo ip addr add {lab.vip}/24 dev eth1")
    try:
        result = edgekit("status", "-i", str(inv), "--json")
        assert result.returncode == 1
        problems = json.loads(result.stdout)["problems"]
        assert f"split brain: VIP {lab.vip} on proxy1, proxy2" in problems
    finally:
        lab_ssh(other, f"sudo ip addr del {lab.vip}/24 dev eth1")


# --- failover -------------------------------------------------------------------------


def test_every_failover_scenario_passes_with_the_default_config(
    lab: Any, base: dict, workdir: Path, tmp_path: Path
) -> None:
    # A copy of the lab's inventory elsewhere: the lab is known by the marker it wrote
    # into the file, not by the path, so host-down still gets the lab's power control.
    inv = tmp_path / "copy-of-the-lab.yaml"
    inv.write_text(Path(lab.inventory).read_text())
    assert edgekit("deploy", "-i", str(inv), "--yes").returncode == 0
    result = edgekit(
        "failover-test", "-i", str(inv), "--json", "--report", str(tmp_path / "report"), timeout=600
    )
    data = json.loads(result.stdout)
    names = [s["name"] for s in data["scenarios"]]
    assert names == default_scenarios()
    for s in data["scenarios"]:
        assert s["passed"], {
            k: s[k]
            for k in (
                "name",
                "outage_s",
                "vip_move_s",
                "holder",
                "split_brain_s",
                "recovered",
                "error",
            )
        }
        assert s["outage_s"] <= s["budget_s"] and s["recovered"]
        assert not s["lasting_split_brain"]
        assert s["total_probes"] >= 20 * 3  # >= 20 probes a second over several seconds
    assert data["passed"] and data["skipped"] == [] and result.returncode == 0
    assert (tmp_path / "report" / "results.json").is_file()
    (svg_file,) = (tmp_path / "report").glob("host-down.proxy*.svg")  # one run: one VIP
    svg = svg_file.read_text()
    assert "<svg" in svg and "fault" in svg and "restore" in svg


def test_no_spurious_failover_with_both_cores_saturated_for_60s(lab: Any) -> None:
    need_program("stress-ng")
    loaded = load_inventory(lab.inventory)
    hosts = peer_hosts(loaded)
    watcher = OwnershipWatcher(hosts, lab.vip).start()
    prober = Prober([Target("http", lab.vip, 80, http=True)]).start()
    try:
        time.sleep(2)
        # Both of the machine's cores: the proxies are containers on it.
        stress = subprocess.run(
            ["stress-ng", "--cpu", str(os.cpu_count() or 2), "--timeout", "60s", "--quiet"],
            timeout=120,
            check=False,
        )
        assert stress.returncode == 0
        time.sleep(1)
    finally:
        probes = prober.stop()
        samples = watcher.stop()
        close_all(hosts)
    timeline = holder_timeline(samples, [p.name for p in lab.peers])
    assert timeline and all(len(h) == 1 for _, h in timeline[len(timeline) // 50 :])
    assert transitions(timeline[len(timeline) // 50 :]) == 0
    assert [p for p in probes if not p.ok] == []
