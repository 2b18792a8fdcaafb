"""The exporter's pure logic, the rendered monitoring files, and (with promtool) the
alert rules. No root, no network."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgekit import monitoring, render
from edgekit.inventory import load_inventory
from edgekit.monitoring import exporter
from edgekit.monitoring.exporter import Config, Instance, KeepalivedInstance, Sample

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
