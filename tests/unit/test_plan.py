"""Facts parsing, plans and masked diffs: facts in, changes out."""

from __future__ import annotations

import pytest

from edgekit.deploy.apply import service_actions
from edgekit.deploy.plan import MASK, mask_secrets, plan_host
from edgekit.facts import HostFacts, LiveFile, parse_facts
from edgekit.render import RenderedFile
from tests.unit import simhost


def facts_text(files: dict[str, str | None], *, active: str = "active") -> str:
    return simhost.facts_text(
        "10.0.0.11", vip="10.0.0.100", holds_vip=True, files=files, active=active
    )


def test_parse_facts_reads_every_section() -> None:
    f = parse_facts(facts_text({"/etc/a": "x\n", "/etc/b": None}))
    assert f.os_id == "debian" and f.os_version == "12"
    assert f.packages == {"haproxy": True, "keepalived": True}
    assert [str(a) for a in f.interface_addresses("eth1")] == ["10.0.0.11/24", "10.0.0.100/24"]
    assert f.files["/etc/a"] == LiveFile("/etc/a", "x\n", 0o644, "root:root")
    assert f.files["/etc/b"].content is None
    assert f.units["haproxy"] == ("active", "enabled")
    assert f.haproxy_master == 4242 and f.haproxy_pids == [4242, 4250]
    assert f.vrrp_states == {"VI_51": "MASTER"}


def test_parse_facts_marks_missing_packages() -> None:
    text = facts_text({}).replace("keepalived installed\n", "")
    assert parse_facts(text).packages["keepalived"] is False


def test_an_empty_file_is_present_not_missing() -> None:
    f = parse_facts("@files\n/etc/empty 644 root:root\n@end\n")
    assert f.files["/etc/empty"].content == ""


def rf(
    path: str, content: str, service: str = "haproxy", mode: int = 0o644, secret: bool = False
) -> RenderedFile:
    return RenderedFile(path, content, mode, "root:root", service, secret)


def test_identical_host_has_an_empty_plan() -> None:
    wanted = [rf("/etc/a", "x\n")]
    plan = plan_host("p1", wanted, parse_facts(facts_text({"/etc/a": "x\n"})))
    assert not plan.changed and plan.diff() == ""


def test_changed_and_missing_files_are_planned() -> None:
    wanted = [rf("/etc/a", "new\n"), rf("/etc/b", "b\n", "keepalived")]
    plan = plan_host("p1", wanted, parse_facts(facts_text({"/etc/a": "old\n", "/etc/b": None})))
    assert [c.action for c in plan.changes] == ["update", "create"]
    assert plan.services_touched() == {"haproxy", "keepalived"}
    assert "-old" in plan.diff() and "+new" in plan.diff()


def test_mode_only_change_is_planned() -> None:
    wanted = [rf("/etc/a", "x\n", mode=0o600)]
    plan = plan_host("p1", wanted, parse_facts(facts_text({"/etc/a": "x\n"})))
    assert [c.action for c in plan.changes] == ["chmod"]


def test_stopped_units_are_started_when_their_files_do_not_change() -> None:
    wanted = [rf("/etc/a", "x\n")]
    plan = plan_host("p1", wanted, parse_facts(facts_text({"/etc/a": "x\n"}, active="failed")))
    assert plan.start_units == ["haproxy", "keepalived"]


def test_diffs_never_show_secrets() -> None:
    old = 'EDGEKIT_PEER_NAME=p1\nEDGEKIT_STATS_PASSWORD="old-Secret-1"\n'
    new = 'EDGEKIT_PEER_NAME=p1\nEDGEKIT_STATS_PASSWORD="new-Secret-2"\n'
    wanted = [rf("/etc/default/haproxy", new, mode=0o600, secret=True)]
    facts = HostFacts(
        files={"/etc/default/haproxy": LiveFile("/etc/default/haproxy", old, 0o600, "root:root")}
    )
    diff = plan_host("p1", wanted, facts).diff()
    assert "old-Secret-1" not in diff and "new-Secret-2" not in diff
    assert f"+EDGEKIT_STATS_PASSWORD={MASK} (changed)" in diff


def test_masking_keeps_an_unchanged_secret_out_of_the_diff() -> None:
    text = 'EDGEKIT_STATS_PASSWORD="same-Secret"\nX=1\n'
    old, new = mask_secrets(text, text.replace("X=1", "X=2"))
    assert "same-Secret" not in old + new
    assert old.splitlines()[0] == new.splitlines()[0]


def test_keepalived_auth_pass_is_masked() -> None:
    old, new = mask_secrets("    auth_pass abcd1234\n", "    auth_pass zyxw9876\n")
    assert "abcd1234" not in old and "zyxw9876" not in new


@pytest.mark.parametrize(
    ("paths", "active", "expected"),
    [
        (["/etc/haproxy/haproxy.cfg"], "active", ["systemctl reload haproxy"]),
        (
            ["/etc/haproxy/haproxy.cfg"],
            "inactive",
            ["systemctl start haproxy", "systemctl start keepalived"],
        ),
        (["/etc/default/haproxy"], "active", ["systemctl restart haproxy"]),
        (["/etc/keepalived/keepalived.conf"], "active", ["systemctl reload keepalived"]),
    ],
)
def test_service_actions_reload_never_restart_for_config(
    paths: list[str], active: str, expected: list[str]
) -> None:
    service = {
        "/etc/haproxy/haproxy.cfg": "haproxy",
        "/etc/default/haproxy": "haproxy",
        "/etc/keepalived/keepalived.conf": "keepalived",
    }
    wanted = [rf(p, "new\n", service[p]) for p in paths]
    facts = HostFacts(
        files={}, units={"haproxy": (active, "enabled"), "keepalived": (active, "enabled")}
    )
    plan = plan_host("p1", wanted, facts)
    assert service_actions(plan, facts.units) == expected


def test_sysctl_and_dropin_changes_apply_before_services() -> None:
    wanted = [
        rf("/etc/sysctl.d/60-edgekit.conf", "x\n", "sysctl"),
        rf("/etc/systemd/system/keepalived.service.d/edgekit.conf", "y\n", "systemd"),
        rf("/etc/keepalived/keepalived.conf", "z\n", "keepalived"),
    ]
    units = {"haproxy": ("active", "enabled"), "keepalived": ("active", "enabled")}
    plan = plan_host("p1", wanted, HostFacts(units=units))
    assert service_actions(plan, units) == [
        "systemctl daemon-reload",
        "sysctl -q -p /etc/sysctl.d/60-edgekit.conf",
        "systemctl reload keepalived",
    ]
