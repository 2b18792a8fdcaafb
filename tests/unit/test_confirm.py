"""The commit-confirmed firewall load on a scripted host: confirmed over a new
connection, confirmed too late, timed out (the host restored itself), unreachable."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edgekit import deploy, firewall
from edgekit.deploy import confirm
from edgekit.remote import Result
from edgekit.remote.fake import FakeHost
from tests.unit import simhost
from tests.unit.test_rollout import FAST, INSTALL, RESTORE

LOAD = rf"systemctl reload-or-restart {firewall.UNIT}"
CANCEL = r"else echo cancelled; fi"
MARKER = rf"cat {confirm.ROLLED_BACK_MARKER}"
WINDOW, RECONNECT = 0.4, 0.2


def load(host: FakeHost) -> confirm.LoadOutcome:
    return confirm.load_confirmed(host, "true", lambda _m: None, window=WINDOW, reconnect=RECONNECT)


def cut_off_after_load(host: FakeHost, back_after: float | None) -> None:
    """The new ruleset cuts this machine off; the host's own timer restores the old one
    (and lets us in again) `back_after` seconds later, or never."""

    def cut(command: str) -> Result:
        host.set_reachable(False)
        if back_after is not None:
            threading.Timer(back_after, host.set_reachable, (True,)).start()
        return Result(command, 0, "", "")

    host.on(LOAD, respond=cut)


def test_a_firewall_confirmed_over_a_new_connection_is_kept() -> None:
    host = FakeHost("proxy1").on(CANCEL, stdout="cancelled\n")
    outcome = load(host)
    assert outcome.ok and not outcome.host_restored
    arm, cancel = host.index(r"systemd-run"), host.index(CANCEL)
    assert arm < host.index(LOAD) < cancel
    # Only a NEW connection may confirm: the old one survives any ruleset by conntrack.
    assert host.calls[cancel].connection > 0 and host.calls[arm].connection == 0


def test_a_firewall_that_fails_to_load_cancels_the_timer_at_once() -> None:
    host = FakeHost("proxy1").on(LOAD, exit_code=1, stderr="nft: syntax error")
    outcome = load(host)
    assert not outcome.ok and not outcome.host_restored and "syntax error" in outcome.reason
    assert host.ran(CANCEL)


def test_a_confirmation_after_the_host_restored_itself_says_so() -> None:
    host = FakeHost("proxy1").on(CANCEL, stdout="rolled back 2026-12-02T20:00:00Z\n")
    outcome = load(host)
    assert not outcome.ok and outcome.host_restored and "too late" in outcome.reason


def test_no_new_connection_leaves_the_host_to_restore_itself_then_reports_it() -> None:
    host = FakeHost("proxy1").on(MARKER, stdout="2026-12-02T20:00:00Z\n")
    cut_off_after_load(host, back_after=WINDOW)
    outcome = load(host)
    assert not outcome.ok and outcome.host_restored
    assert "restored its previous firewall and files by itself at 2026-12-02" in outcome.reason
    # Nothing was sent to the host while it was cut off: the cancel never got through.
    assert not host.ran(CANCEL)


def test_a_host_that_never_comes_back_is_reported_unreachable() -> None:
    host = FakeHost("proxy1")
    cut_off_after_load(host, back_after=None)
    outcome = load(host)
    assert not outcome.ok and outcome.host_restored and "still unreachable" in outcome.reason


def test_a_host_that_restored_itself_stops_the_rollout_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", simhost.PASSWORD)
    hosts = simhost.cluster()
    for host in hosts.values():
        host.on(CANCEL, stdout="cancelled\n")
    hosts["proxy2"].on(MARKER, stdout="2026-12-02T20:00:00Z\n")
    cut_off_after_load(hosts["proxy2"], back_after=FAST.firewall_window_s)
    loaded = simhost.inventory(tmp_path, firewall=True)
    plan = deploy.plan(loaded, dict(hosts))
    assert set(plan.firewall.values()) == {deploy.FirewallAction.LOAD}

    report = deploy.apply(plan, dict(hosts), timing=FAST, answers=lambda _a, _p: True)

    assert report.failed == "proxy2" and "by itself" in (report.error or "")
    # deploy does not touch that host again: no reload, no rollback of its own.
    after = hosts["proxy2"].commands()[hosts["proxy2"].index(LOAD) + 1 :]
    assert not any("systemctl reload haproxy" in c or RESTORE[1:] in c for c in after)
    assert not hosts["proxy3"].ran(INSTALL) and not hosts["proxy1"].ran(INSTALL)
