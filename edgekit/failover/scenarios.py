"""The faults failover-test injects into the VIP holder, and how each is undone."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Protocol

from edgekit.remote import Host


class PowerDriver(Protocol):
    """Cuts and restores a whole host (lab containers, Vagrant VMs, real power)."""

    def host_down(self, peer: str) -> None: ...

    def host_up(self, peer: str) -> None: ...


@dataclass(frozen=True)
class Scenario:
    name: str
    budget_s: float  # the longest client-visible outage that still passes
    description: str


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("graceful", 0.3, "stop keepalived cleanly on the VIP holder"),
    Scenario("haproxy-down", 1.0, "stop haproxy on the VIP holder (it does not come back)"),
    Scenario("keepalived-crash", 1.0, "SIGKILL keepalived on the VIP holder"),
    Scenario("link-down", 1.0, "take the holder's VRRP interface down; the host brings it "
             "back itself"),
    Scenario("host-down", 1.0, "the holder stops as in a power loss"),
)}


def inject(scenario: str, host: Host, interface: str, hold_s: float,
           power: PowerDriver | None) -> None:
    if scenario == "graceful":
        host.check("systemctl stop keepalived", "stopping keepalived", sudo=True)
    elif scenario == "haproxy-down":
        host.check("systemctl stop haproxy", "stopping haproxy", sudo=True)
    elif scenario == "keepalived-crash":
        host.check("systemctl kill -s KILL keepalived", "killing keepalived", sudo=True)
    elif scenario == "link-down":
        # Detached on the host: the SSH session that started it may be cut meanwhile.
        iface = shlex.quote(interface)
        cmd = (f"ip link set {iface} down; sleep {hold_s:g}; ip link set {iface} up")
        host.check(f"setsid sh -c {shlex.quote(cmd)} >/dev/null 2>&1 </dev/null &",
                   "taking the link down", sudo=True, timeout=10)
    elif scenario == "host-down":
        if power is None:
            raise ValueError("host-down needs a power driver")
        power.host_down(host.name)
    else:
        raise ValueError(f"unknown scenario {scenario}")


def restore(scenario: str, host: Host, interface: str, power: PowerDriver | None) -> None:
    """Undo the fault; safe to call twice and after a partial inject."""
    if scenario == "host-down":
        if power is not None:
            power.host_up(host.name)
        return
    commands = {
        "graceful": "systemctl start keepalived",
        "haproxy-down": "systemctl start haproxy",
        # systemd restarts a killed keepalived (edgekit's drop-in); make sure of it.
        "keepalived-crash": "systemctl is-active -q keepalived || systemctl start keepalived",
        "link-down": f"ip link set {shlex.quote(interface)} up",
    }
    host.check(commands[scenario], f"restoring after {scenario}", sudo=True, timeout=60)
