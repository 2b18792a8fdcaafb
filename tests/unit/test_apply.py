"""apply_host's safety on one scripted host: validation failures, health failures, Ctrl-C."""

from __future__ import annotations

import pytest

from edgekit.deploy.apply import ApplyError, Timing, apply_host
from edgekit.deploy.plan import plan_host
from edgekit.facts import HostFacts, LiveFile
from edgekit.remote import Result
from edgekit.remote.fake import FakeHost
from edgekit.render import RenderedFile

UNITS = {"haproxy": ("active", "enabled"), "keepalived": ("active", "enabled")}
CFG = "/etc/haproxy/haproxy.cfg"
FILES = [RenderedFile(CFG, "new\n", 0o644, "root:root", "haproxy")]
FAST = Timing(health_s=0.2)


def scripted() -> FakeHost:
    host = FakeHost("proxy1")
    host.on(r"^mktemp -d /tmp/edgekit-upload", stdout="/tmp/edgekit-upload.x\n")
    host.on(r"mktemp -d /run/edgekit-stage", stdout="/run/edgekit-stage.x\n")
    return host


def apply(host: FakeHost) -> None:
    facts = HostFacts(units=dict(UNITS), files={CFG: LiveFile(CFG, "old\n", 0o644, "root:root")})
    plan = plan_host(host.name, FILES, facts)
    apply_host(host, host.name, plan, FILES, facts, ["VI_51"], 8404, lambda _m: None, timing=FAST)


def test_a_config_that_fails_validation_is_never_installed() -> None:
    host = scripted().on(r"haproxy -c", exit_code=1, stderr="haproxy -c said no")
    with pytest.raises(ApplyError) as info:
        apply(host)
    assert not info.value.rolled_back and "validation failed" in str(info.value)
    assert not host.ran(r"edgekit-new") and not host.ran(r"systemctl reload")


def test_a_failed_reload_restores_the_previous_files() -> None:
    host = scripted().on(r"^systemctl reload haproxy$", exit_code=1, stderr="no")
    with pytest.raises(ApplyError) as info:
        apply(host)
    assert info.value.rolled_back and host.ran(r"edgekit-new") and host.ran(r"edgekit-old")


def test_ctrl_c_after_install_restores_the_previous_files() -> None:
    def interrupt(_cmd: str) -> Result:
        raise KeyboardInterrupt

    host = scripted().on(r"^systemctl reload haproxy$", respond=interrupt)
    with pytest.raises(KeyboardInterrupt):
        apply(host)
    assert host.ran(r"edgekit-new") and host.ran(r"edgekit-old")
    assert host.commands()[-1].startswith("rm -rf")  # the staging tree is cleaned up too


def test_a_healthy_apply_reloads_and_never_restores() -> None:
    host = scripted()
    apply(host)
    assert "systemctl reload haproxy" in host.commands()
    assert not host.ran(r"edgekit-old")
    assert not host.ran(r"systemctl restart")  # a config change reloads, never restarts


def test_every_file_is_uploaded_before_anything_runs_as_root() -> None:
    host = scripted()
    apply(host)
    assert host.shared.files == {f"/tmp/edgekit-upload.x{CFG}": b"new\n"}
    upload = host.index(r"^put ")
    assert upload < host.index(r"mktemp -d /run/edgekit-stage")
