"""The local lab: proxy hosts as nspawn containers and backend hosts as namespaces,
on one private bridge of this machine.

Public API: up, down, status, info, inventory_path, ssh_argv, kill_host,
start_host, host_pid. Everything the lab creates is named edgekit-* / ek*, is
recorded in the state directory, and `down` removes it even when half built.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import yaml

from edgekit.errors import InputError, OperationError, PrerequisiteError
from edgekit.hostfs import locked, mounts_under
from edgekit.image import build_image
from edgekit.lab import backends, containers, keys, network, state
from edgekit.lab.base import Capability, HostStatus, Role, marker_line
from edgekit.lab.plan import (
    BRIDGE,
    CGROUP_DIR,
    LabHost,
    LabInfo,
    check_counts,
    check_subnet,
    choose_subnet,
    inventory_dict,
    known_hosts_text,
    plan_lab,
)
from edgekit.lab.system import (
    Proc,
    cgroup_roots,
    kill_cgroup,
    reap,
    remove_cgroup_tree,
    run,
    unified_root,
    wait_cgroup_empty,
    wait_gone,
    wait_reaped,
)
from edgekit.progress import Progress, silent

__all__ = [
    "LabHost", "LabInfo", "up", "down", "status", "info", "inventory_path", "ssh_argv",
    "kill_host", "start_host", "host_pid", "state_dir",
]  # fmt: skip

PROVIDER = "local"
BOOT_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0
PROGRAMS = {  # program -> Debian package that provides it
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "ssh-keygen": "openssh-client",
    "openssl": "openssl",
}


state_dir = state.state_dir


def inventory_path() -> Path:
    return state_dir() / "edge.yaml"


def check_prerequisites(programs: tuple[str, ...] = tuple(PROGRAMS)) -> None:
    if os.geteuid() != 0:
        raise PrerequisiteError("the local lab needs root: run it with sudo")
    for program in programs:
        if not shutil.which(program):
            raise PrerequisiteError(
                f"{program} is missing: apt-get install {PROGRAMS.get(program, program)}"
            )


def info() -> LabInfo:
    """The running lab, or OperationError when there is none."""
    saved = state.load()
    if saved is None:
        raise OperationError("no local lab is running", hint="sudo edgekit lab up")
    return saved[0]


# --- up ----------------------------------------------------------------------


def up(
    peers: int = 2, backends: int = 3, subnet: str | None = None, progress: Progress = silent
) -> LabInfo:
    """Create the lab (removing any earlier one first) and wait until every host answers."""
    check_prerequisites()
    check_counts(peers, backends)
    started = time.monotonic()
    image = build_image(progress=progress)
    directory = state_dir()
    with locked(directory):
        _down_locked(directory, silent)
        routes = network.machine_routes()
        chosen = check_subnet(subnet, routes) if subnet else choose_subnet(routes)
        lab = replace(plan_lab(directory, chosen, peers, backends), lab_id=uuid.uuid4().hex)
        # Recorded before anything exists, so a failed or interrupted up can be undone.
        state.save(lab, image.rootfs, {})
        try:
            _create(lab, image.rootfs, progress)
        except BaseException:
            logs = _keep_logs(lab)
            progress(f"lab up failed; removing what it created (host logs kept in {logs})")
            _down_locked(directory, silent, keep=logs)
            raise
    progress(f"lab up in {time.monotonic() - started:.1f} s")
    for line in next_steps(lab):
        progress(line)
    return lab


def _create(lab: LabInfo, image_rootfs: Path, progress: Progress) -> None:
    progress(f"lab subnet {lab.subnet}: bridge {lab.bridge} ({lab.gateway}), VIP {lab.vip}")
    lab_pubkey, host_keys = _write_keys(lab)
    network.create_bridge(lab)
    for host in lab.hosts:
        network.create_host_link(lab, host)
    procs: dict[str, Proc] = {}
    for host in lab.peers:
        root = containers.mount_overlay(lab, host, image_rootfs)
        containers.write_identity(lab, host, root, host_keys[host.name], lab_pubkey)
        procs[host.name] = containers.start(lab, host)
    cert, key = keys.tls_certificate(lab, lab.state_dir)
    for host in lab.backends:
        procs[host.name] = backends.start(lab, host, cert, key)
    state.save(lab, image_rootfs, procs)
    progress(f"booting proxy hosts {', '.join(lab.peer_names)}; "
             f"starting backends {', '.join(lab.backend_names)}")  # fmt: skip
    _write_inventory(lab)
    _wait_all(lab, procs, progress)


def _write_keys(lab: LabInfo) -> tuple[str, dict[str, Path]]:
    key_dir = lab.state_dir / "keys"
    key_dir.mkdir(mode=0o700, exist_ok=True)
    lab_pubkey = keys.ssh_keypair(lab.identity_file, "edgekit-lab")
    host_keys: dict[str, Path] = {}
    public: dict[str, str] = {}
    for host in lab.peers:
        host_keys[host.name] = key_dir / f"{host.name}_ed25519"
        public[host.address] = keys.ssh_keypair(host_keys[host.name], f"root@{host.name}")
    lab.known_hosts.write_text(known_hosts_text(public))
    keys.write_secret(lab.stats_password_file, keys.stats_password() + "\n")
    return lab_pubkey, host_keys


def _write_inventory(lab: LabInfo) -> None:
    text = marker_line(PROVIDER, lab.lab_id)
    text += "# Written by `edgekit lab up` for the local lab; removed by `lab down`.\n"
    text += yaml.safe_dump(inventory_dict(lab), sort_keys=False)
    lab.inventory.write_text(text)
    # Under sudo, a later `edgekit deploy` as the invoking user must read these.
    keys.hand_to_invoking_user([lab.inventory, lab.identity_file, lab.known_hosts,
                                lab.stats_password_file])  # fmt: skip


def _wait_all(lab: LabInfo, procs: dict[str, Proc], progress: Progress) -> None:
    """Wait for every host in parallel; report each as it becomes ready."""
    with ThreadPoolExecutor(max_workers=len(lab.hosts)) as pool:
        futures = {
            host.name: pool.submit(_wait_host, host, procs[host.name], progress)
            for host in lab.hosts
        }
        errors = []
        for future in futures.values():
            try:
                future.result()
            except OperationError as exc:
                errors.append(str(exc))
    if errors:
        raise OperationError("; ".join(errors))


def _wait_host(host: LabHost, proc: Proc, progress: Progress) -> None:
    started = time.monotonic()
    if host.role == "backend":
        backends.wait_ports(host, proc, BOOT_TIMEOUT)
        progress(f"  {host.name} {host.address}: ports {backends.PORTS} answer")
        return
    pid = containers.wait_init(host, proc, BOOT_TIMEOUT)
    system_state, failed = containers.wait_booted(host, pid, BOOT_TIMEOUT)
    containers.wait_ssh(host, BOOT_TIMEOUT)
    note = f" (failed units: {', '.join(failed)})" if failed else ""
    progress(f"  {host.name} {host.address}: systemd {system_state}{note}, sshd answers"
             f" [{time.monotonic() - started:.1f} s]")  # fmt: skip


def next_steps(lab: LabInfo) -> list[str]:
    return [
        f"inventory: {lab.inventory}",
        "next:",
        f'  edgekit deploy -i "$(edgekit lab inventory)"     # VIP {lab.vip}',
        "  edgekit lab status",
        f"  edgekit lab ssh {lab.peers[0].name}",
        f"  curl http://{lab.vip}/                         # after deploy",
        "  sudo edgekit lab down",
    ]


# --- down --------------------------------------------------------------------


def down(progress: Progress = silent) -> None:
    """Remove the lab: processes, mounts, links, namespaces, cgroups, state. Idempotent."""
    check_prerequisites(("ip",))
    directory = state_dir()
    started = time.monotonic()
    with locked(directory):
        removed = _down_locked(directory, progress)
    if removed:
        progress(f"lab down in {time.monotonic() - started:.1f} s")
    else:
        progress("no lab was running")


def _keep_logs(lab: LabInfo) -> Path:
    """Copy the hosts' console and server logs out of the way of the cleanup."""
    kept = lab.state_dir / "failed-up-logs"
    kept.mkdir(exist_ok=True)
    for log in (lab.state_dir / "hosts").glob("*/*.log"):
        shutil.copyfile(log, kept / f"{log.parent.name}-{log.name}")
    return kept


def _down_locked(directory: Path, progress: Progress, keep: Path | None = None) -> bool:
    saved = state.load(directory)
    bridge = saved[0].bridge if saved else BRIDGE
    found = _stop_processes(list(saved[2].values()) if saved else [], progress)
    for mountpoint in sorted(_lab_mounts(directory), key=len, reverse=True):
        found = True
        if run(["umount", mountpoint], check=False).returncode != 0:
            run(["umount", "-l", mountpoint], check=False)
    if network.lab_links(bridge) or network.lab_netns():
        found = True
        network.remove_network(bridge)
    for root in cgroup_roots():
        if (root / CGROUP_DIR).exists():
            found = True
            remove_cgroup_tree(root / CGROUP_DIR)
    found = _clear_state(directory, keep) or found
    reap()
    return found


def _stop_processes(procs: list[Proc], progress: Progress) -> bool:
    """SIGTERM what the lab started (containers shut down cleanly), then SIGKILL the rest."""
    live = [p for p in procs if p.alive()]
    groups = _lab_cgroups()
    if not live and not groups and not network.lab_netns():
        return False
    if live:
        progress(f"stopping {len(live)} lab processes")
        for proc in live:
            proc.signal(15)
        wait_gone(live, STOP_TIMEOUT)
    for name in groups:
        kill_cgroup(CGROUP_DIR, name)
    for name in groups:
        if not wait_cgroup_empty(CGROUP_DIR, name, 2.0):
            progress(f"warning: processes of {name} did not end")
    # Anything left in a lab namespace was started there by the lab.
    stragglers = [Proc.of(pid) for ns in network.lab_netns() for pid in network.netns_pids(ns)]
    for proc in stragglers:
        proc.signal(9)
    # Return only when every process is gone for good, zombies included.
    if not wait_reaped([*procs, *stragglers], STOP_TIMEOUT):
        left = [str(p.pid) for p in [*procs, *stragglers] if not p.reaped()]
        progress(f"warning: lab processes not yet collected: {', '.join(left)}")
    return True


def _lab_cgroups() -> list[str]:
    unified = unified_root()
    roots = [unified] if unified else cgroup_roots()
    names: set[str] = set()
    for root in roots:
        top = root / CGROUP_DIR
        if top.is_dir():
            names.update(p.name for p in top.iterdir() if p.is_dir())
    return sorted(names)


def _lab_mounts(directory: Path) -> list[str]:
    found = set(mounts_under(directory / "hosts"))
    # Overlays of a lab kept under another state directory are still ours.
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, source = (right.split() + ["", ""])[:2]
        if fstype == "overlay" and source.startswith("edgekit-"):
            found.add(left.split()[4])
    return list(found)


def _clear_state(directory: Path, keep: Path | None = None) -> bool:
    """Empty the state directory (it stays: it carries the lock)."""
    entries = [e for e in directory.iterdir() if e != keep] if directory.is_dir() else []
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            subprocess.run(["rm", "-rf", "--one-file-system", str(entry)], check=False)
        else:
            entry.unlink(missing_ok=True)
    return bool(entries)


# --- status and access -------------------------------------------------------


def status() -> list[HostStatus]:
    """Each host of the lab and whether it is up; [] when there is no lab."""
    saved = state.load()
    if saved is None:
        return []
    lab, _, procs = saved
    return [_host_status(h, procs.get(h.name)) for h in lab.hosts]


def _host_status(host: LabHost, proc: Proc | None) -> HostStatus:
    if proc is None or not proc.alive():
        return HostStatus(host.name, _role(host), host.address, False, "not running")
    if host.role == "backend":
        ok = backends.answers(host.address, backends.PORTS[0])
        detail = f"pid {proc.pid}, " + ("port 30080 answers" if ok else "port 30080 silent")
        return HostStatus(host.name, "backend", host.address, ok, detail)
    pid = containers.init_pid(host)
    ok = pid is not None and backends.answers(host.address, 22)
    detail = f"init pid {pid}, " + ("sshd answers" if ok else "sshd silent")
    return HostStatus(host.name, "proxy", host.address, ok, detail)


def _role(host: LabHost) -> Role:
    return "proxy" if host.role == "proxy" else "backend"


def ssh_argv(host: str, command: list[str]) -> list[str]:
    """ssh argv for a lab host (name or address): the lab key, strict host key checking."""
    lab = info()
    target = lab.host(host)
    if target.role != "proxy":
        raise InputError(
            f"{target.name} is a backend: a network namespace without sshd",
            hint=f"sudo ip netns exec {target.netns} COMMAND",
        )
    return [
        "ssh", "-i", str(lab.identity_file),
        "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={lab.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=5",
        "-o", "LogLevel=ERROR",
        f"{lab.ssh_user}@{target.address}",
        *command,
    ]  # fmt: skip


def host_pid(name: str) -> int:
    """The machine PID of a proxy host's systemd (PID 1 inside), for `nsenter -t PID -a`."""
    host = info().host(name)
    pid = containers.init_pid(host) if host.role == "proxy" else None
    if pid is None:
        raise OperationError(f"{name} is not running (or is not a proxy host)")
    return pid


# --- failure injection -------------------------------------------------------


def kill_host(name: str) -> None:
    """Power loss: SIGKILL every process of the host and take its link down at once."""
    check_prerequisites(("ip",))
    directory = state_dir()
    with locked(directory):
        lab, rootfs, procs = _load_or_fail(directory)
        host = lab.host(name)
        # Both in flight together: without the link going down, the dead
        # host's namespace would keep answering ARP for the VIP.
        link = subprocess.Popen(network.link_down_argv(host))
        kill_cgroup(CGROUP_DIR, host.name)
        link.wait()
        if not wait_cgroup_empty(CGROUP_DIR, host.name, 5.0):
            raise OperationError(f"{name}: processes survived SIGKILL")
        procs.pop(host.name, None)
        state.save(lab, rootfs, procs)
        reap()


def start_host(name: str, progress: Progress = silent) -> None:
    """Boot a killed or stopped host again with its link up; returns once it answers."""
    check_prerequisites(("ip", "systemd-nspawn", "nsenter"))
    directory = state_dir()
    with locked(directory):
        lab, rootfs, procs = _load_or_fail(directory)
        host = lab.host(name)
        current = procs.get(host.name)
        if current is not None and current.alive():
            return
        wait_cgroup_empty(CGROUP_DIR, host.name, 5.0)
        network.set_link(host, up=True)
        if host.role == "proxy":
            proc = containers.start(lab, host)
        else:
            proc = backends.start(lab, host, lab.state_dir / "backend.crt",
                                  lab.state_dir / "backend.key")  # fmt: skip
        procs[host.name] = proc
        state.save(lab, rootfs, procs)
    _wait_host(host, proc, progress)


def _load_or_fail(directory: Path) -> tuple[LabInfo, Path, dict[str, Proc]]:
    saved = state.load(directory)
    if saved is None:
        raise OperationError("no local lab is running", hint="sudo edgekit lab up")
    return saved


def link(name: str, *, up: bool) -> None:
    """Cut or restore a host's link on the lab bridge (its veth), as a switch port would."""
    check_prerequisites(("ip",))
    network.set_link(info().host(name), up=up)


class LocalLab:
    """The local lab (systemd-nspawn proxies, backend namespaces) as a LabProvider."""

    name = PROVIDER

    def __init__(self, progress: Progress = silent) -> None:
        self.progress = progress

    def up(self, *, peers: int, backends: int, subnet: str | None) -> Path:
        return up(peers=peers, backends=backends, subnet=subnet, progress=self.progress).inventory

    def down(self) -> None:
        down(progress=self.progress)

    def status(self) -> list[HostStatus]:
        return status()

    def inventory(self) -> Path:
        return info().inventory

    def lab_id(self) -> str | None:
        saved = state.load()
        return saved[0].lab_id or None if saved else None

    def ssh_argv(self, host: str, command: list[str]) -> list[str]:
        return ssh_argv(host, command)

    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.POWER, Capability.LINK})

    def power_off(self, host: str) -> None:
        kill_host(host)

    def power_on(self, host: str) -> None:
        start_host(host, self.progress)

    def link_down(self, host: str) -> None:
        link(host, up=False)

    def link_up(self, host: str) -> None:
        link(host, up=True)
