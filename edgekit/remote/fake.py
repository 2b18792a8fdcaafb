"""A scripted host for tests: answers commands by rule, records every call, never
touches a network. Like pyinfra's test connectors, it makes operations testable as data:
facts in, commands out.

    host = FakeHost("proxy1")
    host.on("systemctl reload haproxy", exit_code=1, stderr="Job failed")
    ...
    assert host.ran("rm -rf /run/edgekit-stage")
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from edgekit.remote.base import Held, HostError, LineSink, Result, Transport

# A responder gets the command and returns its Result, or raises (HostError for a lost
# connection, KeyboardInterrupt for Ctrl-C at that moment, ...).
Responder = Callable[[str], Result]


@dataclass(frozen=True)
class Call:
    command: str
    sudo: bool
    connection: int  # which connection ran it: 0 the first, +1 for each reopen()


@dataclass
class _Rule:
    pattern: re.Pattern[str]
    respond: Responder
    times: int | None  # None: for ever


@dataclass
class _Shared:
    """What every connection to one fake host shares: its rules, calls and files."""

    rules: list[_Rule] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    reachable: bool = True
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    lines: list[str] = field(default_factory=list)  # what stream() hands out
    held: list[str] = field(default_factory=list)  # commands hold() runs now


class FakeHost(Transport):
    def __init__(
        self, name: str, user: str = "root", *, _shared: _Shared | None = None, _connection: int = 0
    ) -> None:
        self.name = name
        self.user = user
        self.shared = _shared or _Shared()
        self.connection = _connection
        self.closed = False

    # --- scripting -------------------------------------------------------------------
    def on(
        self,
        pattern: str,
        *,
        exit_code: int = 0,
        stdout: str = "",
        stderr: str = "",
        respond: Responder | None = None,
        times: int | None = None,
    ) -> FakeHost:
        """Answer commands that match `pattern` (a regular expression, searched). The
        newest matching rule wins; `times` limits how often it applies."""
        responder = respond or (lambda cmd: Result(cmd, exit_code, stdout, stderr))
        with self.shared.lock:
            self.shared.rules.insert(0, _Rule(re.compile(pattern), responder, times))
        return self

    def set_reachable(self, reachable: bool) -> None:
        """An unreachable host refuses every command and every new connection."""
        self.shared.reachable = reachable

    @property
    def calls(self) -> list[Call]:
        return list(self.shared.calls)

    def commands(self) -> list[str]:
        return [c.command for c in self.shared.calls]

    def ran(self, pattern: str) -> bool:
        return any(re.search(pattern, c) for c in self.commands())

    def index(self, pattern: str) -> int:
        """Position of the first call matching `pattern` (ValueError if none)."""
        for i, command in enumerate(self.commands()):
            if re.search(pattern, command):
                return i
        raise ValueError(f"{self.name}: no command matched {pattern!r}")

    # --- Transport -------------------------------------------------------------------
    def connect(self) -> None:
        if not self.shared.reachable:
            raise HostError(self.name, "connection timed out (fake host unreachable)")
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def _run(self, command: str, sudo: bool, timeout: float | None, stdin: str | None) -> Result:
        with self.shared.lock:
            self.shared.calls.append(Call(command, sudo, self.connection))
            rule = next((r for r in self.shared.rules if r.pattern.search(command)), None)
            if rule is not None and rule.times is not None:
                rule.times -= 1
                if rule.times == 0:
                    self.shared.rules.remove(rule)
        if rule is None:
            return Result(command, 0, "", "")
        return rule.respond(command)

    def put(self, content: str | bytes, remote_path: str, mode: int = 0o600) -> None:
        self.connect()
        data = content.encode() if isinstance(content, str) else content
        with self.shared.lock:
            self.shared.calls.append(Call(f"put {remote_path}", False, self.connection))
            self.shared.files[remote_path] = data

    def get(self, remote_path: str) -> bytes:
        self.connect()
        try:
            return self.shared.files[remote_path]
        except KeyError:
            raise HostError(self.name, f"reading {remote_path} failed: no such file") from None

    def hold(self, command: str, timeout: float = 30.0) -> Held:
        """Answered like run() (its stdout's first line); held until released."""
        result = self.run(command, sudo=True, timeout=timeout)
        first = (result.stdout.splitlines() or [""])[0]
        if not result.ok:
            return Held(first, lambda: None)
        with self.shared.lock:
            self.shared.held.append(command)

        def release() -> None:
            with self.shared.lock:
                if command in self.shared.held:
                    self.shared.held.remove(command)

        return Held(first, release)

    def reopen(self, connect_timeout: float) -> FakeHost:
        with self.shared.lock:
            self.shared.connections += 1
            number = self.shared.connections
        return FakeHost(self.name, self.user, _shared=self.shared, _connection=number)

    def _stream_once(
        self, command: str, on_line: LineSink, stop: threading.Event, idle: float
    ) -> None:
        for line in list(self.shared.lines):
            if stop.is_set():
                return
            on_line(line)
        stop.wait()
