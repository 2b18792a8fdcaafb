"""The faults failover-test injects into the VIP holder: one registry, one object each.

A scenario says what it is (name, description), what passes (its outage budget), what it
needs, and how to inject and undo its fault. Everything else reads SCENARIOS: the CLI's
--scenario help and checks, --json, the report and bench/failover. Adding a scenario is
one `register(Scenario(...))` call in this file.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from edgekit.lab.base import Capability, FaultDriver
from edgekit.remote import Transport

if TYPE_CHECKING:
    from edgekit.inventory import Loaded


@dataclass(frozen=True)
class Fault:
    """What inject and restore act on."""

    host: Transport  # the holder of the VIPs under test
    interface: str  # its VRRP interface
    hold_s: float  # how long the fault lasts
    driver: FaultDriver  # out-of-band control of the hosts (power, link)
    # Every peer and the inventory, for faults that are operations on the cluster (drain).
    hosts: Mapping[str, Transport] = field(default_factory=dict)
    loaded: Loaded | None = None


@dataclass(frozen=True)
class Established:
    """Long-lived connections a scenario opens through each faulted VIP before its fault:
    `count` uploads (a byte every 100 ms) and `downloads` slow downloads that end within
    `within_s` (inside a planned handover's window: none may be cut), and as many that
    last `beyond_s` (they outlive it: closed at its end, cleanly where haproxy can)."""

    within_s: float
    beyond_s: float
    count: int = 10
    downloads: int = 1


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    budget_s: float  # the longest client-visible outage that still passes
    inject: Callable[[Fault], None]
    restore: Callable[[Fault], None]  # safe to call twice and after a partial inject
    needs: frozenset[Capability] = field(default_factory=frozenset)
    # The fault undoes itself hold_s after inject (the runner waits that long before
    # restore, which then only makes sure).
    self_restoring: bool = False
    # Runs only when asked for by name, or when its needs are met without an opt-in.
    default: bool = True
    established: Established | None = None

    def runnable(self, driver: FaultDriver) -> bool:
        return self.needs <= driver.capabilities()

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "budget_s": self.budget_s,
            "needs": sorted(self.needs),
            "default": self.default,
            "established": None if self.established is None else asdict(self.established),
        }


@dataclass(frozen=True)
class Skipped:
    """A scenario (or its run against the holder of some VIPs) that did not run, and why.
    Any skipped entry makes the whole run fail: the user excludes a scenario by naming
    the ones to run instead."""

    name: str
    reason: str
    vips: tuple[str, ...] = ()  # empty: for every VIP

    def line(self) -> str:
        where = f" (VIP {', '.join(self.vips)})" if self.vips else ""
        return f"{self.name} skipped{where}: {self.reason}"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "reason": self.reason, "vips": list(self.vips)}


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    if scenario.name in SCENARIOS:
        raise ValueError(f"scenario {scenario.name} is registered twice")
    SCENARIOS[scenario.name] = scenario
    return scenario


def _sudo(command: str, what: str) -> Callable[[Fault], None]:
    def act(fault: Fault) -> None:
        fault.host.check(command, what, sudo=True, timeout=60)

    return act


def _link_down_inside(fault: Fault) -> None:
    # Detached on the host: the SSH session that started it may be cut meanwhile.
    iface = shlex.quote(fault.interface)
    cmd = f"ip link set {iface} down; sleep {fault.hold_s:g}; ip link set {iface} up"
    fault.host.check(
        f"setsid sh -c {shlex.quote(cmd)} >/dev/null 2>&1 </dev/null &",
        "taking the link down",
        sudo=True,
        timeout=10,
    )


def _link_up_inside(fault: Fault) -> None:
    fault.host.check(
        f"ip link set {shlex.quote(fault.interface)} up",
        "restoring after link-down",
        sudo=True,
        timeout=60,
    )


register(
    Scenario(
        "graceful",
        "stop keepalived cleanly on the VIP holder",
        0.3,
        _sudo("systemctl stop keepalived", "stopping keepalived"),
        _sudo("systemctl start keepalived", "restoring after graceful"),
    )
)
register(
    Scenario(
        "haproxy-down",
        "stop haproxy on the VIP holder (it does not come back)",
        1.0,
        _sudo("systemctl stop haproxy", "stopping haproxy"),
        _sudo("systemctl start haproxy", "restoring after haproxy-down"),
    )
)
register(
    Scenario(
        "keepalived-crash",
        "SIGKILL keepalived on the VIP holder",
        1.0,
        _sudo("systemctl kill -s KILL keepalived", "killing keepalived"),
        # systemd restarts a killed keepalived (edgekit's drop-in); make sure of it.
        _sudo(
            "systemctl is-active -q keepalived || systemctl start keepalived",
            "restoring after keepalived-crash",
        ),
    )
)
register(
    Scenario(
        "link-down",
        "take the holder's VRRP interface down; the host brings it back itself",
        1.0,
        _link_down_inside,
        _link_up_inside,
        self_restoring=True,
    )
)
register(
    Scenario(
        "host-down",
        "the holder stops as in a power loss",
        1.0,
        lambda f: f.driver.power_off(f.host.name),
        lambda f: f.driver.power_on(f.host.name),
        needs=frozenset({Capability.POWER}),
    )
)
register(
    Scenario(
        "cable-cut",
        "cut the holder's link from the switch side (the host still sees its link up)",
        1.0,
        lambda f: f.driver.link_down(f.host.name),
        lambda f: f.driver.link_up(f.host.name),
        needs=frozenset({Capability.LINK}),
        default=False,
    )
)


def _drain(fault: Fault, grace: float = 0.0) -> None:
    from edgekit.deploy.drain import drain

    assert fault.loaded is not None, "the drain scenario needs the inventory"
    # No grace by default: the drained peer's haproxy keeps running through the hold.
    drain(fault.loaded, fault.hosts, fault.host.name, lambda _m: None, grace=grace)


def _undrain(fault: Fault) -> None:
    from edgekit.deploy.drain import undrain

    assert fault.loaded is not None, "the drain scenario needs the inventory"
    undrain(fault.loaded, fault.hosts, fault.host.name, lambda _m: None)


register(
    Scenario(
        "drain",
        "edgekit drain of the holder (make-before-break), hold, undrain: no request may fail",
        0.0,
        _drain,
        _undrain,
    )
)


DRAIN_GRACE_S = 8.0  # drain-established: the window its connections are served in


register(
    Scenario(
        "drain-established",
        f"drain with a {DRAIN_GRACE_S:g} s grace while 10 connections and a slow download per "
        "VIP end inside it (none may be cut) and as many outlive it (closed at its end), "
        "then undrain",
        0.0,
        lambda f: _drain(f, DRAIN_GRACE_S),
        _undrain,
        established=Established(within_s=DRAIN_GRACE_S - 3.0, beyond_s=DRAIN_GRACE_S + 8.0),
        default=False,  # about 25 s a run: asked for by name (-s drain-established)
    )
)


def check_names(names: list[str] | None) -> None:
    """ValueError naming the first unknown scenario (checked before anything connects)."""
    for name in names or []:
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")


def select(names: list[str] | None, driver: FaultDriver) -> tuple[list[Scenario], list[Skipped]]:
    """The scenarios to run and, without names, a Skipped entry for each default one that
    cannot run here (the run then fails). Named scenarios are the user's choice: the
    others are excluded, not skipped. Asked-for names that are unknown or cannot run
    here raise ValueError with the reason."""
    if names:
        check_names(names)
        chosen = []
        for name in names:
            scenario = SCENARIOS[name]
            if not scenario.runnable(driver):
                raise ValueError(
                    f"{name} needs {', '.join(sorted(scenario.needs))} control "
                    "of the hosts, which nothing here provides"
                )
            chosen.append(scenario)
        return chosen, []
    run = [s for s in SCENARIOS.values() if s.default and s.runnable(driver)]
    left = [
        Skipped(s.name, f"needs {', '.join(sorted(s.needs))} control of the hosts")
        for s in SCENARIOS.values()
        if s.default and not s.runnable(driver)
    ]
    return run, left


def help_text() -> str:
    opt_in = [s.name for s in SCENARIOS.values() if not s.default]
    default = f"all but {', '.join(opt_in)}" if opt_in else "all"
    return (
        ", ".join(SCENARIOS) + f" (repeatable; default: {default}; a default one that "
        "cannot run here is skipped, which fails the run: name the ones to run to leave "
        "it out)"
    )
