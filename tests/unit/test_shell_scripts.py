"""The shell scripts edgekit runs on the hosts (templates/remote/), rendered the way deploy,
facts and the firewall's commit-confirmed load render them, pass shellcheck as POSIX sh
(the hosts run them with `sh -c`), and put every value into the shell quoted."""

from __future__ import annotations

import base64
import hashlib
import importlib
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pytest

from edgekit import facts, firewall
from edgekit.deploy import confirm
from edgekit.deploy.apply import (
    _install_script,
    _restore_script,
    _rollback,
    _stage,
    finish_script,
    health_command,
    self_restore_script,
    sweep_script,
    validate_staged,
    wait_healthy,
)
from edgekit.deploy.drain import mark_script
from edgekit.deploy.lock import lock_command
from edgekit.deploy.placement import (
    allow_script,
    close_script,
    give_script,
    restore_script,
    take_script,
)
from edgekit.deploy.plan import FileChange, HostPlan
from edgekit.facts import LiveFile
from edgekit.failover.probes import watch_script
from edgekit.remote import scripts
from edgekit.remote.fake import FakeHost
from edgekit.render import STATE_DIR, RenderedFile, templates_dir
from tests.conftest import need_program

# Values a careless template would break on: a space, a quote, a dollar, a glob.
ODD_PATH = "/etc/edge kit/it's $HOME*.cfg"
STAGE = "/run/edgekit-stage.a b'c"
FILES = [
    RenderedFile("/etc/haproxy/haproxy.cfg", "global\n", 0o644, "root:root", "haproxy"),
    RenderedFile("/etc/default/haproxy", "X=1\n", 0o600, "root:root", "haproxy", secret=True),
    RenderedFile("/etc/keepalived/keepalived.conf", "k\n", 0o644, "root:root", "keepalived"),
    RenderedFile(ODD_PATH, "odd\n", 0o640, "root:adm users", "systemd"),
    RenderedFile(firewall.RULESET, "table inet edgekit {}\n", 0o644, "root:root", "nftables"),
]
PLAN = HostPlan("proxy1", [FileChange(f, LiveFile(f.path, None)) for f in FILES])

# Findings that are right for these scripts.
EXCLUDED_EVERYWHERE = {
    # "Expressions don't expand in single quotes": `q` single-quotes every value, so a
    # value with a `$` in it (ODD_PATH) is reported, and so is `sh -c '... "$1"' sh VALUE`,
    # where the value reaches the inner shell as a positional parameter. Both are the
    # quoting done right.
    "SC2016",
}
EXCLUDED = {
    # `. FILE` of a file that exists only on the host (/etc/os-release, the staged
    # /etc/default/haproxy): there is nothing here to follow.
    "SC1091": {"gather-facts", "validate", "check-running"},
}


@dataclass(frozen=True)
class Case:
    id: str
    template: str  # the name under templates/remote/, without .sh.j2
    render: Callable[[], str]


def _sent(run: Callable[[FakeHost], object], pattern: str) -> str:
    """The command matching `pattern` that `run` sent to a scripted host."""
    host = FakeHost("proxy1")
    host.on(r"^mktemp -d /tmp/edgekit-upload", stdout="/tmp/edgekit-upload.x y\n")
    host.on(r"mktemp -d /run/edgekit-stage", stdout=f"{STAGE}\n")
    host.on(r"systemctl is-active -q haproxy && ", exit_code=1)  # never healthy
    run(host)
    return next(c for c in host.commands() if re.search(pattern, c))


DEPLOY_ID = "20261203T070000Z-4242"


def _roll_back(host: FakeHost) -> None:
    _rollback(host, PLAN, lambda _m: None, DEPLOY_ID, firewall_loaded=True)


def _unhealthy(host: FakeHost) -> None:
    wait_healthy(host, ["VI_51"], 8404, 0)


# What the plan read: two files with content, the others absent.
LIVE = {f.path: "absent" for f in FILES} | {
    f.path: hashlib.sha256(f.content.encode()).hexdigest() for f in FILES[:2]
}
CASES = [
    Case("gather-compare", "gather-facts", lambda: facts.gather_command([f.path for f in FILES])),
    Case("gather-no-compare", "gather-facts", lambda: facts.gather_command([ODD_PATH])),
    Case("gather-no-files", "gather-facts", lambda: facts.gather_command([])),
    Case("firewall-compare", "fw-facts", lambda: facts.firewall_command(True)),
    Case("firewall-no-compare", "fw-facts", lambda: facts.firewall_command(False)),
    Case("stage", "stage", lambda: _sent(lambda h: _stage(h, FILES), r"mktemp -d /run")),
    Case(
        "validate",
        "validate",
        lambda: _sent(lambda h: validate_staged(h, STAGE, "proxy '1"), r"haproxy -c"),
    ),
    Case(
        "install-absent",
        "install",
        lambda: _install_script(
            STAGE, PLAN, {f.path: "absent" for f in FILES}, DEPLOY_ID, ["haproxy"]
        ),
    ),
    Case("install-live", "install", lambda: _install_script(STAGE, PLAN, LIVE, DEPLOY_ID, [])),
    Case("restore", "restore", lambda: _restore_script(DEPLOY_ID)),
    Case("finish-applied", "finish", lambda: finish_script(DEPLOY_ID, applied=True)),
    Case("finish-rolled-back", "finish", lambda: finish_script(DEPLOY_ID, applied=False)),
    Case("sweep", "sweep", sweep_script),
    Case("lock", "lock", lambda: lock_command("admin@ws pid 1 since 2026-12-03T07:00:00Z")),
    Case("health", "health", lambda: health_command(["VI_51", "VI_52"], 8404)),
    Case("health-no-vip", "health", lambda: health_command([], 8404)),
    Case("health-why", "health-why", lambda: _sent(_unhealthy, r"printf '%s=%s '")),
    Case("unit-states", "unit-states", lambda: scripts.script("unit-states", units=facts.UNITS)),
    Case("unit-back", "unit-back", lambda: _sent(_roll_back, r"^if systemctl is-active")),
    Case("fw-restore-table", "fw-restore-table", confirm.restore_table_command),
    Case(
        "fw-rollback",
        "fw-rollback",
        lambda: confirm.rollback_script(self_restore_script(DEPLOY_ID)),
    ),
    Case("fw-arm", "fw-arm", lambda: confirm.arm_script(_restore_script(DEPLOY_ID), window=30)),
    Case("fw-arm-short", "fw-arm", lambda: confirm.arm_script("true", window=0.2)),
    Case("fw-cancel", "fw-cancel", confirm.cancel_script),
    Case("fw-remove", "fw-remove", confirm.removal_command),
    Case("placement-allow", "placement-allow", lambda: allow_script(["VI_51", "VI_52"])),
    Case("placement-restore", "placement-restore", restore_script),
    Case("drain-mark", "drain-mark", lambda: mark_script(True)),
    Case("undrain-mark", "drain-mark", lambda: mark_script(False)),
    Case("boot-id", "boot-id", lambda: scripts.script("boot-id")),
    Case("handover-close", "handover-close", lambda: close_script(["10.0.0.100", "10.0.0.101"])),
    Case(
        "handover-arm",
        "handover-arm",
        lambda: scripts.script(
            "handover-arm",
            handover_dir="/run/edgekit/handover",
            restore=restore_script(),
            unit="edgekit-handover-expire",
            expire_after=47,
        ),
    ),
    Case(
        "retire",
        "retire",
        lambda: scripts.script(
            "retire",
            unit=firewall.UNIT,
            table=firewall.TABLE,
            ruleset=firewall.RULESET,
            unit_path=firewall.UNIT_PATH,
            ruleset_dir="/etc/edgekit",
        ),
    ),
    Case("reboot", "reboot", lambda: scripts.script("reboot")),
    Case("upgrade-all", "upgrade", lambda: scripts.script("upgrade", packages=[])),
    Case("upgrade-some", "upgrade", lambda: scripts.script("upgrade", packages=["haproxy"])),
    Case("upgrade-plan-all", "upgrade-plan", lambda: scripts.script("upgrade-plan", packages=[])),
    Case(
        "upgrade-plan-some",
        "upgrade-plan",
        lambda: scripts.script("upgrade-plan", packages=["haproxy", "keepalived"]),
    ),
    Case(
        "check-running",
        "check-running",
        lambda: scripts.script(
            "check-running",
            haproxy_env="/etc/default/haproxy",
            haproxy_cfg="/etc/haproxy/haproxy.cfg",
            keepalived_conf="/etc/keepalived/keepalived.conf",
            peer="proxy1",
        ),
    ),
    Case("handover-give", "handover-give", lambda: give_script([("10.0.0.100", "eth1")])),
    Case(
        "handover-take",
        "handover-take",
        lambda: take_script(
            [("10.0.0.100", "10.0.0.11", "eth1"), ("10.0.0.101", "10.0.0.12", "e")]
        ),
    ),
    Case("watch-vips", "watch-vips", lambda: watch_script(["10.0.0.100", "10.0.0.101"])),
]


def remote_templates() -> list[Path]:
    return sorted((templates_dir() / scripts.DIRECTORY).glob("*"))


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the templates that rendering loaded (includes too)."""
    names: list[str] = []
    env = scripts._env()
    real = env.get_template

    def recording(name: str | jinja2.Template, *args: object, **kw: object) -> jinja2.Template:
        names.append(str(name))
        return real(name, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(env, "get_template", recording)
    yield names


def shellcheck(text: str, template: str) -> subprocess.CompletedProcess[str]:
    here = {code for code, where in EXCLUDED.items() if template in where}
    excluded = ",".join(sorted(EXCLUDED_EVERYWHERE | here))
    command = [
        "shellcheck",
        "--shell=sh",
        "--severity=style",
        "--format=gcc",
        "--exclude",
        excluded,
    ]
    return subprocess.run(
        [*command, "-"], input=text, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_remote_script_passes_shellcheck_as_posix_sh(case: Case, loaded: list[str]) -> None:
    need_program("shellcheck")
    text = case.render()
    assert scripts.template_name(case.template) in loaded
    found = shellcheck(text, case.template)
    numbered = "\n".join(f"{n:3} {line}" for n, line in enumerate(text.splitlines(), 1))
    assert found.returncode == 0, f"{found.stdout}{found.stderr}\n{numbered}"


def test_shellcheck_finds_what_it_is_asked_to_find() -> None:
    need_program("shellcheck")
    assert shellcheck('for f in $(ls /etc); do echo "$f"; done\n', "stage").returncode != 0


def test_every_remote_template_is_checked() -> None:
    files = {p.name for p in remote_templates()}
    checked = {f"{c.template}.sh.j2" for c in CASES}
    assert files and files == checked
    for code, where in EXCLUDED.items():
        assert where <= {c.template for c in CASES}, code


def test_every_value_in_a_remote_template_is_quoted_for_the_shell() -> None:
    """`q` (shlex.quote) for a value; `int` (integers only) inside a quoted string;
    `shell` only for a whole script that another one runs."""
    for path in remote_templates():
        for expr in re.findall(r"\{\{-?(.*?)-?\}\}", path.read_text(), re.S):
            last = expr.rsplit("|", 1)[-1].strip() if "|" in expr else ""
            assert last in ("q", "int", "shell"), f"{path.name}: {{{{{expr}}}}} is not quoted"
            if last == "shell":
                assert path.name in ("fw-rollback.sh.j2", "handover-arm.sh.j2"), path.name


def test_quoting_refuses_what_it_cannot_quote() -> None:
    with pytest.raises(TypeError):
        scripts.script("health", instances=[], stats_port="8404; reboot", state_dir=STATE_DIR)
    with pytest.raises(TypeError):
        scripts.script("restore", backup_dir=None)
    with pytest.raises(jinja2.UndefinedError):
        scripts.script("restore")


def test_the_facts_script_reads_files_whose_names_need_quoting(tmp_path: Path) -> None:
    need_program("sh", "stat", "base64")
    odd = tmp_path / "it's $HOME*"
    odd.write_text("odd\n")
    spaced = tmp_path / "with space"
    spaced.write_text("spaced\n")
    missing = tmp_path / "missing 'file'"
    paths = [str(odd), str(spaced), str(missing)]
    out = subprocess.run(
        ["sh", "-c", facts.gather_command(paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    lines = out.split("@files\n", 1)[1].split("@units\n", 1)[0].splitlines()
    assert len(lines) == 3 and lines[2] == f"{missing} -"
    for line, path, content in zip(lines, paths, ("odd\n", "spaced\n"), strict=False):
        assert line.startswith(f"{path} ")
        assert base64.b64decode(line.rsplit(" ", 1)[1]).decode() == content


def test_install_then_restore_puts_back_files_whose_names_need_quoting(tmp_path: Path) -> None:
    need_program("sh", "sha256sum", "cp", "find")
    live, stage, backup = tmp_path / "live", tmp_path / "stage a'b", tmp_path / "backup $x"
    old, new = live / "it's $HOME*" / "a b.cfg", live / "new dir" / "c.cfg"
    old.parent.mkdir(parents=True)
    old.write_text("old\n")
    for path in (old, new):
        staged = Path(f"{stage}{path}")
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_text(f"new {path.name}\n")
    paths = [str(old), str(new)]

    def run(script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-c", script], capture_output=True, text=True, timeout=60, check=False
        )

    def install(expected: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return run(
            scripts.script(
                "install",
                stage=str(stage),
                paths=paths,
                expected=sorted(expected.items()),
                backup_dir=str(backup),
                changed_since_plan=17,
                pending=str(tmp_path / "state" / "pending"),
                deploy_id=DEPLOY_ID,
                units="haproxy keepalived",
            )
        )

    stale = install({str(old): hashlib.sha256(b"what the plan read\n").hexdigest()})
    assert stale.returncode == 17
    assert stale.stderr == f"{old} changed on the host since the plan was made\n"
    assert old.read_text() == "old\n" and not new.exists()

    assert not (tmp_path / "state" / "pending").exists()  # refused: nothing is pending

    done = install({str(old): hashlib.sha256(b"old\n").hexdigest(), str(new): "absent"})
    assert done.returncode == 0, done.stderr
    pending = (tmp_path / "state" / "pending").read_text()
    assert pending == f"{DEPLOY_ID} haproxy keepalived\n"
    assert old.read_text() == "new a b.cfg\n" and new.read_text() == "new c.cfg\n"

    restored = run(scripts.script("restore", backup_dir=str(backup)))
    assert restored.returncode == 0, restored.stderr
    assert old.read_text() == "old\n" and not new.exists()


def test_install_stops_at_the_first_file_it_cannot_copy(tmp_path: Path) -> None:
    need_program("sh", "cp", "mv")
    live, stage = tmp_path / "live", tmp_path / "stage"
    first, second = live / "a.cfg", live / "b.cfg"
    Path(f"{stage}{second}").parent.mkdir(parents=True)
    Path(f"{stage}{second}").write_text("new b\n")  # the first one was never staged
    text = scripts.script(
        "install",
        stage=str(stage),
        paths=[str(first), str(second)],
        expected=[],
        backup_dir=str(tmp_path / "backup"),
        changed_since_plan=17,
        pending=str(tmp_path / "state" / "pending"),
        deploy_id=DEPLOY_ID,
        units="haproxy",
    )
    done = subprocess.run(["sh", "-c", text], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert not second.exists()  # it did not go on with the next file


def test_restore_fails_when_a_file_cannot_be_put_back(tmp_path: Path) -> None:
    need_program("sh", "cp", "mv", "find")
    backup = tmp_path / "backup"
    target = tmp_path / "gone" / "x.cfg"  # its directory is gone: cp cannot write
    Path(f"{backup}{target}").parent.mkdir(parents=True)
    Path(f"{backup}{target}").write_text("old\n")
    (backup / "ABSENT").write_text("")
    text = scripts.script("restore", backup_dir=str(backup))
    done = subprocess.run(["sh", "-c", text], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1


def test_the_hosts_own_rollback_restores_then_clears_the_mark_and_the_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_program("sh", "cp", "mv", "find")
    apply = importlib.import_module("edgekit.deploy.apply")  # the module, not deploy.apply()
    root = tmp_path / "state"
    monkeypatch.setattr(apply, "BACKUP_ROOT", str(root / "backup"))
    monkeypatch.setattr(apply, "PENDING", str(root / "pending"))
    monkeypatch.setattr(apply, "APPLIED", str(root / "applied"))
    live = tmp_path / "live.cfg"
    live.write_text("new\n")
    backup = Path(apply.backup_dir(DEPLOY_ID))
    Path(f"{backup}{live}").parent.mkdir(parents=True)
    Path(f"{backup}{live}").write_text("old\n")
    (backup / "ABSENT").write_text("")
    (root / "pending").write_text(f"{DEPLOY_ID} haproxy\n")
    text = self_restore_script(DEPLOY_ID)
    done = subprocess.run(["sh", "-c", text], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert live.read_text() == "old\n"
    assert not backup.exists() and not (root / "pending").exists()
