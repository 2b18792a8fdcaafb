"""The command line itself, driven in-process (tests/cli.py): --version, -h on every
command, --debug, shell completion, and that main() leaves the interpreter alone
(sys.argv, SystemExit)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import edgekit
import edgekit.cli
from edgekit.cli import _command
from tests.cli import one_line_error, run

# Typer's completion, with the shell named on the command line instead of detected
# from the processes above this one (which differ between a terminal and CI).
NAMED_SHELL = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}


def commands(command: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The words of every command and sub-command, the root (no words) first."""
    command = command or _command()
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def test_version_prints_the_package_version() -> None:
    result = run("--version")

    assert (result.exit_code, result.stdout) == (0, f"edgekit {edgekit.__version__}\n")


def test_every_command_answers_h_as_it_answers_help_with_no_bool_placeholder() -> None:
    paths = list(commands())
    assert ("lab", "ssh") in paths and ("image", "build") in paths and ("deploy",) in paths

    for path in paths:
        short, long = run(*path, "-h"), run(*path, "--help")
        assert (short.exit_code, long.exit_code) == (0, 0), (path, short.stderr, long.stderr)
        assert "Usage" in long.stdout, path
        assert short.stdout == long.stdout, path
        assert "<bool>" not in long.stdout, path


def test_top_level_help_lists_every_global_option() -> None:
    text = run("--help").stdout

    for option in ("--debug", "--version", "--install-completion", "--show-completion", "-h"):
        assert option in text, option


def test_cli_registers_the_lab_and_image_commands() -> None:
    for group in ("lab", "image"):
        result = run(group, "--help")
        assert result.exit_code == 0, result.stderr
        assert "Usage" in result.stdout


# --- shell completion: typer ends these with sys.exit; main() returns the code ---------


def test_show_completion_prints_the_script_and_returns() -> None:
    result = run("--show-completion", "bash", env=NAMED_SHELL)

    assert result.exit_code == 0, result.stderr
    assert "complete -o default -F _edgekit_completion edgekit" in result.stdout


def test_show_completion_for_the_detected_shell_returns_an_exit_code() -> None:
    # 0 where the shell above this process is one typer knows, 1 where it is not.
    assert run("--show-completion").exit_code in (0, 1)


def test_install_completion_writes_under_home_and_returns(tmp_path: Path) -> None:
    result = run("--install-completion", "bash", env={"HOME": str(tmp_path), **NAMED_SHELL})

    assert result.exit_code == 0, result.stderr
    script = tmp_path / ".bash_completions" / "edgekit.sh"
    assert "_EDGEKIT_COMPLETE=complete_bash" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()
    # Detecting the shell (whichever it is) still returns; whatever it writes stays in HOME.
    assert run("--install-completion", env={"HOME": str(tmp_path)}).exit_code in (0, 1)


def test_completion_mode_completes_commands_and_returns() -> None:
    env = {"_EDGEKIT_COMPLETE": "complete_bash", "COMP_WORDS": "edgekit lab s", "COMP_CWORD": "2"}
    result = run(env=env)

    assert result.exit_code == 0, result.stderr
    assert set(result.stdout.split()) == {"ssh", "status"}


# --- errors and --debug ------------------------------------------------------------


def test_bad_input_is_one_line_and_debug_adds_a_traceback_not_another_exit_code(
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "missing.yaml")

    plain = run("validate", "-i", missing)
    assert plain.exit_code == 2
    assert "no such file" in one_line_error(plain)
    assert plain.stderr == one_line_error(plain) + "\n"

    for argv in (["--debug", "validate", "-i", missing], ["validate", "-i", missing, "--debug"]):
        debug = run(*argv)
        assert debug.exit_code == 2, argv
        assert "Traceback (most recent call last)" in debug.stderr, argv
        assert "InputError" in debug.stderr
        assert debug.stderr.rstrip().endswith(one_line_error(plain)), argv

    from_env = run("validate", "-i", missing, env={"EDGEKIT_DEBUG": "1"})
    assert from_env.exit_code == 2 and "Traceback" in from_env.stderr


def test_an_internal_error_exits_1_with_or_without_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kw: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("edgekit.cli.inventory.load_inventory", broken)

    plain = run("validate")
    assert plain.exit_code == 1
    assert one_line_error(plain) == (
        "edgekit: internal error: RuntimeError: boom (run with --debug for a traceback)"
    )
    debug = run("validate", "--debug")
    assert debug.exit_code == 1
    assert "Traceback" in debug.stderr
    assert debug.stderr.rstrip().endswith("edgekit: internal error: RuntimeError: boom")


def test_debug_after_a_double_dash_is_left_for_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    executed: list[list[str]] = []

    class Lab:
        def ssh_argv(self, host: str, command: list[str]) -> list[str]:
            return ["ssh", host, *command]

    monkeypatch.setattr("edgekit.cli.lab._provider", lambda _provider: Lab())
    monkeypatch.setattr(os, "execvp", lambda _file, argv: executed.append(argv))

    result = run("--debug", "lab", "ssh", "proxy1", "--", "cmd", "--debug")

    assert result.exit_code == 0, result.stderr
    assert executed == [["ssh", "proxy1", "cmd", "--debug"]]


# --- main() leaves the interpreter alone ----------------------------------------------


def test_main_neither_reads_nor_changes_sys_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["edgekit", "deploy", "--no-such-option"]
    monkeypatch.setattr(sys, "argv", argv)

    assert run("--version").exit_code == 0
    assert run("validate", "-i", "/nonexistent/edge.yaml", "--debug").exit_code == 2
    # No arguments is no arguments (the top-level help), not the process's.
    assert "--no-such-option" not in run().stderr
    assert sys.argv is argv and sys.argv == ["edgekit", "deploy", "--no-such-option"]


def test_the_console_script_passes_the_process_arguments(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["edgekit", "--version"])

    with pytest.raises(SystemExit) as exited:
        edgekit.cli.run()

    assert exited.value.code == 0
    assert capsys.readouterr().out == f"edgekit {edgekit.__version__}\n"
