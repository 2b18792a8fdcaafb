"""The one interface every lab back end implements, and how a lab marks its inventory.

A provider makes hosts (nspawn containers, Vagrant VMs, later the BGP lab) and can
control them from outside: power a host off and on, cut and restore its link. The
failover runner gets its fault drivers from the provider that made the hosts, which it
recognises by the marker the lab writes into its inventory, never by the file's path,
so a copy of the inventory still gets them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["proxy", "backend"]

# The inventory's first line: `# edgekit-lab: PROVIDER LAB-ID`. A comment, so the
# inventory model is untouched and a copy keeps it.
MARKER_RE = re.compile(r"^# edgekit-lab: ([a-z][a-z0-9-]*) ([A-Za-z0-9-]+)\s*$", re.MULTILINE)


class Capability(StrEnum):
    """What a provider can do to a host from outside it."""

    POWER = "power"  # power off (a power loss, no clean shutdown) and on
    LINK = "link"  # cut and restore the host's lab link from the switch side


@dataclass(frozen=True)
class HostStatus:
    name: str
    role: Role
    address: str
    up: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class FaultDriver(Protocol):
    """Fault control of hosts by peer name (a lab provider, or real hosts' sysrq)."""

    def capabilities(self) -> frozenset[Capability]: ...

    def power_off(self, host: str) -> None: ...

    def power_on(self, host: str) -> None: ...

    def link_down(self, host: str) -> None: ...

    def link_up(self, host: str) -> None: ...


class LabProvider(FaultDriver, Protocol):
    """A lab back end: makes the hosts, describes them, reaches them."""

    name: str  # "local", "vagrant": the --provider value and the marker's first word

    def up(self, *, peers: int, backends: int, subnet: str | None) -> Path:
        """Create the lab (replacing an earlier one); the inventory's path."""
        ...

    def down(self) -> None:
        """Remove everything the lab made; safe when nothing or half of it is there."""
        ...

    def status(self) -> list[HostStatus]:
        """Every host and whether it is up; [] when there is no lab."""
        ...

    def inventory(self) -> Path:
        """The running lab's edge.yaml (OperationError when there is no lab)."""
        ...

    def lab_id(self) -> str | None:
        """The running lab's identity, as its inventory's marker says; None: no lab."""
        ...

    def ssh_argv(self, host: str, command: list[str]) -> list[str]:
        """An argv that opens a shell on `host` (or runs `command` there)."""
        ...


def marker_line(provider: str, lab_id: str) -> str:
    return f"# edgekit-lab: {provider} {lab_id}\n"


def read_marker(text: str) -> tuple[str, str] | None:
    """(provider, lab id) from an inventory's text, or None for a user's inventory."""
    match = MARKER_RE.search(text[:4096])
    return (match.group(1), match.group(2)) if match else None


def inventory_ssh_argv(inventory: dict[str, Any], peer: str, command: list[str]) -> list[str]:
    """ssh argv for a peer of an inventory (plain YAML data), the way edgekit itself
    connects: its ssh_host/ssh_port, the inventory's user and key, strict host keys
    against its known_hosts."""
    ssh = inventory.get("ssh") or {}
    entry = next(p for p in inventory.get("peers", []) if p.get("name") == peer)
    argv = [
        "ssh",
        "-p",
        str(entry.get("ssh_port") or ssh.get("port") or 22),
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "LogLevel=ERROR",
    ]
    if ssh.get("identity_file"):
        argv += ["-i", str(ssh["identity_file"]), "-o", "IdentitiesOnly=yes"]
    if ssh.get("known_hosts"):
        argv += [
            "-o",
            f"UserKnownHostsFile={ssh['known_hosts']}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ]
    host = entry.get("ssh_host") or entry.get("address")
    return [*argv, f"{ssh.get('user') or 'root'}@{host}", *command]


class NoFaults:
    """The driver for hosts nobody controls from outside: no capabilities."""

    def capabilities(self) -> frozenset[Capability]:
        return frozenset()

    def power_off(self, host: str) -> None:
        raise NotImplementedError("no power control of these hosts")

    power_on = power_off
    link_down = power_off
    link_up = power_off
