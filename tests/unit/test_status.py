"""Status verdicts from peer observations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgekit.inventory import load_inventory
from edgekit.status import PeerStatus, parse_show_stat, verdict

EXAMPLE = Path(__file__).parents[2] / "templates" / "edge.example.yaml"


@pytest.fixture()
def loaded(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", "Tr0ub4dor-and-3")
    return load_inventory(EXAMPLE)


def peer(name: str, vips: list[str], **kw: object) -> PeerStatus:
    base = dict(
        reachable=True,
        haproxy_up=True,
        keepalived_up=True,
        vrrp={"VI_51": "MASTER" if vips else "BACKUP"},
        vips=vips,
    )
    base.update(kw)
    return PeerStatus(name, **base)  # type: ignore[arg-type]


def test_one_holder_and_everything_up_is_healthy(loaded) -> None:  # type: ignore[no-untyped-def]
    holders, problems = verdict(loaded, [peer("proxy1", ["10.10.0.100"]), peer("proxy2", [])])
    assert holders == {"10.10.0.100": ["proxy1"]} and problems == []


def test_vip_on_two_peers_is_split_brain(loaded) -> None:  # type: ignore[no-untyped-def]
    _, problems = verdict(
        loaded, [peer("proxy1", ["10.10.0.100"]), peer("proxy2", ["10.10.0.100"])]
    )
    assert problems == ["split brain: VIP 10.10.0.100 on proxy1, proxy2"]


def test_vip_nowhere_is_no_holder(loaded) -> None:  # type: ignore[no-untyped-def]
    _, problems = verdict(loaded, [peer("proxy1", []), peer("proxy2", [])])
    assert problems == ["no holder for VIP 10.10.0.100"]


def test_drift_fault_and_down_services_are_reported(loaded) -> None:  # type: ignore[no-untyped-def]
    _, problems = verdict(
        loaded,
        [
            peer("proxy1", ["10.10.0.100"], drift=["/etc/haproxy/haproxy.cfg"]),
            peer("proxy2", [], haproxy_up=False, vrrp={"VI_51": "FAULT"}),
        ],
    )
    assert "drift on proxy1: /etc/haproxy/haproxy.cfg" in problems
    assert "proxy2: haproxy down" in problems
    assert "proxy2: VI_51 FAULT" in problems


def test_unreachable_peer_is_reported(loaded) -> None:  # type: ignore[no-untyped-def]
    _, problems = verdict(
        loaded,
        [peer("proxy1", ["10.10.0.100"]), PeerStatus("proxy2", reachable=False, error="refused")],
    )
    assert problems == ["proxy2 unreachable"]


def test_show_stat_csv_gives_server_states() -> None:
    text = (
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,"
        "eresp,wretr,wredis,status\n"
        "http,FRONTEND,,,0,0,,0,0,0,0,0,0,,,,,OPEN\n"
        "http,node1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP\n"
        "http,node2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN 1/2\n"
        "http,BACKEND,0,0,0,0,,0,0,0,0,0,,0,0,0,0,UP\n"
        "stats,FRONTEND,,,0,0,,0,0,0,0,0,0,,,,,OPEN\n"
    )
    assert parse_show_stat(text, {"http"}) == {"http": {"node1": "UP", "node2": "DOWN"}}


def test_env_not_leaked(loaded) -> None:  # type: ignore[no-untyped-def]
    assert os.environ["EDGEKIT_STATS_PASSWORD"] not in repr(loaded)
