"""End to end in the local lab: a real Prometheus (Debian's) on the lab bridge scrapes
edgekit's exporter and haproxy's on each proxy's own address, with the rendered scrape
jobs and alert rules; what it sees must match `edgekit status`, before and after
failover-test's haproxy-down scenario. Leaves the lab deployed, the VIP wherever the
failover put it."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgekit import monitoring
from edgekit.inventory import load_inventory
from edgekit.monitoring import exporter
from edgekit.monitoring.dashboard import dashboard, metrics_queried
from tests.conftest import need_program
from tests.e2e.cli import edgekit

pytestmark = pytest.mark.lab

STATE = {"BACKUP": 1, "MASTER": 2, "FAULT": 3}


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        qs = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=10) as resp:
            data = json.load(resp)
        assert data["status"] == "success", data
        return list(data["data"]["result"])

    def values(self, expr: str, by: str = "peer") -> dict[str, float]:
        return {r["metric"].get(by, ""): float(r["value"][1]) for r in self.query(expr)}

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as resp:
            return json.load(resp)["data"]

    def wait(self, expr: str, want: dict[str, float], timeout: float = 60) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        got: dict[str, float] = {}
        while time.monotonic() < deadline:
            got = self.values(expr)
            if got == want:
                return got
            time.sleep(0.5)
        raise AssertionError(f"{expr}: {got}, wanted {want}")


@pytest.fixture
def prometheus(lab: Any, tmp_path: Path) -> Any:
    need_program("prometheus")
    result = edgekit("deploy", "-i", str(lab.inventory), "--yes", timeout=600)
    assert result.returncode == 0, result.stderr
    loaded = load_inventory(lab.inventory)
    files = {f.path: f for f in monitoring.render_monitoring(loaded)}
    jobs = yaml.safe_load(files[f"/{monitoring.SCRAPE}"].content)
    for job in jobs:  # the rendered jobs, scraping every second
        job["basic_auth"]["password_file"] = str(lab.stats_password_file)
        job["scrape_interval"] = "1s"
        job["scrape_timeout"] = "1s"
    (tmp_path / "rules.yml").write_text(files[f"/{monitoring.RULES}"].content)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"evaluation_interval": "1s"},
                "scrape_configs": jobs,
                "rule_files": [str(tmp_path / "rules.yml")],
            }
        )
    )
    check = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # On the lab bridge only: the machine's own address there.
    listen = f"{lab.gateway}:{_free_port(lab.gateway)}"
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={listen}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        prom = Prometheus(f"http://{listen}")
        deadline = time.monotonic() + 30
        while True:
            try:
                prom.query("1")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                assert time.monotonic() < deadline, "Prometheus did not start"
                time.sleep(0.3)
        yield prom
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def status(lab: Any) -> dict[str, Any]:
    result = edgekit("status", "-i", str(lab.inventory), "--json", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)["peers"]}


def test_prometheus_sees_what_status_sees_and_the_haproxy_down_failover(
    lab: Any, prometheus: Prometheus
) -> None:
    peers = lab.peer_names
    # Without the stats password: 401, as the stats page.
    for peer in lab.peers:
        url = f"http://{peer.address}:{lab.stats_port}{exporter.METRICS_PATH}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401, peer.name
    up = prometheus.wait(f'up{{job="{monitoring.JOB}"}}', {p: 1.0 for p in peers})
    prometheus.wait(f'up{{job="{monitoring.HAPROXY_JOB}"}}', {p: 1.0 for p in peers})
    assert set(up) == set(peers)

    # The VRRP metrics say what `edgekit status` says.
    before = status(lab)
    state = prometheus.values("edgekit_vrrp_state")
    held = prometheus.values("edgekit_vip_held")
    for peer in peers:
        assert state[peer] == STATE[before[peer]["vrrp"]["VI_51"]], (peer, state, before)
        assert held[peer] == (1.0 if lab.vip in before[peer]["vips"] else 0.0)
    holders = [p for p in peers if held[p] == 1.0]
    assert len(holders) == 1, held
    old = holders[0]
    # keepalived's effective priorities: the lab's first peer 150, the second 140.
    assert prometheus.values("edgekit_vrrp_priority") == {peers[0]: 150.0, peers[1]: 140.0}
    assert set(prometheus.values("edgekit_keepalived_json_ok").values()) == {1.0}
    generations = prometheus.query(
        "count(count by (haproxy_cfg_sha256, keepalived_conf_sha256) (edgekit_config_info))"
    )
    assert float(generations[0]["value"][1]) == 1.0
    transitions_before = sum(prometheus.values("edgekit_vrrp_transitions_total").values())

    # Every metric the dashboard queries exists in the real scrapes.
    names = set(prometheus.get("/api/v1/label/__name__/values"))
    assert metrics_queried(dashboard(lab_cluster(lab))) <= names

    # The rules loaded, and a healthy lab fires none of them.
    groups = prometheus.get("/api/v1/rules")["groups"]
    assert {g["name"] for g in groups} == {"edgekit-vrrp", "edgekit-haproxy", "edgekit-config"}
    assert [r for g in groups for r in g["rules"] if r.get("state") == "firing"] == []

    result = edgekit(
        "failover-test", "-i", str(lab.inventory), "-s", "haproxy-down", "--json", timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr

    # The VIP moved, as Prometheus saw it, and keepalived counted the transitions.
    new = [p for p in peers if p != old]
    prometheus.wait("edgekit_vip_held == 1", {new[0]: 1.0})
    # haproxy is back on the old holder (failover-test restored it), and with it the
    # exporter it upholds.
    prometheus.wait(f'up{{job="{monitoring.JOB}"}}', {p: 1.0 for p in peers})
    after = status(lab)
    assert lab.vip in after[new[0]]["vips"] and lab.vip not in after[old]["vips"]
    deadline = time.monotonic() + 30
    while sum(prometheus.values("edgekit_vrrp_transitions_total").values()) <= transitions_before:
        assert time.monotonic() < deadline, "edgekit_vrrp_transitions_total did not increase"
        time.sleep(0.5)
    increase = prometheus.values("increase(edgekit_vrrp_transitions_total[5m])")
    assert increase[old] > 0 and increase[new[0]] > 0, increase
    # While haproxy was down the old holder's scrape failed (EdgekitHaproxyDown's
    # expression), and it held the VIP at some point in the window, the new one now.
    assert prometheus.values(f'min_over_time(up{{job="{monitoring.JOB}"}}[5m])')[old] == 0
    assert prometheus.values("max_over_time(edgekit_vip_held[5m])") == {p: 1.0 for p in peers}
    run = json.loads(result.stdout)["scenarios"][0]
    scrape = prometheus.values(f'scrape_duration_seconds{{job="{monitoring.JOB}"}}')
    print(  # the figures README's Monitoring section quotes (pytest -s)
        f"monitoring: holder {old} -> {new[0]}; transitions {transitions_before:g} -> "
        f"{sum(prometheus.values('edgekit_vrrp_transitions_total').values()):g}; "
        f"increase {increase}; failover outage_s {run['outage_s']}; "
        f"exporter scrape_s {max(scrape.values()):.3f}"
    )


def lab_cluster(lab: Any) -> str:
    return str(load_inventory(lab.inventory).inventory.cluster)
