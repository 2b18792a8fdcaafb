"""Backend hosts: a namespace each, running backend_server.py with the machine's python3."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from edgekit.errors import OperationError
from edgekit.lab.plan import (
    BACKEND_API_PORT,
    BACKEND_HTTP_PORT,
    BACKEND_TLS_PORT,
    CGROUP_DIR,
    LabHost,
    LabInfo,
)
from edgekit.lab.system import Proc, in_cgroups_argv, make_cgroups, remove_cgroup_tree, spawn
from edgekit.net import tcp_answers
from edgekit.progress import wait_until

SERVER = Path(__file__).with_name("backend_server.py")
PORTS = (BACKEND_HTTP_PORT, BACKEND_TLS_PORT, BACKEND_API_PORT)


def python3() -> str:
    # The server is stdlib only, so the machine's interpreter will do; the
    # running one is the fallback where there is no python3 on PATH.
    return shutil.which("python3") or sys.executable


def start(lab: LabInfo, host: LabHost, cert: Path, key: Path) -> Proc:
    cgroups = make_cgroups(CGROUP_DIR, host.name)
    for directory in cgroups:
        remove_cgroup_tree(directory, keep_top=True)
    argv = [
        "ip", "netns", "exec", host.netns,
        python3(), str(SERVER), "--name", host.name, "--cert", str(cert), "--key", str(key),
        "--ports", ",".join(str(p) for p in PORTS),
    ]  # fmt: skip
    return spawn(in_cgroups_argv(cgroups, argv), lab.state_dir / "hosts" / host.name / "server.log")


def answers(address: str, port: int, timeout: float = 0.5) -> bool:
    return tcp_answers(address, port, timeout)


def wait_ports(host: LabHost, server: Proc, timeout: float) -> None:
    pending = list(PORTS)

    def answering() -> bool:
        pending[:] = [p for p in pending if not answers(host.address, p)]
        if pending and not server.alive():
            raise OperationError(f"{host.name}: the backend server exited")
        return not pending

    if not wait_until(answering, timeout, 0.05):
        raise OperationError(f"{host.name}: ports {pending} do not answer on {host.address}")
