"""apply_host's safety on a scripted host: validation failures, health failures, Ctrl-C."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from edgekit.deploy.apply import ApplyError, apply_host
from edgekit.deploy.plan import plan_host
from edgekit.facts import HostFacts
from edgekit.remote import Result
from edgekit.render import RenderedFile

UNITS = {"haproxy": ("active", "enabled"), "keepalived": ("active", "enabled")}


@dataclass
class ScriptedHost:
    """Answers commands from a script; records what ran. `fail` maps a command fragment to
    an exit code, `interrupt` raises KeyboardInterrupt at a fragment."""

    name: str = "proxy1"
    fail: dict[str, int] = field(default_factory=dict)
    interrupt: str | None = None
    ran: list[str] = field(default_factory=list)

    def run(self, command: str, **_: object) -> Result:
        self.ran.append(command)
        if self.interrupt and self.interrupt in command:
            raise KeyboardInterrupt
        for fragment, code in self.fail.items():
            if fragment in command:
                return Result(command, code, "", f"{fragment} said no")
        out = "/run/edgekit-stage.x\n" if "mktemp" in command else ""
        return Result(command, 0, out, "")

    def check(self, command: str, what: str, **kw: object) -> Result:
        result = self.run(command, **kw)
        assert result.ok, what
        return result

    def put_text(self, content: str, path: str, mode: int = 0o600) -> None:
        self.ran.append(f"put {path}")

    def restored(self) -> bool:
        return any("edgekit-old" in c for c in self.ran)

    def installed(self) -> bool:
        return any("edgekit-new" in c for c in self.ran)


FILES = [RenderedFile("/etc/haproxy/haproxy.cfg", "new\n", 0o644, "root:root", "haproxy")]


def apply(host: ScriptedHost) -> None:
    plan = plan_host(host.name, FILES, HostFacts(units=dict(UNITS)))
    apply_host(host, host.name, plan, FILES, dict(UNITS), ["VI_51"], 8404,  # type: ignore[arg-type]
               lambda _m: None)


def test_a_config_that_fails_validation_is_never_installed() -> None:
    host = ScriptedHost(fail={"haproxy -c": 1})
    with pytest.raises(ApplyError) as info:
        apply(host)
    assert not info.value.rolled_back and "validation failed" in str(info.value)
    assert not host.installed() and not any("systemctl reload" in c for c in host.ran)


def test_a_failed_reload_restores_the_previous_files() -> None:
    host = ScriptedHost(fail={"systemctl reload haproxy": 1})
    with pytest.raises(ApplyError) as info:
        apply(host)
    assert info.value.rolled_back and host.installed() and host.restored()


def test_ctrl_c_after_install_restores_the_previous_files() -> None:
    host = ScriptedHost(interrupt="systemctl reload haproxy")
    with pytest.raises(KeyboardInterrupt):
        apply(host)
    assert host.installed() and host.restored()
    assert host.ran[-1].startswith("rm -rf")  # the staging tree is cleaned up too


def test_a_healthy_apply_reloads_and_never_restores() -> None:
    host = ScriptedHost()
    apply(host)
    assert any(c == "systemctl reload haproxy" for c in host.ran)
    assert not host.restored()
