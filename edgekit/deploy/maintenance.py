"""Reboots and rolling package upgrades, one peer at a time, each inside a drain.

A peer is drained first (its VIPs move make-before-break), so whatever happens to it
next is invisible to clients. A rebooted peer keeps its drained mark (under /var/lib):
it takes no VIP while it boots, and is undrained only once haproxy and keepalived are
healthy again. An upgrade that fails leaves its peer drained and stops the rollout.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from edgekit.deploy.apply import wait_healthy
from edgekit.deploy.drain import GRACE_S, DrainReport, check_peer, drain, read_all, undrain
from edgekit.errors import EdgekitError, OperationError
from edgekit.facts import HAPROXY_ENV, HostFacts
from edgekit.inventory import Loaded
from edgekit.progress import Progress, wait_until
from edgekit.remote import Transport
from edgekit.remote.scripts import script
from edgekit.render import HAPROXY_CFG, KEEPALIVED_CONF

REBOOT_TIMEOUT = 300.0  # a VM under software emulation boots in about 45-85 s here
_INST = re.compile(r"^Inst (\S+) (?:\[(\S+)\] )?\((\S+)")


@dataclass(frozen=True)
class Upgrade:
    package: str
    old: str  # "" when newly installed
    new: str

    def to_dict(self) -> dict[str, str]:
        return {"package": self.package, "from": self.old, "to": self.new}


def parse_simulation(text: str) -> list[Upgrade]:
    """`apt-get -s` output -> what it would install or upgrade."""
    out = []
    for line in text.splitlines():
        m = _INST.match(line)
        if m:
            out.append(Upgrade(m.group(1), m.group(2) or "", m.group(3)))
    return out


def boot_id(host: Transport) -> str:
    return host.check(script("boot-id"), "reading the boot id", timeout=30).stdout.strip()


def reboot_host(
    loaded: Loaded, host: Transport, progress: Progress, *, timeout: float = REBOOT_TIMEOUT
) -> None:
    """Reboot a (drained) peer and wait until it is back and healthy."""
    before = boot_id(host)
    host.check(script("reboot"), "asking for a reboot", sudo=True, timeout=30)
    host.close()
    progress(f"{host.name}: rebooting")
    started = time.monotonic()

    def back() -> bool:
        try:
            now = boot_id(host)
        except EdgekitError:
            host.close()
            return False
        if now == before:  # not down yet: ask again on a new connection
            host.close()
            return False
        return True

    if not wait_until(back, timeout, 1.0):
        raise OperationError(f"{host.name}: not back over SSH {timeout:.0f}s after the reboot")
    progress(f"{host.name}: back after {time.monotonic() - started:.1f}s")
    _wait_serving(loaded, host, timeout)


def _wait_serving(loaded: Loaded, host: Transport, timeout: float) -> None:
    inv = loaded.inventory
    sick = wait_healthy(host, [f"VI_{v.vrid}" for v in inv.vips], inv.stats.port, timeout)
    if sick:
        raise OperationError(f"{host.name}: {sick}")


@dataclass
class UpgradeReport:
    planned: dict[str, list[Upgrade]] = field(default_factory=dict)
    upgraded: list[str] = field(default_factory=list)
    failed: str = ""
    error: str = ""

    @property
    def pending(self) -> bool:
        return any(self.planned.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "planned": {n: [u.to_dict() for u in ups] for n, ups in self.planned.items()},
            "upgraded": self.upgraded,
            "failed": self.failed or None,
            "error": self.error or None,
        }


def upgrade_order(loaded: Loaded, facts: Mapping[str, HostFacts], names: list[str]) -> list[str]:
    """Peers that hold no VIP first, then the holders (inventory order within each)."""
    vips = [v.address for v in loaded.inventory.vips]

    def holds(name: str) -> bool:
        return any(facts[name].holds(v) for v in vips)

    return sorted(names, key=holds)


def simulate(host: Transport, packages: list[str]) -> list[Upgrade]:
    result = host.check(
        script("upgrade-plan", packages=packages),
        "simulating the upgrade (apt-get -s)",
        sudo=True,
        timeout=600,
    )
    return parse_simulation(result.stdout)


@dataclass(frozen=True)
class Maintenance:
    """Planned maintenance of a cluster's peers, one at a time, each inside a drain:
    the inventory, every peer's connection, where progress goes, and how patient to be."""

    loaded: Loaded
    hosts: Mapping[str, Transport]
    progress: Progress
    grace: float = GRACE_S  # the drained peer serves its connections this long
    timeout: float = 30.0  # a VIP's move, a peer's health
    boot_timeout: float = REBOOT_TIMEOUT

    def _drain(self, peer: str) -> DrainReport:
        check_peer(self.loaded, peer)
        return drain(
            self.loaded, self.hosts, peer, self.progress, grace=self.grace, timeout=self.timeout
        )

    def _undrain(self, peer: str) -> None:
        undrain(self.loaded, self.hosts, peer, self.progress, timeout=self.timeout)

    def reboot(self, peer: str) -> None:
        """Drain, reboot, wait for SSH and health, undrain. A peer that does not come
        back healthy stays drained (OperationError)."""
        was = self._drain(peer)
        try:
            reboot_host(self.loaded, self.hosts[peer], self.progress, timeout=self.boot_timeout)
        except EdgekitError as exc:
            raise OperationError(f"{exc}; {peer} is left drained") from None
        if was.already:
            self.progress(f"{peer}: stays drained (it was before the reboot)")
            return
        self._undrain(peer)

    def retire(self, peer: str) -> None:
        """Take `peer` out of the cluster: drain it (its VIPs move make-before-break;
        refused when it is the last healthy peer), then stop and disable keepalived and
        remove edgekit's firewall there. Remove it from the inventory and deploy next:
        the others then drop it from their peer lists."""
        from edgekit.deploy import confirm
        from edgekit.deploy import lock as deploy_lock

        self._drain(peer)
        host = self.hosts[peer]
        with deploy_lock.host_locks({peer: host}, deploy_lock.owner()):
            host.check(
                script("retire", **confirm.removal_values()),
                "retiring (keepalived stopped and disabled, firewall removed)",
                sudo=True,
                timeout=120,
            )
        self.progress(
            f"{peer}: retired: keepalived stopped and disabled, edgekit's firewall removed"
        )

    def upgrade(
        self,
        *,
        limit: list[str] | None = None,
        packages: list[str] | None = None,
        reboot_after: bool = False,
        dry_run: bool = False,
    ) -> UpgradeReport:
        """Upgrade the peers one at a time: drain, apt-get upgrade, check the installed
        configs with the new binaries, health, (reboot,) undrain. Non-holders first.
        Stops at the first failure, which leaves that peer drained (the report says
        which)."""
        names = [p.name for p in self.loaded.inventory.peers]
        for name in limit or []:
            check_peer(self.loaded, name)
        read = read_all(self.hosts)
        unreachable = [n for n, f in read.items() if not isinstance(f, HostFacts)]
        if unreachable:
            raise OperationError(f"{unreachable[0]}: unreachable: {read[unreachable[0]]}")
        facts = {n: f for n, f in read.items() if isinstance(f, HostFacts)}
        order = upgrade_order(self.loaded, facts, [n for n in names if not limit or n in limit])
        report = UpgradeReport()
        for name in order:
            ups = report.planned[name] = simulate(self.hosts[name], packages or [])
            self.progress(
                f"{name}: "
                + (", ".join(f"{u.package} {u.old or '-'} -> {u.new}" for u in ups) or "up to date")
            )
        if dry_run:
            return report
        for name in order:
            if not report.planned[name] and not reboot_after:
                continue
            try:
                self._upgrade_one(name, packages or [], reboot_after)
            except EdgekitError as exc:
                report.failed, report.error = name, str(exc)
                return report
            report.upgraded.append(name)
        return report

    def _upgrade_one(self, name: str, packages: list[str], reboot_after: bool) -> None:
        host = self.hosts[name]
        was = self._drain(name)
        try:
            self.progress(f"{name}: upgrading")
            host.check(
                script("upgrade", packages=packages), "apt-get upgrade", sudo=True, timeout=1800
            )
            checked = host.run(
                script(
                    "check-running",
                    haproxy_env=HAPROXY_ENV,
                    haproxy_cfg=HAPROXY_CFG,
                    keepalived_conf=KEEPALIVED_CONF,
                    peer=name,
                ),
                sudo=True,
                timeout=120,
            )
            if not checked.ok:
                raise OperationError(f"{name}: after the upgrade: {checked.last_line()}")
            _wait_serving(self.loaded, host, self.timeout)
            if reboot_after:
                reboot_host(self.loaded, host, self.progress, timeout=self.boot_timeout)
        except EdgekitError as exc:
            raise OperationError(f"{exc}; {name} is left drained") from None
        if not was.already:
            self._undrain(name)
        self.progress(f"{name}: upgraded")
