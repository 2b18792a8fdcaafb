"""Typed errors and the one table of exit codes every command uses."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # an operation failed: deploy stopped, cluster unhealthy, scenario failed
    BAD_INPUT = 2  # inventory, flags, missing file or secret
    PENDING = 3  # --dry-run only: changes are pending
    INTERRUPTED = 130


class EdgekitError(Exception):
    """An error a user can cause or fix; the CLI prints it as one line."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class InputError(EdgekitError):
    """Bad input: inventory, flags, a missing file or secret."""

    exit_code = ExitCode.BAD_INPUT


class OperationError(EdgekitError):
    """An operation on hosts failed (deploy stopped, unhealthy, ...)."""

    exit_code = ExitCode.FAILED


class PrerequisiteError(EdgekitError):
    """Something the command needs is missing on this machine (root, a program)."""

    exit_code = ExitCode.FAILED
