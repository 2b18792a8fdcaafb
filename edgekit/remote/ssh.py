"""The SSH transport: the only module that imports fabric and paramiko.

Every failure to reach or authenticate becomes a one-line HostError naming the host.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

from edgekit.errors import OperationError
from edgekit.remote.base import Held, HostError, LineSink, Result, Transport


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Like ssh's StrictHostKeyChecking=accept-new: trust and record unknown keys only."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
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
class SshTransport(Transport):
    target: SshTarget
    _conn: Connection | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = self.target.name
        self.user = self.target.user

    @property
    def sudo_prefix(self) -> str:
        return "sudo -n " if self.needs_sudo else ""

    def reopen(self, connect_timeout: float) -> SshTransport:
        return SshTransport(
            replace(self.target, connect_timeout=min(self.target.connect_timeout, connect_timeout))
        )

    def connect(self) -> None:
        if self._conn is not None:
            return
        t = self.target
        known = Path(os.path.expanduser(t.known_hosts or "~/.ssh/known_hosts"))
        kwargs: dict[str, object] = {
            "allow_agent": True,
            "look_for_keys": t.identity_file is None,
            "banner_timeout": t.connect_timeout,
            "auth_timeout": t.connect_timeout,
        }
        if t.identity_file:
            key = Path(os.path.expanduser(t.identity_file))
            if not key.is_file():
                raise HostError(t.name, f"identity file {key} does not exist")
            kwargs["key_filename"] = str(key)
        conn = Connection(
            t.host,
            user=t.user,
            port=t.port,
            connect_timeout=t.connect_timeout,
            connect_kwargs=kwargs,
            config=Config(overrides={"load_ssh_configs": False}),
        )
        # fabric trusts unknown host keys by default; edgekit checks them like ssh does.
        conn.client.get_host_keys().clear()
        if known.is_file():
            conn.client.load_host_keys(str(known))
        conn.client.set_missing_host_key_policy(
            _AcceptNew(known) if t.accept_new else paramiko.RejectPolicy()
        )
        try:
            conn.open()
        except paramiko.BadHostKeyException:
            raise HostError(
                t.name,
                f"host key of {t.host} does not match {known} "
                "(possible man-in-the-middle, or the host was reinstalled)",
                hint=f"check it, then remove the old entry: ssh-keygen -R {t.host}",
            ) from None
        except paramiko.AuthenticationException:
            raise HostError(
                t.name,
                f"SSH authentication failed for user {t.user!r} at {t.host}:{t.port}",
                hint="check ssh.user and ssh.identity_file",
            ) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostError(
                    t.name,
                    f"host key of {t.host} is not in {known}",
                    hint="add it, or pass --accept-new-host-keys",
                ) from None
            raise HostError(t.name, f"SSH error at {t.host}:{t.port}: {exc}") from None
        except TimeoutError:
            raise HostError(t.name, f"connection to {t.host}:{t.port} timed out") from None
        except OSError as exc:  # refused, unreachable, NoValidConnectionsError
            raise HostError(
                t.name, f"cannot connect to {t.host}:{t.port}: {_connect_reason(exc)}"
            ) from None
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, command: str, sudo: bool, timeout: float | None, stdin: str | None) -> Result:
        assert self._conn is not None
        full = f"{self.sudo_prefix if sudo else ''}sh -c {shlex.quote(command)}"
        try:
            r = self._conn.run(
                full,
                hide=True,
                warn=True,
                timeout=timeout,
                in_stream=(io.StringIO(stdin) if stdin is not None else False),
            )
        except CommandTimedOut:
            raise HostError(
                self.name, f"command timed out after {timeout}s: {command.splitlines()[0][:80]}"
            ) from None
        except (OSError, paramiko.SSHException) as exc:
            raise HostError(self.name, f"SSH connection lost: {exc}") from None
        return Result(command, r.exited, r.stdout, r.stderr)

    def put(self, content: str | bytes, remote_path: str, mode: int = 0o600) -> None:
        """Upload as the SSH user (no sudo: fabric's put has none); install with sudo after."""
        data = content.encode() if isinstance(content, str) else content
        self.connect()
        assert self._conn is not None
        try:
            sftp = self._conn.sftp()
            with sftp.file(remote_path, "w") as fh:
                fh.write(data)
            sftp.chmod(remote_path, mode)
        except (OSError, paramiko.SSHException) as exc:
            raise HostError(self.name, f"upload to {remote_path} failed: {exc}") from None

    def get(self, remote_path: str) -> bytes:
        self.connect()
        assert self._conn is not None
        try:
            with self._conn.sftp().file(remote_path, "r") as fh:
                return bytes(fh.read())
        except (OSError, paramiko.SSHException) as exc:
            raise HostError(self.name, f"reading {remote_path} failed: {exc}") from None

    def hold(self, command: str, timeout: float = 30.0) -> Held:
        self.connect()
        assert self._conn is not None
        try:
            transport = self._conn.client.get_transport()
            if transport is None:
                raise paramiko.SSHException("no transport")
            chan = transport.open_session(timeout=timeout)
            chan.settimeout(timeout)
            chan.exec_command(f"{self.sudo_prefix}sh -c {shlex.quote(command)}")
            out = b""
            while b"\n" not in out:
                data = chan.recv(4096)
                if not data:
                    break
                out += data
        except (OSError, paramiko.SSHException) as exc:
            raise HostError(self.name, f"SSH connection lost: {exc}") from None
        return Held(out.split(b"\n")[0].decode(errors="replace"), chan.close)

    def _stream_once(
        self, command: str, on_line: LineSink, stop: threading.Event, idle: float
    ) -> None:
        watcher = self.reopen(2.0)
        try:
            watcher.connect()
            assert watcher._conn is not None
            transport = watcher._conn.client.get_transport()
            assert transport is not None
            chan = transport.open_session()
            chan.settimeout(idle)
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


def ssh_config_hosts(text: str) -> dict[str, dict[str, Any]]:
    """Each literal `Host` of an ssh_config text (such as `vagrant ssh-config` prints),
    with the options ssh would use for it, as paramiko reads them: lower-case keys,
    `identityfile` a list in order, everything else the first value given. A host
    without a HostName has no `hostname` key."""
    config = paramiko.SSHConfig.from_text(text)
    out: dict[str, dict[str, Any]] = {}
    for name in _host_names(text):
        options = dict(config.lookup(name))
        # paramiko fills in the alias itself as the host name when none is given.
        if options.get("hostname") == name and not re.search(
            r"(?im)^\s*hostname\b", _block(text, name)
        ):
            del options["hostname"]
        out[name] = options
    return out


def _host_names(text: str) -> list[str]:
    """Literal host names of the `Host` lines, in the order they appear (not patterns)."""
    names: list[str] = []
    for line in text.splitlines():
        words = line.replace("=", " ").split()
        if words and words[0].lower() == "host":
            names += [w for w in words[1:] if not any(c in w for c in "*?!") and w not in names]
    return names


def _block(text: str, name: str) -> str:
    """The lines of `Host name`'s block."""
    lines, inside = [], False
    for line in text.splitlines():
        words = line.replace("=", " ").split()
        if words and words[0].lower() == "host":
            inside = name in words[1:]
        elif inside:
            lines.append(line)
    return "\n".join(lines)
