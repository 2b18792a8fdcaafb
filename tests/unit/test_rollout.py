"""deploy's rollout on scripted hosts (no root, no network): plan once, apply exactly
that plan, order, stop at the first failure, rollback, Ctrl-C, changed-since-plan."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from edgekit import deploy
from edgekit.deploy.apply import CHANGED_SINCE_PLAN, Timing
from edgekit.remote import HostError, Result, Transport
from edgekit.remote.fake import FakeHost
from tests.unit import simhost

FAST = Timing(health_s=0.2, verify_s=0.2, firewall_window_s=0.3, firewall_reconnect_s=0.2)
INSTALL = r"\.edgekit-new"  # the install script moves each new file into place
RESTORE = r"\.edgekit-old"  # the restore script puts the backed-up files back


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", simhost.PASSWORD)


def rollout(tmp_path: Path, hosts: Mapping[str, FakeHost], **kw: object) -> deploy.DeployReport:
    loaded = simhost.inventory(tmp_path, **kw)  # type: ignore[arg-type]
    transports: dict[str, Transport] = dict(hosts)
    plan = deploy.plan(loaded, transports)
    return deploy.apply(plan, transports, timing=FAST, answers=lambda _a, _p: True)


def record(hosts: Mapping[str, FakeHost], order: list[str]) -> None:
    """Append each host's name to `order` when its new files are moved into place."""
    for name, host in hosts.items():

        def install(cmd: str, name: str = name) -> Result:
            order.append(name)
            return Result(cmd, 0, "", "")

        host.on(INSTALL, respond=install)


def installed(host: FakeHost) -> bool:
    return host.ran(INSTALL)


def test_hosts_without_a_vip_go_first_and_the_holder_last(tmp_path: Path) -> None:
    order: list[str] = []
    hosts = simhost.cluster(holder="proxy1")
    record(hosts, order)

    report = rollout(tmp_path, hosts)

    assert order == ["proxy2", "proxy3", "proxy1"]
    assert report.error is None and report.applied == order


def test_a_joining_peer_starts_after_the_holder_knows_it(tmp_path: Path) -> None:
    # proxy2 is new (keepalived not running): started before the others list it as a
    # unicast peer, it would hear no adverts and take the VIP as well.
    order: list[str] = []
    hosts = simhost.cluster(holder="proxy1")
    joiner = simhost.facts_text("10.10.0.12", holds_vip=False, files={}, active="inactive")
    hosts["proxy2"].on(r"echo '@os'", stdout=joiner)
    record(hosts, order)
    rollout(tmp_path, hosts)
    assert order == ["proxy3", "proxy1", "proxy2"]


def test_the_holder_goes_last_wherever_it_is_in_the_inventory(tmp_path: Path) -> None:
    order: list[str] = []
    hosts = simhost.cluster(holder="proxy2")
    record(hosts, order)
    rollout(tmp_path, hosts)
    assert order == ["proxy1", "proxy3", "proxy2"]


def test_a_failed_reload_rolls_that_host_back_and_stops_the_rollout(tmp_path: Path) -> None:
    hosts = simhost.cluster()
    hosts["proxy2"].on(
        r"^systemctl (reload|restart) haproxy$",
        exit_code=1,
        stderr="Job for haproxy.service failed",
    )

    report = rollout(tmp_path, hosts)

    assert report.failed == "proxy2" and "failed" in (report.error or "")
    assert "previous files were restored" in (report.error or "")
    assert installed(hosts["proxy2"]) and hosts["proxy2"].ran(RESTORE)
    # The restore comes after the install, and the unit is brought back to the old files.
    assert hosts["proxy2"].index(RESTORE) > hosts["proxy2"].index(INSTALL)
    assert not installed(hosts["proxy3"]) and not installed(hosts["proxy1"])
    assert report.applied == []


def test_a_failed_health_wait_rolls_back_and_stops(tmp_path: Path) -> None:
    hosts = simhost.cluster()
    hosts["proxy3"].on(
        r"systemctl is-active -q haproxy && systemctl is-active -q keepalived", exit_code=1
    )

    report = rollout(tmp_path, hosts)

    assert report.failed == "proxy3" and "not healthy" in (report.error or "")
    assert hosts["proxy3"].ran(RESTORE)
    assert report.applied == ["proxy2"] and not installed(hosts["proxy1"])
    assert not hosts["proxy2"].ran(RESTORE)


def test_ctrl_c_during_a_reload_restores_that_host_and_goes_no_further(tmp_path: Path) -> None:
    hosts = simhost.cluster()

    def interrupt(_cmd: str) -> Result:
        raise KeyboardInterrupt

    hosts["proxy2"].on(r"^systemctl (reload|restart) keepalived$", respond=interrupt)

    with pytest.raises(KeyboardInterrupt):
        rollout(tmp_path, hosts)

    assert hosts["proxy2"].ran(RESTORE)
    assert not installed(hosts["proxy3"]) and not installed(hosts["proxy1"])
    # The staging directory (which holds the secrets) is removed even then.
    assert hosts["proxy2"].ran(r"rm -rf '?/run/edgekit-stage\.sim")


def test_a_validation_failure_changes_nothing_and_stops(tmp_path: Path) -> None:
    hosts = simhost.cluster()
    hosts["proxy2"].on(r"haproxy -c", exit_code=1, stderr="haproxy -c: [ALERT] bad")

    report = rollout(tmp_path, hosts)

    assert report.failed == "proxy2" and "validation failed" in (report.error or "")
    assert "nothing was changed" in (report.error or "")
    assert not installed(hosts["proxy2"]) and not hosts["proxy2"].ran(RESTORE)
    assert not installed(hosts["proxy3"])


def test_a_live_file_changed_since_the_plan_refuses_the_host_by_name(tmp_path: Path) -> None:
    hosts = simhost.cluster()
    hosts["proxy2"].on(
        INSTALL,
        exit_code=CHANGED_SINCE_PLAN,
        stderr="/etc/haproxy/haproxy.cfg changed on the host since the plan was made",
    )

    report = rollout(tmp_path, hosts)

    assert report.failed == "proxy2"
    assert "/etc/haproxy/haproxy.cfg changed on the host since the plan" in (report.error or "")
    assert not hosts["proxy2"].ran(RESTORE)  # nothing was installed, nothing to restore
    assert not installed(hosts["proxy3"])


def test_the_install_script_checks_every_planned_file_against_what_the_plan_read(
    tmp_path: Path,
) -> None:
    old = "global\n  # the live file the plan read\n"
    hosts = simhost.cluster()
    hosts["proxy2"] = simhost.proxy("proxy2", "10.10.0.12", files={"/etc/haproxy/haproxy.cfg": old})
    rollout(tmp_path, hosts)
    script = next(c for c in hosts["proxy2"].commands() if INSTALL[1:] in c)
    import hashlib

    assert hashlib.sha256(old.encode()).hexdigest() in script
    assert "absent" in script  # files the plan saw missing must still be missing


def test_apply_applies_the_plan_it_is_given_and_preflights_only_once(tmp_path: Path) -> None:
    hosts = simhost.cluster()
    loaded = simhost.inventory(tmp_path)
    plan = deploy.plan(loaded, dict(hosts))
    # Only proxy3's plan is kept: apply must touch nothing else and plan nothing again.
    plan.hosts = {"proxy3": plan.hosts["proxy3"]}
    deploy.apply(plan, dict(hosts), timing=FAST, answers=lambda _a, _p: True)

    assert installed(hosts["proxy3"])
    assert not installed(hosts["proxy1"]) and not installed(hosts["proxy2"])
    for host in hosts.values():
        # Preflight gathers the managed files; the verification after it gathers none.
        preflights = [c for c in host.commands() if re.search(r"set --.*keepalived\.conf", c)]
        assert len(preflights) == 1, host.name


def test_a_second_rollout_of_an_unchanged_plan_applies_nothing(tmp_path: Path) -> None:
    hosts = simhost.cluster()
    loaded = simhost.inventory(tmp_path)
    plan = deploy.plan(loaded, dict(hosts))
    for host_plan in plan.hosts.values():
        host_plan.changes.clear()
    report = deploy.apply(plan, dict(hosts), timing=FAST, answers=lambda _a, _p: True)
    assert not plan.pending and report.applied == []
    assert not any(installed(h) for h in hosts.values())


def test_an_unreachable_host_fails_preflight_before_any_host_changes(tmp_path: Path) -> None:
    hosts = simhost.cluster()
    hosts["proxy3"].set_reachable(False)
    with pytest.raises(HostError, match="proxy3"):
        deploy.plan(simhost.inventory(tmp_path), dict(hosts))
    assert not any(installed(h) for h in hosts.values())


def test_a_host_whose_nr_open_is_below_what_maxconn_needs_fails_preflight(
    tmp_path: Path,
) -> None:
    hosts = simhost.cluster()
    low = simhost.facts_text("10.10.0.12", holds_vip=False, files={}, nr_open=65536)
    hosts["proxy2"].on(r"echo '@os'", stdout=low)
    loaded = simhost.inventory(tmp_path, extra="haproxy: {maxconn: 100000}\n")
    with pytest.raises(HostError, match=r"proxy2.*fs\.nr_open") as err:
        deploy.plan(loaded, dict(hosts))
    assert "lower haproxy.maxconn to" in str(err.value)
    assert not any(installed(h) for h in hosts.values())
    # The same inventory is fine where the kernel allows enough files.
    assert deploy.plan(loaded, dict(simhost.cluster())).pending


def test_limit_names_an_unknown_peer_as_bad_input() -> None:
    from edgekit.errors import InputError

    with pytest.raises(InputError, match="no such peer: proxy9"):
        deploy.select(dict(simhost.cluster()), ["proxy1", "proxy9"])


def test_after_the_rollout_two_holders_fail_the_verification(tmp_path: Path) -> None:
    hosts = simhost.cluster(holder="proxy1")
    hosts["proxy2"] = simhost.proxy("proxy2", "10.10.0.12", holds_vip=True)
    report = rollout(tmp_path, hosts)
    assert report.error is not None and "has 2 holders" in report.error
