"""The exporter's pure logic, the rendered monitoring files, and (with promtool) the
alert rules. No root, no network."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgekit import monitoring, render
from edgekit.deploy.apply import service_actions
from edgekit.deploy.plan import plan_host
from edgekit.facts import UNITS, HostFacts, LiveFile
from edgekit.inventory import load_inventory
from edgekit.monitoring import exporter
from edgekit.monitoring.dashboard import dashboard as build_dashboard
from edgekit.monitoring.dashboard import metrics_queried
from edgekit.monitoring.exporter import Config, Instance, KeepalivedInstance, Sample
from tests.cli import run
from tests.conftest import need_program

DATA = Path(__file__).resolve().parents[1] / "data"
EXAMPLE = DATA / "good" / "issue-example.yaml"
ACTIVE = DATA / "good" / "active-active.yaml"

CONFIG = Config(
    "boston-edge",
    [
        Instance("VI_51", 51, "10.10.0.100", "proxy1"),
        Instance("VI_52", 52, "10.10.0.101", "proxy2"),
    ],
)

# What keepalived 2.2.7 writes on its JSON signal (trimmed to the keys read).
KEEPALIVED_JSON = json.dumps(
    [
        {
            "data": {"iname": "VI_51", "state": 2, "priority": 150, "effective_priority": 150},
            "stats": {"become_master": 3, "release_master": 2, "advert_rcvd": 10},
        },
        {
            "data": {"iname": "VI_52", "state": 1, "priority": 140, "effective_priority": 140},
            "stats": {"become_master": 0, "release_master": 0},
        },
    ]
)

IP_ADDR = json.dumps(
    [
        {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
        {
            "ifname": "eth0",
            "addr_info": [
                {"family": "inet", "local": "10.10.0.11", "prefixlen": 24},
                {"family": "inet", "local": "10.10.0.100", "prefixlen": 24},
            ],
        },
    ]
)

HASH_A = "a" * 64
HASH_B = "b" * 64


@pytest.fixture(autouse=True)
def _secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", "Zq8-vLm3pRt7xW")


def healthy_master() -> Sample:
    return Sample(
        "proxy1",
        keepalived_up=True,
        records={"VI_51": "MASTER", "VI_52": "BACKUP"},
        keepalived=exporter.parse_keepalived_json(KEEPALIVED_JSON),
        addresses=exporter.parse_addresses(IP_ADDR),
        haproxy_down="0\n",
        applied="deploy-1 2026-12-03T07:00:00Z\n",
        haproxy_cfg_sha256=HASH_A,
        keepalived_conf_sha256=HASH_B,
    )


def samples(text: str) -> dict[str, float]:
    """Exposition text -> {'name{labels}': value}; fails on a malformed line."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) edgekit_\w+ .+", line), line
            continue
        match = re.fullmatch(r'(edgekit_\w+\{(?:\w+="[^"]*",?)*\}) (-?[0-9.e+]+)', line)
        assert match, line
        out[match.group(1)] = float(match.group(2))
    return out


def value(metrics: dict[str, float], name: str, **labels: object) -> float:
    found = [
        v
        for key, v in metrics.items()
        if key.startswith(name + "{") and all(f'{k}="{val}"' in key for k, val in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_keepalived_json_gives_priority_and_master_transitions() -> None:
    parsed = exporter.parse_keepalived_json(KEEPALIVED_JSON)
    assert parsed["VI_51"] == KeepalivedInstance(
        state=2, priority=150, become_master=3, release_master=2
    )
    assert parsed["VI_52"].priority == 140


def test_addresses_are_every_ipv4_address_of_every_interface() -> None:
    assert exporter.parse_addresses(IP_ADDR) == {"127.0.0.1", "10.10.0.11", "10.10.0.100"}
    assert exporter.parse_addresses("") == set()


def test_a_master_holding_its_vip_reports_state_2_and_held_1() -> None:
    m = samples(exporter.format_metrics(CONFIG, healthy_master()))
    assert value(m, "edgekit_vrrp_state", vrrp_instance="VI_51", vip="10.10.0.100") == 2
    assert value(m, "edgekit_vrrp_state", vrrp_instance="VI_52") == 1
    assert value(m, "edgekit_vip_held", vip="10.10.0.100", peer="proxy1") == 1
    assert value(m, "edgekit_vip_held", vip="10.10.0.101") == 0
    assert value(m, "edgekit_vrrp_priority", vrid="51") == 150
    assert value(m, "edgekit_vrrp_transitions_total", vrid="51") == 5
    assert value(m, "edgekit_vip_preferred", vrid="51") == 1
    assert value(m, "edgekit_vip_preferred", vrid="52") == 0
    assert value(m, "edgekit_haproxy_up") == 1
    assert value(m, "edgekit_keepalived_up", cluster="boston-edge") == 1
    assert value(m, "edgekit_config_info", haproxy_cfg_sha256=HASH_A) == 1
    assert value(m, "edgekit_deploy_pending") == 0
    applied = datetime(2026, 12, 3, 7, 0, tzinfo=UTC).timestamp()
    assert value(m, "edgekit_config_applied_timestamp_seconds", deploy_id="deploy-1") == applied


def test_fault_and_stopped_keepalived_are_3_and_4() -> None:
    sample = healthy_master()
    sample.records["VI_51"] = "FAULT"
    m = samples(exporter.format_metrics(CONFIG, sample))
    assert value(m, "edgekit_vrrp_state", vrid="51") == 3
    # A record a killed keepalived left behind says MASTER: keepalived's process decides.
    stopped = healthy_master()
    stopped.keepalived_up = False
    m = samples(exporter.format_metrics(CONFIG, stopped))
    assert value(m, "edgekit_vrrp_state", vrid="51") == 4
    assert value(m, "edgekit_keepalived_up") == 0
    assert value(m, "edgekit_keepalived_json_ok") == 0
    assert not [k for k in m if k.startswith(("edgekit_vrrp_priority", "edgekit_vrrp_trans"))]


def test_no_record_yet_is_init_and_no_dump_means_no_priority() -> None:
    sample = healthy_master()
    sample.records = {}
    sample.keepalived = None
    m = samples(exporter.format_metrics(CONFIG, sample))
    assert value(m, "edgekit_vrrp_state", vrid="52") == 0
    assert value(m, "edgekit_keepalived_json_ok") == 0
    assert not [k for k in m if k.startswith("edgekit_vrrp_priority")]


def test_haproxy_down_file_and_pending_mark_show() -> None:
    sample = healthy_master()
    sample.haproxy_down = "1\n"
    sample.pending = "deploy-2 haproxy\n"
    m = samples(exporter.format_metrics(CONFIG, sample))
    assert value(m, "edgekit_haproxy_up") == 0
    assert value(m, "edgekit_deploy_pending") == 1


def test_the_drain_mark_shows_as_edgekit_drained() -> None:
    sample = healthy_master()
    assert value(samples(exporter.format_metrics(CONFIG, sample)), "edgekit_drained") == 0
    for text, want in (("1\n", 1), ("0\n", 0), ("", 0), ("junk", 0)):
        sample.drained = text
        m = samples(exporter.format_metrics(CONFIG, sample))
        assert value(m, "edgekit_drained", peer="proxy1") == want, text
    # The exporter reads the file keepalived tracks for the drain.
    from edgekit import monitoring, render

    assert f"{monitoring.DEPLOY_DIR}/drained" == render.DRAIN_FILE


def test_label_values_are_escaped() -> None:
    sample = healthy_master()
    sample.peer = 'x"y\\z'
    text = exporter.format_metrics(CONFIG, sample)
    assert 'peer="x\\"y\\\\z"' in text


def test_each_family_has_one_help_and_type_before_its_samples() -> None:
    text = exporter.format_metrics(CONFIG, healthy_master())
    names = re.findall(r"^# TYPE (\S+) (gauge|counter)$", text, re.M)
    assert len(names) == len({n for n, _ in names})
    assert ("edgekit_vrrp_transitions_total", "counter") in names


def test_own_hash_reads_the_header_of_edgekits_files() -> None:
    loaded = load_inventory(EXAMPLE)
    files = {f.path: f for f in render.render_all(loaded)["proxy1"]}
    for path in (render.HAPROXY_CFG, render.KEEPALIVED_CONF):
        digest = exporter.own_hash(files[path].content)
        assert re.fullmatch("[0-9a-f]{64}", digest)
        assert f"sha256:{digest}" in files[path].content.splitlines()[1]
    assert exporter.own_hash(None) == "" and exporter.own_hash("no header") == ""


def test_the_rendered_config_names_every_vip_with_its_instance() -> None:
    loaded = load_inventory(ACTIVE)
    files = {f.path: f for f in render.render_all(loaded)["proxy1"]}
    config = exporter.parse_config(files[monitoring.CONFIG_PATH].content)
    assert config.cluster == loaded.inventory.cluster
    assert [(i.name, i.vrid, i.vip, i.preferred) for i in config.instances] == [
        (f"VI_{v.vrid}", v.vrid, str(v.address.ip), v.preferred) for v in loaded.inventory.vips
    ]
    # The installed program is this module, verbatim.
    assert files[monitoring.EXPORTER_PATH].content == Path(exporter.__file__).read_text()


def test_the_stats_frontend_routes_the_exporter_path_behind_its_password() -> None:
    loaded = load_inventory(EXAMPLE)
    cfg = {f.path: f for f in render.render_all(loaded)["proxy1"]}[render.HAPROXY_CFG].content
    stats = cfg.split("frontend stats", 1)[1].split("\nbackend ", 1)[0]
    auth = stats.index("http-request auth")
    route = stats.index(f"use_backend edgekit_exporter if {{ path {exporter.METRICS_PATH} }}")
    assert auth < route
    assert f"server exporter abns@{exporter.SOCKET_NAME}" in cfg


def test_exporter_unit_follows_haproxy() -> None:
    loaded = load_inventory(EXAMPLE)
    files = {f.path: f for f in render.render_all(loaded)["proxy1"]}
    unit = files[monitoring.UNIT_PATH].content
    assert "PartOf=haproxy.service" in unit and "ReloadPropagatedFrom=haproxy.service" in unit
    assert f"ExecStart=/usr/bin/python3 {monitoring.EXPORTER_PATH} " in unit
    assert "Upholds=edgekit-exporter.service" in files[monitoring.HAPROXY_DROPIN].content
    # A new exporter takes effect through haproxy's (seamless) reload; nothing restarts.
    assert files[monitoring.EXPORTER_PATH].service == "haproxy"


# --- alert rules: promtool check rules / test rules on the rendered file -------------------

C = "boston-edge"
VIP = "10.10.0.100"
P1, P2 = "proxy1", "proxy2"


def _vrrp(peer: str) -> dict[str, str]:
    return {"cluster": C, "peer": peer, "vip": VIP, "vrid": "51", "vrrp_instance": "VI_51"}


def _peer(peer: str) -> dict[str, str]:
    return {"cluster": C, "peer": peer}


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def healthy(override: dict[str, str] | None = None, minutes: int = 30) -> list[dict[str, str]]:
    """A healthy pair for `minutes` (one sample a minute): proxy1 MASTER holding the VIP
    it prefers, proxy2 BACKUP. `override` replaces series values: 'name@peer' -> values."""
    n = f"x{minutes}"
    override = dict(override or {})
    base: dict[str, tuple[str, dict[str, str], str]] = {}
    for peer, state, held, pref in ((P1, "2", "1", "1"), (P2, "1", "0", "0")):
        target = {
            **_peer(peer),
            "job": monitoring.JOB,
            "instance": f"10.10.0.1{peer[-1]}:8404",
        }
        hap = {**_peer(peer), "job": monitoring.HAPROXY_JOB, "proxy": "http"}
        base[f"edgekit_vrrp_state@{peer}"] = ("edgekit_vrrp_state", _vrrp(peer), f"{state}+0{n}")
        base[f"edgekit_vip_held@{peer}"] = ("edgekit_vip_held", _vrrp(peer), f"{held}+0{n}")
        base[f"edgekit_vip_preferred@{peer}"] = (
            "edgekit_vip_preferred",
            _vrrp(peer),
            f"{pref}+0{n}",
        )
        base[f"edgekit_vrrp_transitions_total@{peer}"] = (
            "edgekit_vrrp_transitions_total",
            _vrrp(peer),
            f"1+0{n}",
        )
        for name in ("edgekit_keepalived_up", "edgekit_haproxy_up"):
            base[f"{name}@{peer}"] = (name, _peer(peer), f"1+0{n}")
        base[f"edgekit_deploy_pending@{peer}"] = ("edgekit_deploy_pending", _peer(peer), f"0+0{n}")
        base[f"edgekit_config_info@{peer}"] = (
            "edgekit_config_info",
            {**_peer(peer), "haproxy_cfg_sha256": HASH_A, "keepalived_conf_sha256": HASH_B},
            f"1+0{n}",
        )
        base[f"up@{peer}"] = ("up", target, f"1+0{n}")
        base[f"haproxy_server_status@{peer}"] = (
            "haproxy_server_status",
            {**hap, "server": "node1", "state": "DOWN"},
            f"0+0{n}",
        )
        base[f"haproxy_backend_active_servers@{peer}"] = (
            "haproxy_backend_active_servers",
            hap,
            f"3+0{n}",
        )
        base[f"haproxy_backend_backup_servers@{peer}"] = (
            "haproxy_backend_backup_servers",
            hap,
            f"0+0{n}",
        )
    out = []
    for key, (name, labels, values) in base.items():
        if key in override:
            values = override.pop(key)
        if key.startswith("edgekit_config_info@") and f"hash@{key[-6:]}" in override:
            labels = {**labels, "haproxy_cfg_sha256": override.pop(f"hash@{key[-6:]}")}
        out.append(_series(name, labels, values))
    assert not override, f"unknown series {override}"
    return out


def _expand(template: str, labels: dict[str, str], value: str) -> str:
    def sub(m: re.Match[str]) -> str:
        return value if m.group(1) == "$value" else labels[m.group(1).split(".", 1)[1]]

    return re.sub(r"\{\{ (\$value|\$labels\.\w+) \}\}", sub, template)


# alert -> (input overrides, minute it is checked, labels it fires with (None: quiet),
# its $value). One row fires, the next, close to it, stays quiet.
ALERT_CASES: list[tuple[str, str, dict[str, str], int, dict[str, str] | None, str]] = [
    (
        "no holder",
        "EdgekitVipNoHolder",
        {"edgekit_vip_held@proxy1": "1 1 0+0x10"},
        5,
        {"cluster": C, "vip": VIP},
        "0",
    ),
    (
        "a takeover's gap",
        "EdgekitVipNoHolder",
        {"edgekit_vip_held@proxy1": "1 0 1+0x10"},
        1,
        None,
        "",
    ),
    (
        "two holders",
        "EdgekitVipSplitBrain",
        {"edgekit_vip_held@proxy2": "0 1+0x10"},
        5,
        {"cluster": C, "vip": VIP},
        "2",
    ),
    (
        "not on its preferred peer for 10 minutes",
        "EdgekitVipNotOnPreferredPeer",
        {
            "edgekit_vip_held@proxy1": "0+0x30",
            "edgekit_vip_held@proxy2": "1+0x30",
            "edgekit_vrrp_state@proxy1": "1+0x30",
            "edgekit_vrrp_state@proxy2": "2+0x30",
        },
        12,
        {**_vrrp(P1)},
        "1",
    ),
    (
        "not on its preferred peer for 5 minutes",
        "EdgekitVipNotOnPreferredPeer",
        {
            "edgekit_vip_held@proxy1": "0+0x30",
            "edgekit_vip_held@proxy2": "1+0x30",
            "edgekit_vrrp_state@proxy1": "1+0x30",
            "edgekit_vrrp_state@proxy2": "2+0x30",
        },
        5,
        None,
        "",
    ),
    (
        "preferred peer in FAULT (it could not take the VIP)",
        "EdgekitVipNotOnPreferredPeer",
        {
            "edgekit_vip_held@proxy1": "0+0x30",
            "edgekit_vip_held@proxy2": "1+0x30",
            "edgekit_vrrp_state@proxy1": "3+0x30",
            "edgekit_vrrp_state@proxy2": "2+0x30",
        },
        12,
        None,
        "",
    ),
    (
        "a peer in FAULT",
        "EdgekitVrrpFault",
        {"edgekit_vrrp_state@proxy1": "2 3+0x10"},
        3,
        _vrrp(P1),
        "3",
    ),
    (
        "keepalived stopped",
        "EdgekitKeepalivedDown",
        {"edgekit_keepalived_up@proxy2": "1 0+0x10"},
        3,
        _peer(P2),
        "0",
    ),
    (
        "flapping",
        "EdgekitVrrpFlapping",
        {
            "edgekit_vrrp_transitions_total@proxy1": "0+1x30",
            "edgekit_vrrp_transitions_total@proxy2": "0+1x30",
        },
        20,
        {"cluster": C, "vip": VIP},
        "",
    ),
    (
        "one failover",
        "EdgekitVrrpFlapping",
        {
            "edgekit_vrrp_transitions_total@proxy1": "1 1 2+0x20",
            "edgekit_vrrp_transitions_total@proxy2": "0 0 1+0x20",
        },
        10,
        None,
        "",
    ),
    (
        "haproxy down (the scrape fails)",
        "EdgekitHaproxyDown",
        {"up@proxy1": "1 0+0x10"},
        3,
        {**_peer(P1), "job": monitoring.JOB, "instance": "10.10.0.11:8404"},
        "0",
    ),
    (
        "a backend server down",
        "EdgekitBackendServerDown",
        {"haproxy_server_status@proxy2": "0 1+0x10"},
        3,
        {
            **_peer(P2),
            "job": monitoring.HAPROXY_JOB,
            "proxy": "http",
            "server": "node1",
            "state": "DOWN",
        },
        "1",
    ),
    (
        "every server of a backend down",
        "EdgekitBackendDown",
        {"haproxy_backend_active_servers@proxy1": "3 0+0x10"},
        3,
        {**_peer(P1), "job": monitoring.HAPROXY_JOB, "proxy": "http"},
        "0",
    ),
    (
        "a backend with one server left",
        "EdgekitBackendDown",
        {"haproxy_backend_active_servers@proxy1": "3 1+0x10"},
        3,
        None,
        "",
    ),
    (
        "peers' configs differ for 20 minutes",
        "EdgekitConfigDrift",
        {"hash@proxy2": "c" * 64},
        20,
        {"cluster": C},
        "2",
    ),
    (
        "a deploy stopped before it finished",
        "EdgekitDeployPending",
        {"edgekit_deploy_pending@proxy2": "0 1+0x30"},
        20,
        _peer(P2),
        "1",
    ),
]


def _rendered_rules() -> str:
    loaded = load_inventory(EXAMPLE)
    return {f.path: f for f in monitoring.render_monitoring(loaded)}[f"/{monitoring.RULES}"].content


def _alerts(rules: str) -> dict[str, dict[str, Any]]:
    return {
        r["alert"]: r for g in yaml.safe_load(rules)["groups"] for r in g["rules"] if "alert" in r
    }


def test_promtool_accepts_the_rendered_rules(tmp_path: Path) -> None:
    need_program("promtool")
    rules = tmp_path / "edgekit-rules.yml"
    rules.write_text(_rendered_rules())
    result = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts(rules.read_text()))} rules found" in result.stdout


def test_every_alert_fires_when_it_should_and_stays_quiet_when_healthy(tmp_path: Path) -> None:
    need_program("promtool")
    text = _rendered_rules()
    alerts = _alerts(text)
    assert {row[1] for row in ALERT_CASES} == set(alerts), "a case per alert"
    (tmp_path / "edgekit-rules.yml").write_text(text)
    tests: list[dict[str, Any]] = [
        {  # a healthy pair: no alert at any time
            "name": "healthy",
            "interval": "1m",
            "input_series": healthy(),
            "alert_rule_test": [
                {"eval_time": f"{t}m", "alertname": name, "exp_alerts": []}
                for name in alerts
                for t in (1, 12, 29)
            ],
        }
    ]
    for name, alert, override, minute, labels, value in ALERT_CASES:
        expected = []
        if labels is not None:
            rule = alerts[alert]
            all_labels = {**labels, **rule["labels"]}
            expected = [
                {
                    "exp_labels": all_labels,
                    "exp_annotations": {
                        k: _expand(v, all_labels, value) for k, v in rule["annotations"].items()
                    },
                }
            ]
        tests.append(
            {
                "name": name,
                "interval": "1m",
                "input_series": healthy(override),
                "alert_rule_test": [
                    {"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": expected}
                ],
            }
        )
    suite = tmp_path / "edgekit-rules.test.yml"
    suite.write_text(yaml.safe_dump({"rule_files": ["edgekit-rules.yml"], "tests": tests}))
    result = subprocess.run(
        ["promtool", "test", "rules", str(suite)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_example_scrape_jobs_are_a_valid_prometheus_config(tmp_path: Path) -> None:
    need_program("promtool")
    loaded = load_inventory(EXAMPLE)
    files = {f.path: f for f in monitoring.render_monitoring(loaded)}
    jobs = yaml.safe_load(files[f"/{monitoring.SCRAPE}"].content)
    assert [j["job_name"] for j in jobs] == [monitoring.JOB, monitoring.HAPROXY_JOB]
    stats = loaded.inventory.stats
    for job in jobs:
        targets = [t for c in job["static_configs"] for t in c["targets"]]
        assert targets == [f"{p.address}:{stats.port}" for p in loaded.inventory.peers]
        job["basic_auth"]["password_file"] = str(tmp_path / "password")
    (tmp_path / "password").write_text("x\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": jobs, "rule_files": ["rules.yml"]}))
    (tmp_path / "rules.yml").write_text(_rendered_rules())
    result = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the Grafana dashboard ---------------------------------------------------------------


def test_the_dashboard_parses_and_queries_only_known_metrics() -> None:
    loaded = load_inventory(EXAMPLE)
    files = {f.path: f for f in monitoring.render_monitoring(loaded)}
    board = json.loads(files[f"/{monitoring.DASHBOARD}"].content)
    assert board["uid"] == "edgekit" and board["panels"]
    queried = metrics_queried(board)
    ours = {n for n in queried if n.startswith("edgekit_")}
    # Every edgekit_ metric it queries is one the exporter writes (the lab test checks
    # haproxy's against a real scrape).
    exposed = set(
        re.findall(r"^# TYPE (\S+)", exporter.format_metrics(CONFIG, healthy_master()), re.M)
    )
    assert ours and ours <= exposed, ours - exposed
    assert queried - ours, "haproxy's metrics too"
    titles = {p["title"] for p in board["panels"]}
    assert {"VIP holders", "VRRP state per peer", "Backend servers up"} <= titles
    for panel in board["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        ids = [t["refId"] for t in panel["targets"]]
        assert len(ids) == len(set(ids))


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule): a typo fails here."""
    need_program("promtool")
    board = build_dashboard("boston-edge")
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    rules = [
        {
            "record": f"edgekit:dashboard:{i}",
            "expr": e.replace("$__rate_interval", "1m").replace("$cluster", "x"),
        }
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- edgekit render -o DIR ----------------------------------------------------------------


def test_render_writes_the_monitoring_files_under_monitoring(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("render", "-i", str(EXAMPLE), "-o", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    base = out / monitoring.MONITORING_DIR
    for rel in (monitoring.RULES, monitoring.SCRAPE, monitoring.DASHBOARD, "README.md"):
        assert (base / rel).is_file(), rel
    yaml.safe_load((base / monitoring.RULES).read_text())
    json.loads((base / monitoring.DASHBOARD).read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["monitoring"]["dir"] == monitoring.MONITORING_DIR
    listed = {e["path"] for e in manifest["monitoring"]["files"]}
    assert listed == {
        f"/{monitoring.RULES}",
        f"/{monitoring.SCRAPE}",
        f"/{monitoring.DASHBOARD}",
        "/README.md",
    }
    # The exporter itself is one of each peer's files.
    assert (out / "proxy1" / monitoring.EXPORTER_PATH.lstrip("/")).is_file()
    assert json.loads(result.stdout)["monitoring"] == manifest["monitoring"]


def test_a_new_exporter_reloads_haproxy_and_nothing_else() -> None:
    loaded = load_inventory(EXAMPLE)
    files = render.render_all(loaded)["proxy1"]
    facts = HostFacts(
        os_id="debian",
        packages={"haproxy": True, "keepalived": True},
        units={u: ("active", "enabled") for u in UNITS},
    )
    facts.files = {f.path: LiveFile(f.path, f.content, f.mode, f.owner) for f in files}
    old = facts.files[monitoring.EXPORTER_PATH]
    facts.files[old.path] = LiveFile(old.path, "# an older exporter\n", old.mode, old.owner)
    plan = plan_host("proxy1", files, facts)
    assert plan.paths() == [monitoring.EXPORTER_PATH]
    assert service_actions(plan, facts.units) == ["systemctl reload haproxy"]
    # A first deploy of the exporter: the unit files need a daemon-reload, no restart;
    # exporter.json is filed under keepalived (what it is made of is keepalived.conf's
    # too, so later it never adds a reload): this once, keepalived reloads for it.
    for path in (monitoring.UNIT_PATH, monitoring.HAPROXY_DROPIN, monitoring.CONFIG_PATH):
        facts.files[path] = LiveFile(path, None)
    plan = plan_host("proxy1", files, facts)
    assert service_actions(plan, facts.units) == [
        "systemctl daemon-reload",
        "systemctl reload haproxy",
        "systemctl reload keepalived",
    ]
