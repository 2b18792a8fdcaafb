"""Where failover-test's out-of-band faults come from: the lab provider that made the
hosts (recognised by its inventory's marker, or by its peers being a running lab's
proxies), or, for real hosts and only when asked, a power-off through the kernel's
sysrq."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from edgekit.errors import EdgekitError, OperationError
from edgekit.inventory.model import Peer
from edgekit.lab import PROVIDERS, LabProvider, provider, provider_for
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


def _peer_keys(peers: Sequence[Mapping[str, object]]) -> set[tuple[str, str, str]]:
    """(name, VRRP address, where SSH goes) of each peer: what makes it that host."""
    return {
        (str(p.get("name")), str(p.get("address")), str(p.get("ssh_host") or p.get("address")))
        for p in peers
    }


def lab_of_peers(peers: Sequence[Peer]) -> LabProvider | None:
    """The running lab whose proxies these peers are (same names and addresses), for an
    inventory that lost the lab's marker: one written out again by a YAML dump, say."""
    wanted = _peer_keys(
        [{"name": p.name, "address": str(p.address), "ssh_host": p.ssh_host} for p in peers]
    )
    for name in PROVIDERS:
        try:
            lab = provider(name)
            if lab.lab_id() is None:
                continue
            data = yaml.safe_load(lab.inventory().read_text())
        except (EdgekitError, OSError, yaml.YAMLError):
            continue
        lab_peers = data.get("peers") if isinstance(data, dict) else None
        if isinstance(lab_peers, list) and wanted <= _peer_keys(
            [p for p in lab_peers if isinstance(p, dict)]
        ):
            return lab
    return None


def driver_for(
    inventory: Path,
    hosts: Mapping[str, Transport],
    allow_real_power: bool,
    peers: Sequence[Peer] = (),
) -> FaultDriver:
    """The lab's own driver when a running lab wrote this inventory or its peers are
    that lab's proxies, else sysrq power control of real hosts with --allow-host-down,
    else none."""
    lab = provider_for(inventory) or (lab_of_peers(peers) if peers else None)
    if lab is not None:
        return lab
    return RealHostPower(hosts) if allow_real_power else NoFaults()
