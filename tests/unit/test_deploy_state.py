"""What a deploy leaves on a host and on this machine, on scripted hosts (no root, no
network): locks, the pending and applied marks, leftovers of a stopped deploy, and the
convergence of a host whose units run older configs than the installed ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit import deploy
from edgekit.deploy import lock
from edgekit.deploy.apply import Timing
from edgekit.errors import OperationError
from edgekit.facts import APPLIED, BACKUP_ROOT, PENDING, parse_facts
from edgekit.remote import Result, Transport
from edgekit.remote.fake import FakeHost
from edgekit.status import cluster_status
from tests.unit import simhost

FAST = Timing(health_s=0.2, verify_s=0.2, firewall_window_s=0.3, firewall_reconnect_s=0.2)
INSTALL = r"\.edgekit-new"
RECORD = rf"> {APPLIED}\.new"  # the finish script after a healthy apply
ADDRESSES = {"proxy1": "10.10.0.11", "proxy2": "10.10.0.12", "proxy3": "10.10.0.13"}


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", simhost.PASSWORD)


def up_to_date(tmp_path: Path, **deploy_lines: list[str]) -> dict[str, FakeHost]:
    """Three proxies with every file current; `deploy_lines[name]`: that host's
    @deploy facts."""
    loaded = simhost.inventory(tmp_path)
    return {
        name: simhost.deployed(
            loaded, name, address, holds_vip=name == "proxy1", deploy=deploy_lines.get(name)
        )
        for name, address in ADDRESSES.items()
    }


def apply_all(tmp_path: Path, hosts: dict[str, FakeHost]) -> deploy.DeployReport:
    transports: dict[str, Transport] = dict(hosts)
    plan = deploy.plan(simhost.inventory(tmp_path), transports)
    return deploy.apply(plan, transports, timing=FAST, answers=lambda _a, _p: True)


def test_the_facts_script_reports_pending_marks_applied_and_leftovers() -> None:
    text = simhost.facts_text(
        "10.10.0.11",
        holds_vip=False,
        files={},
        deploy=[
            "pending 20261203T070000Z-99 haproxy keepalived",
            "applied 20261202T070000Z-12 2026-12-02T07:00:03Z",
            "haproxy_cfg_mtime 1000",
            "haproxy_started 990",
            "leftover /run/edgekit-stage.AbC",
        ],
    )
    facts = parse_facts(text)
    assert facts.pending_deploy == "20261203T070000Z-99"
    assert facts.pending_units == ["haproxy", "keepalived"]
    assert facts.applied.startswith("20261202T070000Z-12")
    assert facts.leftovers == ["/run/edgekit-stage.AbC"]
    assert facts.stale_units() == ["haproxy", "keepalived"]


@pytest.mark.parametrize(
    ("started", "stale"), [(999, ["haproxy"]), (1000, []), (1001, [])], ids=str
)
def test_a_haproxy_started_before_its_config_was_written_runs_an_older_config(
    started: int, stale: list[str]
) -> None:
    lines = ["haproxy_cfg_mtime 1000", f"haproxy_started {started}"]
    facts = parse_facts(simhost.facts_text("10.10.0.11", holds_vip=False, files={}, deploy=lines))
    assert facts.stale_units() == stale


def test_an_up_to_date_cluster_has_nothing_to_apply(tmp_path: Path) -> None:
    plan = deploy.plan(simhost.inventory(tmp_path), dict(up_to_date(tmp_path)))
    assert not plan.pending


def test_a_pending_mark_makes_the_next_deploy_reload_and_record_the_host(tmp_path: Path) -> None:
    # A deploy was killed after it installed proxy2's files, before it reloaded haproxy.
    hosts = up_to_date(tmp_path, proxy2=["pending 20261203T070000Z-99 haproxy"])
    plan = deploy.plan(simhost.inventory(tmp_path), dict(hosts))
    assert plan.pending and plan.stale("proxy2") == ["haproxy"]
    assert plan.order() == ["proxy2"]

    report = apply_all(tmp_path, hosts)

    assert report.error is None and report.applied == ["proxy2"]
    p2 = hosts["proxy2"]
    assert p2.ran(r"^systemctl reload haproxy$") and not p2.ran(INSTALL)
    # Recorded as applied only after the reload and the health wait.
    assert p2.index(r"^systemctl reload haproxy$") < p2.index(RECORD)
    assert p2.index(r"systemctl is-active -q haproxy") < p2.index(RECORD)
    for name in ("proxy1", "proxy3"):
        assert not hosts[name].ran(r"^systemctl (reload|restart)")


def test_status_says_which_unit_runs_an_older_config_and_what_was_left(tmp_path: Path) -> None:
    hosts = up_to_date(
        tmp_path,
        proxy2=["pending 20261203T070000Z-99 haproxy", "leftover /run/edgekit-stage.Zz9"],
    )
    status = cluster_status(simhost.inventory(tmp_path), dict(hosts))
    assert not status.healthy
    assert any(
        p.startswith("proxy2: haproxy runs an older config than /etc/haproxy/haproxy.cfg")
        for p in status.problems
    ), status.problems
    assert any("/run/edgekit-stage.Zz9" in p for p in status.problems)
    assert not any(p.startswith(("proxy1", "proxy3")) for p in status.problems)


def test_a_successful_apply_marks_pending_before_install_and_applied_after_health(
    tmp_path: Path,
) -> None:
    hosts = simhost.cluster()
    report = apply_all(tmp_path, hosts)
    assert report.error is None
    for host in hosts.values():
        install = next(c for c in host.commands() if ".edgekit-new" in c)
        assert install.index(PENDING) < install.index(".edgekit-new")
        assert host.index(r"systemctl is-active -q haproxy") < host.index(RECORD)
        # The per-deploy backup goes with the finish; leftovers are swept first.
        finish = host.commands()[host.index(RECORD)]
        assert f"rm -rf {BACKUP_ROOT}/" in finish and f"rm -f {PENDING}" in finish
        assert host.index(r"rm -rf \"\$d\"") < host.index(INSTALL)


def test_each_deploy_backs_up_into_its_own_directory(tmp_path: Path) -> None:
    hosts = simhost.cluster()
    apply_all(tmp_path, hosts)
    install = next(c for c in hosts["proxy2"].commands() if ".edgekit-new" in c)
    assert f"B={BACKUP_ROOT}/" in install and f"B={BACKUP_ROOT}\n" not in install


def test_a_failed_reload_clears_the_pending_mark_after_restoring(tmp_path: Path) -> None:
    hosts = simhost.cluster()
    hosts["proxy2"].on(r"^systemctl (reload|restart) haproxy$", exit_code=1, stderr="failed")
    report = apply_all(tmp_path, hosts)
    assert report.failed == "proxy2"
    p2 = hosts["proxy2"]
    assert not p2.ran(RECORD)
    finish = next(c for c in p2.commands() if f"rm -f {PENDING}" in c)
    assert p2.commands().index(finish) > p2.index(r"\.edgekit-old")


def test_a_host_locked_by_another_deploy_stops_the_rollout_before_any_change(
    tmp_path: Path,
) -> None:
    hosts = simhost.cluster()
    holder = "ops@ws2 pid 4242 since 2026-12-03T07:00:00Z"
    hosts["proxy3"].on(r"flock -n 9", exit_code=lock.BUSY_EXIT, stdout=f"busy {holder}\n")
    report = apply_all(tmp_path, hosts)
    assert report.failed == "proxy3"
    assert report.error == f"proxy3: another deploy holds the host's lock ({holder})" + (
        " (hint: wait for it to finish)"
    )
    assert not any(h.ran(INSTALL) for h in hosts.values())
    # The locks already taken were released.
    assert not hosts["proxy2"].shared.held


def test_every_host_lock_is_held_for_the_whole_apply_and_released_after(
    tmp_path: Path,
) -> None:
    hosts = simhost.cluster()
    seen: list[int] = []

    def count_held(cmd: str) -> Result:
        seen.append(sum(len(h.shared.held) for h in hosts.values()))
        return Result(cmd, 0, "", "")

    for host in hosts.values():
        host.on(INSTALL, respond=count_held)
    apply_all(tmp_path, hosts)
    assert seen == [3, 3, 3]
    assert not any(h.shared.held for h in hosts.values())
    assert all("ops" not in c for h in hosts.values() for c in h.shared.held)


def test_a_second_deploy_from_this_machine_names_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with lock.local_lock("edge-a"):
        with pytest.raises(OperationError) as err:
            with lock.local_lock("edge-a"):
                pass
        assert "another deploy of cluster edge-a is running on this machine" in str(err.value)
        assert "pid " in str(err.value) and "since " in str(err.value)
        with lock.local_lock("edge-b"):  # another cluster is another lock
            pass
    with lock.local_lock("edge-a"):  # released with the first
        pass


def test_a_pending_mark_after_a_reload_that_happened_only_records_the_host(
    tmp_path: Path,
) -> None:
    # Killed after haproxy reloaded (its newest process is newer than its config), before
    # the deploy recorded it: nothing runs an older config; the next deploy records it.
    lines = ["pending 20261203T070000Z-99 haproxy", "haproxy_cfg_mtime 1000"]
    hosts = up_to_date(tmp_path, proxy2=[*lines, "haproxy_started 1001"])
    plan = deploy.plan(simhost.inventory(tmp_path), dict(hosts))
    assert plan.stale("proxy2") == [] and plan.order() == ["proxy2"]
    report = apply_all(tmp_path, hosts)
    assert report.error is None
    assert hosts["proxy2"].ran(RECORD) and not hosts["proxy2"].ran(r"^systemctl reload")


def test_a_password_change_a_stopped_deploy_installed_is_converged_by_a_restart(
    tmp_path: Path,
) -> None:
    # /etc/default/haproxy (the stats password) is newer than haproxy's master: a reload
    # would keep the master and the old password, so only a restart converges it.
    lines = [
        "pending 20261203T070000Z-99 haproxy:restart",
        "haproxy_cfg_mtime 1000",
        "haproxy_started 1001",
        "haproxy_env_mtime 1000",
        "haproxy_master_started 900",
    ]
    hosts = up_to_date(tmp_path, proxy2=lines)
    plan = deploy.plan(simhost.inventory(tmp_path), dict(hosts))
    assert plan.stale_actions("proxy2") == {"haproxy": "restart"}
    report = apply_all(tmp_path, hosts)
    assert report.error is None
    assert hosts["proxy2"].ran(r"^systemctl restart haproxy$")
    assert not hosts["proxy2"].ran(r"^systemctl reload haproxy$")


def test_a_master_older_than_its_environment_file_is_stale_without_a_mark() -> None:
    lines = ["haproxy_cfg_mtime 1000", "haproxy_started 1001"]
    for master, env, want in ((900, 1000, {"haproxy": "restart"}), (1000, 1000, {})):
        extra = [f"haproxy_master_started {master}", f"haproxy_env_mtime {env}"]
        text = simhost.facts_text("10.10.0.11", holds_vip=False, files={}, deploy=lines + extra)
        assert parse_facts(text).stale_actions() == want


def test_a_failed_restore_keeps_the_backup_and_the_pending_mark(tmp_path: Path) -> None:
    hosts = simhost.cluster()
    p2 = hosts["proxy2"]
    p2.on(r"^systemctl (reload|restart) haproxy$", exit_code=1, stderr="failed")
    p2.on(r"\.edgekit-old", exit_code=1, stderr="cp: No space left on device")
    report = apply_all(tmp_path, hosts)
    assert report.failed == "proxy2"
    assert not p2.ran(rf"rm -f {PENDING}")  # the mark stays: the next deploy converges


def test_a_stopped_deploys_armed_rollback_and_vip_move_are_undone_under_the_lock(
    tmp_path: Path,
) -> None:
    from edgekit.facts import HANDOVER_DIR, ROLLBACK_UNIT

    hosts = up_to_date(
        tmp_path,
        proxy2=[f"leftover {ROLLBACK_UNIT}.timer", f"leftover {HANDOVER_DIR}"],
    )
    hosts["proxy2"].on(r"systemctl stop edgekit-fw-rollback\.timer", stdout="cancelled\n")
    report = apply_all(tmp_path, hosts)
    assert report.error is None
    p2 = hosts["proxy2"]
    cancel = p2.index(r"systemctl stop edgekit-fw-rollback\.timer")
    undo = p2.index(r"nft delete table ip edgekit_handover")
    assert p2.index(r"flock -n 9") < cancel < p2.index(r"rm -rf \"\$d\"")
    assert undo < p2.index(RECORD)


def test_status_during_a_running_deploy_names_it_instead_of_leftovers(tmp_path: Path) -> None:
    hosts = up_to_date(
        tmp_path,
        proxy2=[
            "running ops@ws2 pid 4242 since 2026-12-03T07:00:00Z",
            "pending 20261203T070000Z-4242 haproxy",
            "leftover /run/edgekit-stage.Ab1",
        ],
    )
    status = cluster_status(simhost.inventory(tmp_path), dict(hosts))
    mine = [p for p in status.problems if p.startswith("proxy2")]
    assert mine == ["proxy2: a deploy is running (ops@ws2 pid 4242 since 2026-12-03T07:00:00Z)"]
