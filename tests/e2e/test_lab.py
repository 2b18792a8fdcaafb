"""The appliance image and the local lab.

Unit tests (no root, no network) cover the pure parts: subnet choice, the
lab's inventory and known_hosts, the recipe, the mirror, the backend server.
Tests marked `lab` run against the real lab: nspawn containers booting
systemd with real sshd, haproxy and keepalived.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from edgekit.lab.plan import (
    LabInfo,
)
from tests.conftest import need_program, need_root

ROOT = Path(__file__).resolve().parents[2]
# The CLI with the lab commands imported explicitly, so these tests do not
# depend on edgekit.cli._register (tests/unit/test_cli.py checks that).
CLI = [
    sys.executable, "-c",
    "import edgekit.cli.lab; from edgekit.cli import run; run()",
]  # fmt: skip


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )


# --- the backend server, on loopback --------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_backend_server_answers_with_its_name_and_healthz(tmp_path: Path) -> None:
    need_program("openssl")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=t", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    ports = [free_port() for _ in range(3)]
    server = ROOT / "edgekit" / "lab" / "backend_server.py"
    proc = subprocess.Popen(
        [sys.executable, str(server), "--name", "nodeX", "--cert", str(cert), "--key", str(key),
         "--bind", "127.0.0.1", "--ports", ",".join(map(str, ports))],
    )  # fmt: skip
    try:
        wait_port("127.0.0.1", ports[2])
        assert http_get(f"http://127.0.0.1:{ports[0]}/") == "nodeX"
        assert http_get(f"https://127.0.0.1:{ports[1]}/") == "nodeX"
        assert http_get(f"https://127.0.0.1:{ports[2]}/healthz") == "ok"
        # A TCP check that never handshakes must not stall the TLS listener.
        with socket.create_connection(("127.0.0.1", ports[1])):
            assert http_get(f"https://127.0.0.1:{ports[1]}/") == "nodeX"
        # A slow download (failover-test's established connections): 1 KiB every 100 ms.
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/slow/0.5", timeout=5) as r:
            assert r.headers["Content-Length"] == "5120" and len(r.read()) == 5120
        assert 0.4 <= time.monotonic() - started < 3
    finally:
        proc.terminate()
        proc.wait(5)


# --- helpers for the lab tests ------------------------------------------------------


def wait_port(address: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{address}:{port} does not answer")


def http_get(url: str) -> str:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the lab's self-signed certificate
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        assert response.status == 200
        return str(response.read().decode().strip())


def leftovers() -> dict[str, list[str]]:
    """Everything of a lab that could be left on the machine."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found = {
        "netns": [n.split()[0] for n in netns.splitlines() if n.startswith("edgekit-")],
        "links": [ln.split(":")[1].strip().split("@")[0] for ln in links.splitlines()
                  if re.match(r"^\d+: (ekbr\d|ek-)", ln)],
        "mounts": [m for m in mounts if " edgekit-" in m or "/edgekit/lab/" in m],
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob("*/edgekit-lab")]
        + [str(p) for p in Path("/sys/fs/cgroup").glob("edgekit-lab")],
        "processes": lab_processes(),
    }  # fmt: skip
    return {k: v for k, v in found.items() if v}


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def exists(pid: int, start_time: int) -> bool:
    """This very process (not a reuse of its PID) is still in /proc, zombie or not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return int(stat.rsplit(")", 1)[1].split()[19]) == start_time


def lab_processes() -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cgroups = (proc / "cgroup").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue  # already dead; this machine's PID 1 reaps orphans lazily
        if (
            "/edgekit-lab/" in cgroups
            or "backend_server.py" in cmdline
            or ("systemd-nspawn" in cmdline and "/edgekit/lab/" in cmdline)
        ):
            found.append(f"{proc.name} {cmdline[:80]}")
    return found


# --- the lab: its own up/down cycles (run before the shared lab) -------------------


@pytest.mark.lab
def test_lab_down_leaves_nothing_behind(lab_cycle: None) -> None:
    from edgekit.lab import local, state

    up = cli("lab", "up")
    assert up.returncode == 0, up.stderr
    assert Path(up.stdout.strip()).name == "edge.yaml"
    assert leftovers(), "the lab was not up, so this test would prove nothing"
    saved = state.load(local.state_dir())
    assert saved is not None and saved[2], "the lab recorded no processes"
    procs = list(saved[2].values())
    down = cli("lab", "down")
    assert down.returncode == 0, down.stderr
    # When `lab down` returns, every process it started is gone: exited and reaped, not
    # a zombie waiting for its parent.
    assert [p.pid for p in procs if exists(p.pid, p.start_time)] == []
    assert leftovers() == {}
    again = cli("lab", "down")  # nothing there: still fine
    assert again.returncode == 0, again.stderr


@pytest.mark.lab
def test_two_ups_in_a_row_leave_one_lab(lab_cycle: None) -> None:
    from edgekit.lab import local

    first = local.up(peers=2, backends=1)
    second = local.up(peers=1, backends=1)
    assert [h.name for h in second.hosts] == ["proxy1", "node1"]
    assert second.subnet == first.subnet  # the first lab's routes were gone first
    found = leftovers()
    assert sorted(found["netns"]) == ["edgekit-node1", "edgekit-proxy1"]
    assert sorted(found["links"]) == ["ek-node1", "ek-proxy1", "ekbr0"]
    assert len([m for m in found["mounts"] if " edgekit-" in m]) == 1
    assert len([p for p in found["processes"] if "systemd-nspawn" in p]) == 1
    assert [s.up for s in local.status()] == [True, True]


@pytest.mark.lab
def test_lab_up_cleans_a_half_built_lab_first(lab_cycle: None) -> None:
    from edgekit.lab import local

    local.down()
    # What an interrupted `lab up` leaves: a bridge and a namespace, no record.
    subprocess.run(["ip", "link", "add", "ekbr0", "type", "bridge"], check=True)
    subprocess.run(["ip", "netns", "add", "edgekit-proxy1"], check=True)
    lab = local.up(peers=1, backends=1)
    assert [s.up for s in local.status()] == [True, True]
    assert lab.peers[0].name == "proxy1"
    local.down()
    assert leftovers() == {}


@pytest.mark.lab
def test_lab_commands_without_root_say_what_is_missing() -> None:
    need_root()  # to drop it
    need_program("setpriv")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *CLI, "lab", "down"]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "edgekit: the local lab needs root: run it with sudo"
    ]


# --- the shared lab -----------------------------------------------------------------


@pytest.mark.lab
def test_every_proxy_accepts_ssh_with_strict_host_key_checking(lab: LabInfo) -> None:
    known = lab.known_hosts.read_text()
    for peer in lab.peers:
        assert peer.address in known
        argv = [
            "ssh", "-i", str(lab.identity_file), "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={lab.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            f"{lab.ssh_user}@{peer.address}", "hostname; sudo -n id -u",
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [peer.name, "0"]


@pytest.mark.lab
def test_ssh_refuses_a_host_whose_key_is_not_the_labs(lab: LabInfo, tmp_path: Path) -> None:
    # Proves strict checking is real: the same login against another host's key fails.
    first, second = lab.peers[0], lab.peers[1]
    wrong = tmp_path / "known_hosts"
    line = next(
        x for x in lab.known_hosts.read_text().splitlines() if x.startswith(second.address + " ")
    )
    wrong.write_text(line.replace(second.address, first.address, 1) + "\n")
    argv = [
        "ssh", "-i", str(lab.identity_file), "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={wrong}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", f"{lab.ssh_user}@{first.address}", "true",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in result.stderr


@pytest.mark.lab
def test_each_proxy_runs_systemd_with_the_edge_packages_and_its_own_identity(
    lab: LabInfo, lab_ssh
) -> None:
    machine_ids = set()
    for peer in lab.peers:
        result = lab_ssh(
            peer.name,
            "systemctl is-system-running; "
            "dpkg-query -W -f='${Package} ${Status}\\n' haproxy keepalived openssh-server; "
            "systemctl is-active ssh; cat /etc/machine-id",
        )
        lines = result.stdout.splitlines()
        assert lines[0] == "running", (lines, lab_ssh(peer.name, "systemctl --failed").stdout)
        assert lines[1:4] == [
            "haproxy install ok installed",
            "keepalived install ok installed",
            "openssh-server install ok installed",
        ]
        assert lines[4] == "active"
        machine_ids.add(lines[5])
    assert len(machine_ids) == len(lab.peers)


@pytest.mark.lab
def test_each_proxy_may_add_the_vip_and_set_its_network_sysctls(lab: LabInfo, lab_ssh) -> None:
    # What keepalived and haproxy need: CAP_NET_ADMIN and a writable /proc/sys/net.
    peer = lab.peers[0]
    # An address of the lab's subnet that nothing uses (the VIP may be held already).
    spare = ipaddress.IPv4Address(lab.vip) + 77
    result = lab_ssh(
        peer.name,
        f"sudo ip addr add {spare}/24 dev eth1 && sudo ip addr del {spare}/24 dev eth1 && "
        "sudo sysctl -qw net.ipv4.ip_nonlocal_bind=1 && cat /proc/sys/net/ipv4/ip_nonlocal_bind",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


@pytest.mark.lab
def test_each_backend_answers_on_its_ports_from_the_machine(lab: LabInfo) -> None:
    for node in lab.backends:
        assert http_get(f"http://{node.address}:30080/") == node.name
        assert http_get(f"https://{node.address}:30443/") == node.name
        assert http_get(f"https://{node.address}:6443/healthz") == "ok"


@pytest.mark.lab
def test_lab_has_no_route_out_and_no_uplink(lab: LabInfo, lab_ssh) -> None:
    for peer in lab.peers:
        routes = lab_ssh(peer.name, "ip -4 route show").stdout
        assert "default" not in routes
        assert ipaddress.IPv4Network(routes.split()[0]) == ipaddress.IPv4Network(lab.subnet)
    ports = subprocess.run(["ip", "-o", "link", "show", "master", lab.bridge],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    names = [line.split(":")[1].strip().split("@")[0] for line in ports.splitlines()]
    assert sorted(names) == sorted(h.veth for h in lab.hosts)


@pytest.mark.lab
def test_lab_status_lists_every_host_up(lab: LabInfo) -> None:
    result = cli("lab", "status", "--json")
    assert result.returncode == 0, result.stderr
    import json

    hosts = json.loads(result.stdout)
    assert [(h["name"], h["role"], h["up"]) for h in hosts] == [
        *((p.name, "proxy", True) for p in lab.peers),
        *((b.name, "backend", True) for b in lab.backends),
    ]
    path = cli("lab", "inventory")
    assert path.stdout.strip() == str(lab.inventory)


@pytest.mark.lab
def test_killed_host_is_gone_at_once_and_boots_again_with_the_same_identity(
    lab: LabInfo, lab_ssh
) -> None:
    from edgekit.lab import local

    peer = lab.peers[-1]
    before = lab_ssh(peer.name, "cat /etc/machine-id").stdout
    old_pid = local.host_pid(peer.name)
    local.kill_host(peer.name)
    try:
        assert not running(old_pid)
        link = subprocess.run(["ip", "-o", "link", "show", peer.veth], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
        assert "state DOWN" in link
        assert {s.name: s.up for s in local.status()}[peer.name] is False
    finally:
        local.start_host(peer.name)
    after = lab_ssh(peer.name, "cat /etc/machine-id")  # strict ssh: same host key
    assert after.returncode == 0, after.stderr
    assert after.stdout == before
    assert local.host_pid(peer.name) != old_pid


def test_the_provider_cuts_and_restores_a_hosts_link_from_outside(lab: LabInfo) -> None:
    from edgekit.lab.local import LocalLab
    from edgekit.net import tcp_answers

    provider = LocalLab()
    peer = lab.peers[-1]
    assert tcp_answers(peer.address, 22, timeout=3.0)
    provider.link_down(peer.name)
    try:
        assert not tcp_answers(peer.address, 22, timeout=1.0)
    finally:
        provider.link_up(peer.name)
    assert tcp_answers(peer.address, 22, timeout=5.0)
