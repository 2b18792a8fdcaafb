"""Deploy locks: one on this machine per cluster, one on each host for the whole apply.

Both are flock(2) locks, so a deploy that dies (even by kill -9) releases them: the
kernel drops this machine's lock with the process, and a host's lock is held by a
command that ends when the deploy's SSH connection goes away.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

from edgekit.errors import InputError, OperationError
from edgekit.facts import DEPLOY_LOCK
from edgekit.remote import Held, HostError, Transport
from edgekit.remote.scripts import script

HOST_LOCK = DEPLOY_LOCK  # under /run: only root may create it
BUSY_EXIT = 75  # EX_TEMPFAIL: the lock script's exit code when another deploy holds it


def owner() -> str:
    """Who takes a lock: user@machine, PID and start time (UTC), as the other deploy
    will be told."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} since {started}"


def _local_path(cluster: str) -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", cluster)
    return Path(base) / f"edgekit-deploy-{safe}.lock"


@contextmanager
def local_lock(cluster: str) -> Iterator[None]:
    """This machine's lock for `cluster`; OperationError naming the holder if taken."""
    path = _local_path(cluster)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise InputError(
            f"cannot open the deploy lock {path}: {exc.strerror}",
            hint="set XDG_RUNTIME_DIR to a directory of your own",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
            raise OperationError(
                f"another deploy of cluster {cluster} is running on this machine ({holder})",
                hint=f"wait for it to finish; the lock is {path}",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (owner() + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def lock_command(who: str) -> str:
    return script("lock", lock=HOST_LOCK, owner=who, busy_exit=BUSY_EXIT)


def take(host: Transport, who: str) -> Held:
    """The host's deploy lock, held on a connection of its own (nothing else closes it
    by accident); OperationError naming who holds it when it is taken."""
    own = host.reopen(30.0)
    held = own.hold(lock_command(who))
    if held.first_line == "locked":

        def release() -> None:
            held.release()
            own.close()

        return Held(held.first_line, release)
    held.release()
    own.close()
    busy = held.first_line.removeprefix("busy").strip()
    if held.first_line.startswith("busy"):
        raise HostError(
            host.name,
            f"another deploy holds the host's lock ({busy or 'holder unknown'})",
            hint="wait for it to finish",
        )
    raise HostError(host.name, f"could not take the deploy lock {HOST_LOCK}: {busy or '?'}")


@contextmanager
def host_locks(hosts: Mapping[str, Transport], who: str) -> Iterator[None]:
    """Every host's lock, taken in order before any host changes; all released after."""
    with ExitStack() as stack:
        for host in hosts.values():
            stack.callback(take(host, who).release)
        yield
