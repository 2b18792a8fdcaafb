"""The edgekit command line. The only package that imports typer.

Commands parse options and call plain library functions; library code raises
EdgekitError and only `main` turns errors into one line and an exit code.
"""

from __future__ import annotations

import os
import sys

import typer

from edgekit.errors import EdgekitError, ExitCode

app = typer.Typer(
    name="edgekit",
    help="A highly available haproxy + keepalived edge for bare-metal Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # Imported here so each command module can use `app` without import cycles.
    import importlib

    for name in ("inventory", "lab", "ops", "demo"):
        importlib.import_module(f"edgekit.cli.{name}")


def err(message: str) -> None:
    """Write one line to stderr."""
    typer.echo(f"edgekit: {message}", err=True)


def main() -> None:
    _register()
    debug = "--debug" in sys.argv or os.environ.get("EDGEKIT_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        rv = app(standalone_mode=False)
    except EdgekitError as exc:
        if debug:
            raise
        for line in str(exc).splitlines():
            err(line)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        err("interrupted")
        sys.exit(int(ExitCode.INTERRUPTED))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err("aborted")
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as exc:  # usage errors and the unexpected
        # Usage errors are click's ClickException; typer vendors click in newer
        # releases, so recognise it by shape rather than by import.
        show = getattr(exc, "show", None)
        if callable(show) and hasattr(exc, "exit_code"):
            show()
            sys.exit(int(ExitCode.BAD_INPUT))
        if debug:
            raise
        err(f"internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)")
        sys.exit(int(ExitCode.FAILED))
    sys.exit(rv if isinstance(rv, int) else 0)
