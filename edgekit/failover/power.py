"""Power drivers for the host-down scenario: lab containers, Vagrant VMs, real hosts."""

from __future__ import annotations

import time
from pathlib import Path

from edgekit.errors import InputError, OperationError
from edgekit.failover.scenarios import PowerDriver
from edgekit.remote import Host


class LocalLabPower:
    """Every process of the container killed and its link cut in the same instant."""

    def host_down(self, peer: str) -> None:
        from edgekit.lab import local

        local.kill_host(peer)

    def host_up(self, peer: str) -> None:
        from edgekit.lab import local

        local.start_host(peer)


class VagrantPower:
    def host_down(self, peer: str) -> None:
        from edgekit.lab import vagrant

        vagrant.halt_force(peer)

    def host_up(self, peer: str) -> None:
        from edgekit.lab import vagrant

        vagrant.start(peer)


class RealHostPower:
    """Power-off through the kernel's sysrq (no clean shutdown); someone powers it back on.
    Only with --allow-host-down."""

    def __init__(self, hosts: dict[str, Host], wait_s: float = 900.0) -> None:
        self.hosts = hosts
        self.wait_s = wait_s

    def host_down(self, peer: str) -> None:
        host = self.hosts[peer]
        host.run("setsid sh -c 'sleep 0.2; echo o > /proc/sysrq-trigger' "
                 ">/dev/null 2>&1 </dev/null &", sudo=True, timeout=10)
        host.close()

    def host_up(self, peer: str) -> None:
        deadline = time.monotonic() + self.wait_s
        host = self.hosts[peer]
        while time.monotonic() < deadline:
            try:
                host.close()
                if host.run("true", timeout=10).ok:
                    return
            except OperationError:
                time.sleep(5)
        raise OperationError(f"{peer}: did not come back within {self.wait_s:.0f}s; power it "
                             "on by hand")


def power_for(inventory: Path, hosts: dict[str, Host], allow_real: bool) -> PowerDriver | None:
    """Pick the driver from where the inventory came from."""
    resolved = inventory.resolve()
    try:
        from edgekit.lab import local

        if resolved == local.inventory_path().resolve():
            return LocalLabPower()
    except (ImportError, OSError):
        pass
    try:
        from edgekit.lab import vagrant

        if resolved == vagrant.inventory_path().resolve():
            return VagrantPower()
    except (ImportError, OSError):
        pass
    return RealHostPower(hosts) if allow_real else None


def require_power(power: PowerDriver | None) -> PowerDriver:
    if power is None:
        raise InputError("host-down on real hosts powers the VIP holder off; someone must "
                         "power it on again", hint="pass --allow-host-down to run it")
    return power
