"""The edgekit command line. The only package that imports typer.

Commands parse options and call plain library functions; library code raises
EdgekitError and only `main` turns errors into one line and an exit code.
`main(argv)` neither reads nor changes sys.argv and never exits the interpreter, so
tests drive it in-process.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

from edgekit import __version__
from edgekit.errors import EdgekitError, ExitCode

app = typer.Typer(
    name="edgekit",
    help="A highly available haproxy + keepalived edge for bare-metal Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
HELP_NAMES = ["-h", "--help"]
# Option help that is read from a registry each time the CLI runs (so it is never
# stale): (command name, option name) -> a function that returns the text.
LIVE_HELP: dict[tuple[str, str], Callable[[], str]] = {}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgekit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="Show a traceback on errors (anywhere before a `--`; or EDGEKIT_DEBUG=1).",
        ),
    ] = False,
) -> None:
    """A highly available haproxy + keepalived edge for bare-metal Kubernetes."""
    # --debug is taken off the command line by main() before parsing, wherever it
    # stands before a `--`; it is declared here so that --help lists it.


def _register() -> None:
    # Imported here so each command module can use `app` without import cycles.
    import importlib

    for name in ("inventory", "lab", "ops", "maint", "demo", "importer"):
        importlib.import_module(f"edgekit.cli.{name}")


def err(message: str) -> None:
    """Write one line to stderr."""
    typer.echo(f"edgekit: {message}", err=True)


def _params(command: Any) -> Iterator[Any]:
    """Every parameter of `command` and its sub-commands, --help included."""
    yield from command.params
    # Made now, with the names every context inherits, so that it can be adjusted too.
    help_option = command.get_help_option(
        command.context_class(command, help_option_names=HELP_NAMES)
    )
    if help_option is not None:
        yield help_option
    for sub in getattr(command, "commands", {}).values():
        yield from _params(sub)


@functools.cache
def _build(_app_shape: tuple[object, ...]) -> Any:
    command = typer.main.get_command(app)
    for param in _params(command):
        # A flag takes no value: show no `<bool>` placeholder for it in --help.
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return command


def _live_help(command: Any) -> None:
    for param in command.params:
        live = LIVE_HELP.get((command.name, param.name))
        if live is not None:
            param.help = live()
    for sub in getattr(command, "commands", {}).values():
        _live_help(sub)


def _command() -> Any:
    """The click command, built once for what `app` holds (typer's build is half of a
    short command's time, and tests run hundreds); live help is read on every call."""
    _register()
    shape = (
        len(app.registered_commands),
        len(app.registered_groups),
        # Typer's own test switch: --show-completion and --install-completion take the
        # shell as a value instead of detecting it. It is read when the command is built.
        os.environ.get("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"),
    )
    command = _build(shape)
    _live_help(command)
    return command


def _json_error(exc: EdgekitError) -> None:
    details = getattr(exc, "details", None)
    errors = (
        details()
        if callable(details)
        else [{"file": None, "line": None, "path": None, "message": str(exc)}]
    )
    typer.echo(json.dumps({"ok": False, "errors": errors}, indent=2, sort_keys=True))


def _options(args: list[str]) -> tuple[list[str], list[str]]:
    """`args` split at the first `--`: what may hold edgekit's options, and what is
    passed on as it is (`edgekit lab ssh proxy1 -- cmd --debug`)."""
    if "--" in args:
        at = args.index("--")
        return args[:at], args[at:]
    return args, []


def _exit_code(code: object) -> int:
    """The process exit code a SystemExit(code) stands for, as Python gives it."""
    if code is None:
        return int(ExitCode.OK)
    if isinstance(code, int):
        return code
    err(str(code))
    return int(ExitCode.FAILED)


def _traceback(debug: bool) -> None:
    """With --debug, the traceback of the error being handled, to stderr."""
    if debug:
        traceback.print_exc()


def main(argv: list[str] | None = None) -> int:
    """Run one edgekit command with the arguments `argv` (None: none) and return the
    exit code (see ExitCode). It never raises SystemExit, and never reads sys.argv."""
    options, rest = _options(list(argv or []))
    debug = "--debug" in options or os.environ.get("EDGEKIT_DEBUG") == "1"
    args = [a for a in options if a != "--debug"] + rest
    try:
        rv = _command().main(args=args, prog_name="edgekit", standalone_mode=False)
    except EdgekitError as exc:
        _traceback(debug)
        if "--json" in options:
            _json_error(exc)
        for line in str(exc).splitlines():
            err(line)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _traceback(debug)
        err("interrupted")
        return int(ExitCode.INTERRUPTED)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        _traceback(debug)
        err("aborted")
        return int(ExitCode.INTERRUPTED)
    except SystemExit as exc:  # typer's completion (--show-completion, ...) exits
        return _exit_code(exc.code)
    except Exception as exc:  # usage errors and the unexpected
        # Usage errors are click's ClickException; typer vendors click in newer
        # releases, so recognise it by shape rather than by import.
        _traceback(debug)
        show = getattr(exc, "show", None)
        if callable(show) and hasattr(exc, "exit_code"):
            show()
            return int(ExitCode.BAD_INPUT)
        hint = "" if debug else " (run with --debug for a traceback)"
        err(f"internal error: {type(exc).__name__}: {exc}{hint}")
        return int(ExitCode.FAILED)
    return rv if isinstance(rv, int) else 0


def run() -> None:
    """The console script: main() with the process's arguments, as its exit code."""
    sys.exit(main(sys.argv[1:]))
