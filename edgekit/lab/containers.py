"""Proxy hosts: the appliance tree booted with systemd-nspawn on an overlay."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

from edgekit.errors import OperationError
from edgekit.lab.network import netns_path
from edgekit.lab.plan import ADMIN_USER, CGROUP_DIR, LabHost, LabInfo, hosts_file_text
from edgekit.lab.system import (
    Proc,
    container_init,
    in_cgroups_argv,
    make_cgroups,
    remove_cgroup_tree,
    run,
    spawn,
    unified_root,
)
from edgekit.progress import wait_until

# keepalived adds the VIP (NET_ADMIN) and sends VRRP on raw sockets (NET_RAW);
# it also asks for realtime scheduling and locked memory.
CAPABILITIES = "CAP_NET_ADMIN,CAP_NET_RAW,CAP_NET_BROADCAST,CAP_SYS_NICE,CAP_IPC_LOCK"


def host_dir(lab: LabInfo, host: LabHost) -> Path:
    return lab.state_dir / "hosts" / host.name


def root_dir(lab: LabInfo, host: LabHost) -> Path:
    return host_dir(lab, host) / "root"


def mount_overlay(lab: LabInfo, host: LabHost, image_rootfs: Path) -> Path:
    """The host's root: the shared tree read-only below, its own upper layer on top."""
    base = host_dir(lab, host)
    upper, work, root = base / "upper", base / "work", base / "root"
    for directory in (upper, work, root):
        directory.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={image_rootfs},upperdir={upper},workdir={work}"
    run(["mount", "-t", "overlay", f"edgekit-{host.name}", "-o", options, str(root)])
    return root


def write_identity(
    lab: LabInfo, host: LabHost, root: Path, host_key: Path, lab_pubkey: str
) -> None:
    """Hostname, machine-id, SSH host key and the lab's login key: nothing shared by clones."""
    _write(root / "etc/hostname", f"{host.name}\n", 0o644)
    _write(root / "etc/hosts", hosts_file_text(lab, host.name), 0o644)
    machine_id = uuid.uuid4().hex + "\n"
    _write(root / "etc/machine-id", machine_id, 0o444)
    dbus_id = root / "var/lib/dbus/machine-id"
    if not dbus_id.is_symlink():  # a symlink to /etc/machine-id already follows it
        _write(dbus_id, machine_id, 0o444)
    ssh = root / "etc/ssh"
    _write(ssh / "ssh_host_ed25519_key", host_key.read_text(), 0o600)
    _write(ssh / "ssh_host_ed25519_key.pub", Path(f"{host_key}.pub").read_text(), 0o644)
    uid, gid = _user_ids(root, ADMIN_USER)
    dot_ssh = root / "home" / ADMIN_USER / ".ssh"
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    _write(dot_ssh / "authorized_keys", lab_pubkey + "\n", 0o600)
    for path in (dot_ssh, dot_ssh / "authorized_keys"):
        os.chown(path, uid, gid)


def start(lab: LabInfo, host: LabHost) -> Proc:
    """Boot the host in its own cgroup; returns the nspawn process (not yet booted)."""
    cgroups = make_cgroups(CGROUP_DIR, host.name)
    for directory in cgroups:  # leftovers of a previous boot of this host
        remove_cgroup_tree(directory, keep_top=True)
    argv = [
        "systemd-nspawn", "--quiet", "--boot",
        f"--directory={root_dir(lab, host)}",
        f"--machine={host.name}",
        # No host systemd and no D-Bus here: do not register, keep our cgroup.
        "--register=no", "--keep-unit",
        f"--network-namespace-path={netns_path(host)}",
        f"--capability={CAPABILITIES}",
        "--link-journal=no", "--resolv-conf=off", "--timezone=off",
        "--console=read-only",
    ]  # fmt: skip
    # The host has a network namespace of its own, so its /proc/sys/net may
    # be writable (ip_nonlocal_bind for haproxy on a VIP it does not hold).
    env = {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
    # `systemctl reboot` inside ends nspawn with 133: the loop boots the host again.
    return spawn(
        in_cgroups_argv(cgroups, argv, reboots=True), host_dir(lab, host) / "console.log", env
    )


def init_pid(host: LabHost) -> int | None:
    unified = unified_root()
    if unified is None:
        return None
    return container_init(unified / CGROUP_DIR / host.name)


def wait_init(host: LabHost, nspawn: Proc, timeout: float) -> int:
    def started() -> int | None:
        pid = init_pid(host)
        if not pid and not nspawn.alive():
            raise OperationError(f"{host.name}: systemd-nspawn exited during start")
        return pid

    pid = wait_until(started, timeout, 0.02)
    if not pid:
        raise OperationError(f"{host.name}: the container did not start within {timeout:g} s")
    return pid


def wait_booted(host: LabHost, pid: int, timeout: float) -> tuple[str, list[str]]:
    """systemd's final state ("running" or "degraded") and the failed units."""
    argv = ["nsenter", "-t", str(pid), "-a", "systemctl", "is-system-running", "--wait"]
    deadline = time.monotonic() + timeout
    seen = [""]

    def settled() -> bool:
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=max(deadline - time.monotonic(), 1)
            )
        except subprocess.TimeoutExpired as exc:
            raise OperationError(
                f"{host.name}: systemd did not finish booting in {timeout:g} s"
            ) from exc
        seen[0] = result.stdout.strip() or result.stderr.strip()
        # Until systemd has opened its socket, systemctl says "offline" or
        # "Failed to connect to bus"; --wait only covers the states after that.
        return seen[0] in ("running", "degraded", "maintenance")

    wait_until(settled, timeout, 0.05)
    state = seen[0]
    if state not in ("running", "degraded"):
        raise OperationError(f"{host.name}: systemd is {state!r} after boot")
    return state, failed_units(pid) if state == "degraded" else []


def failed_units(pid: int) -> list[str]:
    argv = ["nsenter", "-t", str(pid), "-a", "systemctl", "--failed", "--plain", "--no-legend"]
    out = run(argv, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def wait_ssh(host: LabHost, timeout: float) -> None:
    """Until sshd sends its banner: listening alone is not enough to log in."""

    def banner() -> bool:
        try:
            with socket.create_connection((host.address, 22), timeout=1) as sock:
                sock.settimeout(2)
                return sock.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    if not wait_until(banner, timeout, 0.05):
        raise OperationError(f"{host.name}: sshd did not answer on {host.address}:22")


def _user_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise OperationError(f"the image has no user {user!r}; rebuild it with `edgekit image build`")


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_text(text)
    path.chmod(mode)
