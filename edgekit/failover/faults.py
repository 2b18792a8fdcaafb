"""Where failover-test's out-of-band faults come from: the lab provider that made the
hosts (recognised by its inventory's marker), or, for real hosts and only when asked,
a power-off through the kernel's sysrq."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from edgekit.errors import OperationError
from edgekit.lab import provider_for
from edgekit.lab.base import Capability, FaultDriver, NoFaults
from edgekit.progress import wait_until
from edgekit.remote import Transport


class RealHostPower(NoFaults):
    """Power-off through sysrq (no clean shutdown); someone powers the host back on.
    Only with --allow-host-down."""

    def __init__(self, hosts: Mapping[str, Transport], wait_s: float = 900.0) -> None:
        self.hosts = hosts
        self.wait_s = wait_s

    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.POWER})

    def power_off(self, host: str) -> None:
        target = self.hosts[host]
        target.run(
            "setsid sh -c 'sleep 0.2; echo o > /proc/sysrq-trigger' >/dev/null 2>&1 </dev/null &",
            sudo=True,
            timeout=10,
        )
        target.close()

    def power_on(self, host: str) -> None:
        target = self.hosts[host]

        def answers() -> bool:
            try:
                target.close()
                return target.run("true", timeout=10).ok
            except OperationError:
                return False

        if not wait_until(answers, self.wait_s, interval=5.0):
            raise OperationError(
                f"{host}: did not come back within {self.wait_s:.0f}s; power it on by hand"
            )


def driver_for(
    inventory: Path, hosts: Mapping[str, Transport], allow_real_power: bool
) -> FaultDriver:
    """The lab's own driver when a running lab wrote this inventory, else sysrq power
    control of real hosts with --allow-host-down, else none."""
    lab = provider_for(inventory)
    if lab is not None:
        return lab
    return RealHostPower(hosts) if allow_real_power else NoFaults()
