"""Day 2 in the local lab: deploy locks, what a stopped deploy leaves behind, and a
re-run that converges after kill -9 at each point of a host's apply.

Each test starts from, and leaves, the lab deployed with its own inventory. A change
between the two inventories used here is a backend server (node3), which only
haproxy.cfg carries: the server list haproxy runs says which config it loaded.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgekit.deploy.lock import lock_command
from edgekit.facts import BACKUP_ROOT, PENDING
from edgekit.status import SHOW_STAT, parse_show_stat
from tests.e2e.cli import edgekit, one_line_error, status

pytestmark = pytest.mark.lab

LEFTOVERS = (
    f"ls -d /run/edgekit-stage.* /tmp/edgekit-upload.* {BACKUP_ROOT}/* {PENDING} 2>/dev/null"
)


@pytest.fixture(scope="module")
def inventories(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ "full": the lab's inventory; "fewer": the same without node3."""
    work = tmp_path_factory.mktemp("day2")
    base = yaml.safe_load(Path(lab.inventory).read_text())
    fewer = json.loads(json.dumps(base))
    for name, servers in fewer["backends"].items():
        fewer["backends"][name] = [s for s in servers if s["name"] != "node3"]
    paths = {"full": work / "full.yaml", "fewer": work / "fewer.yaml"}
    paths["full"].write_text(Path(lab.inventory).read_text())
    paths["fewer"].write_text(yaml.safe_dump(fewer, sort_keys=False))
    assert edgekit("deploy", "-i", str(paths["full"]), "--yes").returncode == 0
    return paths


class Deploy:
    """`edgekit deploy --yes` in the background; its stderr lines as they come."""

    def __init__(self, inventory: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgekit", "deploy", "-i", str(inventory), "--yes"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "EDGEKIT_DEBUG": "0", **(env or {})},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stderr is not None
        stderr = self.proc.stderr

        def pump() -> None:
            for line in stderr:
                self.lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, f"deploy ended first: {self.seen}"
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no progress line matched {pattern!r}: {self.seen}")

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL, by PID, of the process this test started
        self.proc.wait(timeout=30)

    def finish(self, timeout: float = 300) -> int:
        self.proc.wait(timeout=timeout)
        return self.proc.returncode


def running_servers(lab_ssh: Any, host: str) -> dict[str, set[str]]:
    """Per backend, the servers the running haproxy has (its runtime API)."""
    result = lab_ssh(host, f"sudo sh -c {shlex.quote(SHOW_STAT)}")
    assert result.returncode == 0, result.stderr
    table = parse_show_stat(result.stdout, {"http", "https", "kubernetes-api"})
    return {backend: set(servers) for backend, servers in table.items()}


def installed_servers(lab_ssh: Any, host: str) -> dict[str, set[str]]:
    """Per backend, the servers in the haproxy.cfg installed on the host."""
    text = lab_ssh(host, "sudo cat /etc/haproxy/haproxy.cfg").stdout
    out: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["backend"]:
            current = words[1]
        elif words[:1] in (["frontend"], ["listen"], ["defaults"], ["global"]):
            current = None
        elif current and words[:1] == ["server"]:
            out.setdefault(current, set()).add(words[1])
    return {b: s for b, s in out.items() if b in {"http", "https", "kubernetes-api"}}


def assert_converged(lab: Any, lab_ssh: Any, inventory: Path, servers: set[str]) -> None:
    code, data = status(inventory)
    assert code == 0, data["problems"]
    for peer in lab.peer_names:
        for backend, running in running_servers(lab_ssh, peer).items():
            assert running == servers, (peer, backend, running)
        assert lab_ssh(peer, LEFTOVERS).stdout.split() == [], peer


# --- locks ----------------------------------------------------------------------------


def test_a_second_deploy_from_this_machine_fails_fast_naming_the_first(
    lab: Any, inventories: dict[str, Path]
) -> None:
    first = Deploy(inventories["fewer"])
    try:
        first.wait_for(r": applying \(")
        started = time.monotonic()
        second = edgekit("deploy", "-i", str(inventories["fewer"]), "--yes")
        took = time.monotonic() - started
        assert second.returncode == 1, second.stderr
        line = one_line_error(second)
        assert "another deploy of cluster" in line and f"pid {first.proc.pid} " in line, line
        assert took < 10, took
    finally:
        assert first.finish() == 0, first.seen
    assert edgekit("deploy", "-i", str(inventories["full"]), "--yes").returncode == 0


def test_a_deploy_from_another_machine_is_refused_by_the_host_lock_until_it_drops(
    lab: Any, lab_ssh: Any, inventories: dict[str, Path], tmp_path: Path
) -> None:
    from edgekit.lab import local

    # Another machine's deploy holds proxy2's lock: the same command over its own SSH.
    holder = "ops@elsewhere pid 777 since 2026-12-03T07:00:00Z"
    argv = local.ssh_argv("proxy2", [f"sudo sh -c {shlex.quote(lock_command(holder))}"])
    other = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "locked"
        # A separate runtime dir: this machine's own lock is not what stops it.
        env = {"XDG_RUNTIME_DIR": str(tmp_path)}
        refused = edgekit("deploy", "-i", str(inventories["fewer"]), "--yes", env=env)
        assert refused.returncode == 1
        line = one_line_error(refused)
        assert f"proxy2: another deploy holds the host's lock ({holder})" in line, line
        assert installed_servers(lab_ssh, "proxy1")["http"] == {"node1", "node2", "node3"}
    finally:
        other.kill()  # the other deploy dies: its connection drops, the lock with it
        other.wait(timeout=30)
    result = edgekit("deploy", "-i", str(inventories["full"]), "--yes")
    assert result.returncode == 0, result.stderr


# --- what a stopped deploy leaves, and the re-run that converges ----------------------

KILL_POINTS = {
    "before-install": r"proxy\d: applying \(",
    "mid-install": r"proxy\d: validated \(.*installing",
    # The deploy pauses there (a test-only setting): the files are installed and haproxy
    # still runs the old ones when it dies - the case that must not pass for healthy.
    "before-reload": r"proxy\d: pausing .* before systemctl (reload|restart) haproxy",
    "after-reload": r"proxy\d: waiting until healthy",
}
PAUSE = {"EDGEKIT_TEST_PAUSE_BEFORE_RELOAD": "3"}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_at_each_point_then_status_is_right_and_a_rerun_converges(
    lab: Any, lab_ssh: Any, inventories: dict[str, Path], point: str
) -> None:
    run = Deploy(inventories["fewer"], env=PAUSE if point == "before-reload" else None)
    line = run.wait_for(KILL_POINTS[point])
    run.kill()
    host = line.split(":", 1)[0].strip()
    time.sleep(1)  # what the host was running when the deploy died, finishes
    code, data = status(inventories["fewer"])
    running = running_servers(lab_ssh, host)["http"]
    on_disk = installed_servers(lab_ssh, host)["http"]
    stale = f"{host}: haproxy runs an older config than /etc/haproxy/haproxy.cfg"
    print(f"{point}: killed at {line.strip()!r}; running == installed: {running == on_disk}")
    if point == "before-reload":
        assert running != on_disk, (running, on_disk)  # the pause made sure of it
    if running != on_disk:  # the bug this guards against: new file, old haproxy
        assert code == 1 and any(p.startswith(stale) for p in data["problems"]), data
        dry = edgekit("deploy", "-i", str(inventories["fewer"]), "--dry-run")
        assert dry.returncode == 3 and "will reload" in dry.stdout, dry.stdout
    else:
        assert not any(p.startswith(stale) for p in data["problems"]), data
    assert (code == 0) == (data["problems"] == []), data

    rerun = edgekit("deploy", "-i", str(inventories["fewer"]), "--yes")
    assert rerun.returncode == 0, rerun.stderr
    assert_converged(lab, lab_ssh, inventories["fewer"], {"node1", "node2"})

    assert edgekit("deploy", "-i", str(inventories["full"]), "--yes").returncode == 0
    assert_converged(lab, lab_ssh, inventories["full"], {"node1", "node2", "node3"})


def test_staging_left_by_a_stopped_deploy_is_reported_and_removed_by_the_next(
    lab: Any, lab_ssh: Any, inventories: dict[str, Path]
) -> None:
    stale = "/run/edgekit-stage.left0"
    lab_ssh("proxy1", f"sudo mkdir -p {stale}/etc && echo secret | sudo tee {stale}/etc/x")
    code, data = status(inventories["full"])
    assert code == 1 and any(stale in p for p in data["problems"]), data
    result = edgekit("deploy", "-i", str(inventories["full"]), "--yes")
    assert result.returncode == 0, result.stderr
    assert stale in result.stderr  # said what it removed
    assert_converged(lab, lab_ssh, inventories["full"], {"node1", "node2", "node3"})
