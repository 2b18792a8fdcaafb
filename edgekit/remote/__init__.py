"""SSH transport: the only module that imports fabric/paramiko.

A Host runs commands (optionally with sudo) and moves files; every failure to
reach or authenticate becomes a one-line HostError naming the host.
"""

from __future__ import annotations

import io
import os
import shlex
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

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


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Like ssh's StrictHostKeyChecking=accept-new: trust and record unknown keys only."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with self.known_hosts.open("a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def _connect_reason(exc: OSError) -> str:
    # paramiko wraps per-address errors in NoValidConnectionsError.errors.
    causes = list(getattr(exc, "errors", {}).values()) or [exc]
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "connection refused"
    first = causes[0]
    return getattr(first, "strerror", None) or str(first)


@dataclass
class SshTarget:
    name: str  # peer name, used in every message
    host: str
    port: int = 22
    user: str = "root"
    identity_file: str | None = None
    known_hosts: str | None = None
    accept_new: bool = False
    connect_timeout: float = 10.0


@dataclass
class Host:
    target: SshTarget
    _conn: Connection | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def sudo_prefix(self) -> str:
        return "" if self.target.user == "root" else "sudo -n "

    def connect(self) -> None:
        if self._conn is not None:
            return
        t = self.target
        known = Path(os.path.expanduser(t.known_hosts or "~/.ssh/known_hosts"))
        kwargs: dict[str, object] = {"allow_agent": True, "look_for_keys": t.identity_file is None,
                                     "banner_timeout": t.connect_timeout,
                                     "auth_timeout": t.connect_timeout}
        if t.identity_file:
            key = Path(os.path.expanduser(t.identity_file))
            if not key.is_file():
                raise HostError(t.name, f"identity file {key} does not exist")
            kwargs["key_filename"] = str(key)
        conn = Connection(t.host, user=t.user, port=t.port, connect_timeout=t.connect_timeout,
                          connect_kwargs=kwargs, config=Config(overrides={"load_ssh_configs":
                                                                           False}))
        # fabric trusts unknown host keys by default; edgekit checks them like ssh does.
        conn.client.get_host_keys().clear()
        if known.is_file():
            conn.client.load_host_keys(str(known))
        conn.client.set_missing_host_key_policy(
            _AcceptNew(known) if t.accept_new else paramiko.RejectPolicy())
        try:
            conn.open()
        except paramiko.BadHostKeyException:
            raise HostError(t.name, f"host key of {t.host} does not match {known} "
                            "(possible man-in-the-middle, or the host was reinstalled)",
                            hint=f"check it, then remove the old entry: ssh-keygen -R {t.host}"
                            ) from None
        except paramiko.AuthenticationException:
            raise HostError(t.name, f"SSH authentication failed for user {t.user!r} at "
                            f"{t.host}:{t.port}",
                            hint="check ssh.user and ssh.identity_file") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostError(t.name, f"host key of {t.host} is not in {known}",
                                hint="add it, or pass --accept-new-host-keys") from None
            raise HostError(t.name, f"SSH error at {t.host}:{t.port}: {exc}") from None
        except TimeoutError:
            raise HostError(t.name, f"connection to {t.host}:{t.port} timed out") from None
        except OSError as exc:  # refused, unreachable, NoValidConnectionsError
            raise HostError(t.name, f"cannot connect to {t.host}:{t.port}: "
                            f"{_connect_reason(exc)}") from None
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self, command: str, *, sudo: bool = False, timeout: float | None = 120,
            stdin: str | None = None) -> Result:
        """Run `command` through sh; never raises on a non-zero exit (see Result.ok)."""
        self.connect()
        assert self._conn is not None
        full = f"{self.sudo_prefix if sudo else ''}sh -c {shlex.quote(command)}"
        try:
            r = self._conn.run(full, hide=True, warn=True, timeout=timeout, in_stream=(
                io.StringIO(stdin) if stdin is not None else False))
        except CommandTimedOut:
            raise HostError(self.name, f"command timed out after {timeout}s: "
                            f"{command.splitlines()[0][:80]}") from None
        except (OSError, paramiko.SSHException) as exc:
            raise HostError(self.name, f"SSH connection lost: {exc}") from None
        return Result(command, r.exited, r.stdout, r.stderr)

    def check(self, command: str, what: str, **kwargs: object) -> Result:
        result = self.run(command, **kwargs)  # type: ignore[arg-type]
        if not result.ok:
            raise CommandError(self.name, what, result)
        return result

    def put_text(self, content: str, remote_path: str, mode: int = 0o600) -> None:
        """Upload as the SSH user (no sudo: fabric's put has none); install with sudo after."""
        self.connect()
        assert self._conn is not None
        try:
            sftp = self._conn.sftp()
            with sftp.file(remote_path, "w") as fh:
                fh.write(content.encode())
            sftp.chmod(remote_path, mode)
        except (OSError, paramiko.SSHException) as exc:
            raise HostError(self.name, f"upload to {remote_path} failed: {exc}") from None


def stream_lines(host: Host, command: str, on_line: Callable[[str], None],
                 stop: threading.Event, idle_timeout: float = 2.0) -> None:
    """Run a long-lived command and hand each stdout line to on_line until `stop` is set.

    Reconnects when the connection dies or stalls for idle_timeout (a host that lost
    its link or power), so a watcher outlives the fault it is watching.
    """
    while not stop.is_set():
        watcher = Host(SshTarget(**{**host.target.__dict__,
                                    "connect_timeout": min(host.target.connect_timeout, 2.0)}))
        try:
            watcher.connect()
            assert watcher._conn is not None
            transport = watcher._conn.client.get_transport()
            assert transport is not None
            chan = transport.open_session()
            chan.settimeout(idle_timeout)
            chan.exec_command(f"sh -c {shlex.quote(command)}")
            buf = b""
            while not stop.is_set():
                try:
                    data = chan.recv(4096)
                except TimeoutError:
                    break  # stalled: reconnect
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace"))
        except (OSError, paramiko.SSHException, OperationError):
            stop.wait(0.2)
        finally:
            watcher.close()
