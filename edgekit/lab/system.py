"""Small wrappers over the machine: commands, processes, cgroups."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import OperationError
from edgekit.progress import wait_until

CGROUP_MOUNT = Path("/sys/fs/cgroup")


def run(
    argv: list[str], *, check: bool = True, timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as exc:
        raise OperationError(f"{' '.join(argv)} did not finish within {timeout:g} s") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise OperationError(f"{' '.join(argv)} failed: {detail[-1] if detail else result}")
    return result


@dataclass(frozen=True)
class Proc:
    """A process the lab started; the start time guards against a reused PID."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> Proc:
        return cls(pid, start_time(pid) or 0)

    def alive(self) -> bool:
        return start_time(self.pid) == self.start_time

    def reaped(self) -> bool:
        """Gone for good: exited and collected by its parent (not even a zombie)."""
        return start_time(self.pid, zombie=True) != self.start_time

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def start_time(pid: int, *, zombie: bool = False) -> int | None:
    """The process's start time in clock ticks; None if it is gone, or (unless
    `zombie`) has exited and waits for its parent to collect it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); split after the ")" because comm may hold spaces.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z" and not zombie:
        return None  # a zombie has already stopped
    return int(fields[19])


# Children this process started; kept so their exit can be collected (no zombies
# in a long pytest session) without a waitpid(-1) that would steal the exit
# status of subprocess.run calls in other threads.
_children: list[subprocess.Popen[bytes]] = []


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """Start a long-running lab process in its own session, output to log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )  # fmt: skip
    _children.append(child)
    return Proc.of(child.pid)


def reap() -> None:
    _children[:] = [c for c in _children if c.poll() is None]


def wait_gone(procs: list[Proc], timeout: float) -> bool:
    return bool(wait_until(lambda: not any(p.alive() for p in procs), timeout, 0.05))


def wait_reaped(procs: list[Proc], timeout: float) -> bool:
    """Until every one of `procs` has exited and been collected: our own children we
    collect here; the others (a lab started by another edgekit process) their parent,
    init, collects."""

    def all_reaped() -> bool:
        reap()
        return all(p.reaped() for p in procs)

    return bool(wait_until(all_reaped, timeout, 0.02))


# --- cgroups -----------------------------------------------------------------
# Every lab host runs in its own cgroup directory, in each hierarchy that
# tracks processes: on a hybrid machine both the v1 name=systemd tree and the
# unified tree (nspawn --keep-unit puts the container where it was started).


def cgroup_roots() -> list[Path]:
    if (CGROUP_MOUNT / "cgroup.controllers").exists():
        return [CGROUP_MOUNT]  # pure cgroup v2
    return [r for r in (CGROUP_MOUNT / "systemd", CGROUP_MOUNT / "unified") if r.is_dir()]


def unified_root() -> Path | None:
    for root in cgroup_roots():
        if (root / "cgroup.controllers").exists():
            return root
    return None


def cgroup_dirs(group: str, name: str) -> list[Path]:
    return [root / group / name for root in cgroup_roots()]


def make_cgroups(group: str, name: str) -> list[Path]:
    dirs = cgroup_dirs(group, name)
    for directory in dirs:
        directory.mkdir(parents=True, exist_ok=True)
    return dirs


# Runs "$@" again each time it exits with REBOOT_EXIT (systemd-nspawn's exit code when
# the container's systemd reboots), as systemd-nspawn@.service does; SIGTERM (lab down)
# is passed on to it and ends the loop.
REBOOT_EXIT = 133
_REBOOT_LOOP = (
    "stop=0; trap 'stop=1; kill -TERM \"$c\" 2>/dev/null' TERM INT HUP; "
    'while :; do "$@" & c=$!; rc=0; wait "$c" || rc=$?; '
    'while kill -0 "$c" 2>/dev/null; do rc=0; wait "$c" || rc=$?; done; '
    f'[ "$rc" -eq {REBOOT_EXIT} ] && [ "$stop" -eq 0 ] || exit "$rc"; done'
)


def in_cgroups_argv(dirs: list[Path], argv: list[str], *, reboots: bool = False) -> list[str]:
    """argv that joins the cgroups first, then execs argv (no preexec_fn: threads are
    safe). With `reboots`, argv runs again whenever it exits asking for a reboot."""
    joins = " && ".join(f'echo $$ > "{d}/cgroup.procs"' for d in dirs)
    body = f"{joins} && {{ {_REBOOT_LOOP}; }}" if reboots else f'{joins} && exec "$@"'
    return ["/bin/sh", "-c", body, "sh", *argv]


def cgroup_pids(directory: Path) -> list[int]:
    pids: list[int] = []
    for sub, _, _ in os.walk(directory):
        try:
            text = Path(sub, "cgroup.procs").read_text()
        except OSError:
            continue
        pids += [int(p) for p in text.split()]
    return pids


def kill_cgroup(group: str, name: str) -> None:
    """SIGKILL every process of the host at once (cgroup.kill), or one by one."""
    unified = unified_root()
    kill_file = unified / group / name / "cgroup.kill" if unified else None
    if kill_file and kill_file.exists():
        kill_file.write_text("1")
        return
    for directory in cgroup_dirs(group, name):
        for pid in cgroup_pids(directory):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def cgroup_empty(group: str, name: str) -> bool:
    return not any(cgroup_pids(d) for d in cgroup_dirs(group, name) if d.exists())


def wait_cgroup_empty(group: str, name: str, timeout: float) -> bool:
    return bool(wait_until(lambda: cgroup_empty(group, name), timeout, 0.02))


def remove_cgroup_tree(directory: Path, keep_top: bool = False) -> None:
    """rmdir bottom-up: a cgroup directory goes only when it has no children."""
    if not directory.is_dir():
        return
    for sub, _, _ in os.walk(directory, topdown=False):
        if keep_top and Path(sub) == directory:
            continue
        try:
            os.rmdir(sub)
        except OSError:
            pass


def container_init(directory: Path) -> int | None:
    """The machine PID of the process that is PID 1 in its own PID namespace."""
    for pid in cgroup_pids(directory):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                if len(ids) > 1 and ids[-1] == "1":
                    return pid
    return None
