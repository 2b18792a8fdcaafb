"""Drive the edgekit CLI in-process, as a user would, the way httpie's tests do.

`run(*argv)` calls `edgekit.cli.main(argv)` with its own stdin, stdout, stderr and
environment, and returns what a shell would see: the exit code and both streams.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from edgekit.cli import main


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def returncode(self) -> int:  # the name subprocess.CompletedProcess uses
        return self.exit_code


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return False


@contextmanager
def _environment(env: dict[str, str] | None) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update({"EDGEKIT_DEBUG": "0", **(env or {})})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run(*argv: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    out, err = _Tty(), _Tty()
    streams = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = _Tty(stdin or ""), out, err
    try:
        with _environment(env):
            code = main(list(argv))
    finally:
        sys.stdin, sys.stdout, sys.stderr = streams
    return Result(code, out.getvalue(), err.getvalue())


def one_line_error(result: Result) -> str:
    """The single `edgekit:` error line of a failed command (and no traceback)."""
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("edgekit:")]
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    return lines[0]
