"""Typed errors and the one table of exit codes every command uses."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # an operation failed: deploy stopped, cluster unhealthy, scenario failed
    BAD_INPUT = 2  # inventory, flags, missing file or secret
    PENDING = 3  # --dry-run only: changes are pending
    INTERRUPTED = 130


def printable(text: str, *, keep_newlines: bool = False) -> str:
    r"""`text` with every control or invisible formatting character written as an escape
    (\x1b, \n, \u202e, ...), so nothing from an inventory or a host reaches the terminal
    as a command or splits one message into two lines."""
    if text.isprintable() and (keep_newlines or "\n" not in text):
        return text
    out = []
    for c in text:
        if c.isprintable() or (keep_newlines and c == "\n"):
            out.append(c)
        else:
            escaped = repr(c)[1:-1]  # '\x1b', '\n', '\u202e'
            out.append(escaped if escaped != c else f"\\u{ord(c):04x}")
    return "".join(out)


class EdgekitError(Exception):
    """An error a user can cause or fix; the CLI prints it as one line."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.message} (hint: {self.hint})" if self.hint else self.message
        # Line breaks stay (each line is printed as its own message); other controls do not.
        return printable(text, keep_newlines=True)

    def details(self) -> list[dict[str, object]]:
        """The error as data (`--json`): one dict per problem."""
        return [{"file": None, "line": None, "path": None, "message": str(self)}]


class InputError(EdgekitError):
    """Bad input: inventory, flags, a missing file or secret."""

    exit_code = ExitCode.BAD_INPUT


@dataclass(frozen=True)
class Located:
    """One problem in an inventory, where it is: FILE:LINE: KEY.PATH: MESSAGE."""

    file: str | None
    line: int | None
    path: str | None
    message: str

    def text(self) -> str:
        where = f"{self.file}:{self.line}" if self.file and self.line else self.file
        parts = [p for p in (where, self.path, self.message) if p]
        return printable(": ".join(parts))

    def as_dict(self) -> dict[str, object]:
        return {
            "file": None if self.file is None else printable(self.file),
            "line": self.line,
            "path": None if self.path is None else printable(self.path),
            "message": printable(self.message),
        }


class InventoryError(InputError):
    """One or more problems in an inventory; str() gives one line per problem, at most
    MAX_SHOWN of them and then how many more there are."""

    MAX_SHOWN = 10

    def __init__(self, problems: list[Located]) -> None:
        self.problems = problems
        shown = problems[: self.MAX_SHOWN]
        self.lines = [p.text() for p in shown]
        more = len(problems) - len(shown)
        if more:
            where = printable(problems[0].file) + ": " if problems[0].file else ""
            self.lines.append(
                f"{where}and {more} more problem{'s' if more > 1 else ''} "
                "(fix these and validate again)"
            )
        super().__init__("\n".join(self.lines))

    def __str__(self) -> str:
        return "\n".join(self.lines)

    def details(self) -> list[dict[str, object]]:
        out = [p.as_dict() for p in self.problems[: self.MAX_SHOWN]]
        more = len(self.problems) - self.MAX_SHOWN
        if more > 0:
            out.append(
                {
                    "file": self.problems[0].file,
                    "line": None,
                    "path": None,
                    "message": f"and {more} more",
                }
            )
        return out


class OperationError(EdgekitError):
    """An operation on hosts failed (deploy stopped, unhealthy, ...)."""

    exit_code = ExitCode.FAILED


class PrerequisiteError(EdgekitError):
    """Something the command needs is missing on this machine (root, a program)."""

    exit_code = ExitCode.FAILED
