"""The transport seam: what every operation needs from a host, and nothing more.

Operations (deploy, status, failover, the firewall's commit-confirmed load) take their
hosts as a mapping of peer name to Transport. The SSH transport (edgekit.remote.ssh,
the only module that imports fabric) is one implementation; edgekit.remote.fake's
scripted host is another, for tests without root or network.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from edgekit.errors import OperationError


class HostError(OperationError):
    """A host could not be reached, authenticated, or lacks sudo."""

    def __init__(self, host: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{host}: {message}", hint=hint)
        self.host = host


@dataclass(frozen=True)
class Result:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def last_line(self) -> str:
        lines = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return lines[-1] if lines else f"exit code {self.exit_code}"


class CommandError(OperationError):
    """A remote command failed; keeps the Result that caused it."""

    def __init__(self, host: str, what: str, result: Result) -> None:
        super().__init__(f"{host}: {what} failed: {result.last_line()}")
        self.host = host
        self.result = result


LineSink = Callable[[str], None]


@dataclass
class Held:
    """A command that keeps running on the host while this machine holds it (a lock).
    `first_line` is what it printed first; release() ends it. If this process dies, the
    connection drops and the host ends the command by itself."""

    first_line: str
    release: Callable[[], None]


class Transport(ABC):
    """One host: run commands (optionally with sudo), move files, open new connections.

    `run` never raises on a non-zero exit (see Result.ok); it raises HostError when the
    host cannot be reached or the connection is lost.
    """

    name: str  # the peer name, used in every message
    user: str  # the login user; anyone but root runs `sudo=True` commands with sudo -n

    @property
    def needs_sudo(self) -> bool:
        return self.user != "root"

    @abstractmethod
    def connect(self) -> None:
        """Open the connection now (run opens it on first use)."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection; the next run opens a new one."""

    def run(
        self,
        command: str,
        *,
        sudo: bool = False,
        timeout: float | None = 120,
        stdin: str | None = None,
    ) -> Result:
        """Run `command` through sh on the host (connecting first if need be)."""
        self.connect()
        return self._run(command, sudo, timeout, stdin)

    @abstractmethod
    def _run(self, command: str, sudo: bool, timeout: float | None, stdin: str | None) -> Result:
        """run() on a connected host."""

    @abstractmethod
    def put(self, content: str | bytes, remote_path: str, mode: int = 0o600) -> None:
        """Write a file as the login user (no sudo: install it into place with run)."""

    @abstractmethod
    def get(self, remote_path: str) -> bytes:
        """Read a file as the login user."""

    @abstractmethod
    def reopen(self, connect_timeout: float) -> Transport:
        """A new, independent connection to the same host (which a firewall must admit
        afresh, unlike an established one)."""

    def stream(
        self,
        command: str,
        on_line: LineSink,
        stop: threading.Event,
        idle_timeout: float = 2.0,
    ) -> None:
        """Run a long-lived command and hand each stdout line to on_line until `stop` is
        set, reconnecting when the connection dies or stalls (a host that lost its link
        or power), so a watcher outlives the fault it is watching."""
        while not stop.is_set():
            self._stream_once(command, on_line, stop, idle_timeout)

    @abstractmethod
    def _stream_once(
        self, command: str, on_line: LineSink, stop: threading.Event, idle: float
    ) -> None:
        """One connection's worth of stream(): return when it ends, stalls `idle` seconds
        or `stop` is set."""

    @abstractmethod
    def hold(self, command: str, timeout: float = 30.0) -> Held:
        """Start `command` (with sudo) with its stdin open, and return once it printed
        a line or exited. It runs until release() closes its stdin, or until the
        connection drops (this machine died): the command should end at end of input."""

    def check(
        self,
        command: str,
        what: str,
        *,
        sudo: bool = False,
        timeout: float | None = 120,
        stdin: str | None = None,
    ) -> Result:
        """run(), but a non-zero exit raises CommandError naming `what`."""
        result = self.run(command, sudo=sudo, timeout=timeout, stdin=stdin)
        if not result.ok:
            raise CommandError(self.name, what, result)
        return result


Hosts = dict[str, Transport]  # peer name -> its transport, in inventory order
