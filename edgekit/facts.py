"""Facts about a host: one command that prints sections, and a pure parser of its output."""

from __future__ import annotations

import base64
import ipaddress
import json
from dataclasses import dataclass, field
from enum import StrEnum

from edgekit import firewall
from edgekit.remote.scripts import script
from edgekit.render import DRAIN_FILE, HAPROXY_CFG, PLACEMENT_DIR, STATE_DIR

PACKAGES = ("haproxy", "keepalived")
UNITS = ("haproxy", "keepalived")
FIREWALL_STATE_DIR = "/var/lib/edgekit"
ROLLED_BACK_MARKER = f"{FIREWALL_STATE_DIR}/firewall-rolled-back"
# The commit-confirmed firewall load's rollback: a timer unit, or a sleeping fallback.
ROLLBACK_UNIT = "edgekit-fw-rollback"
ROLLBACK_PID = f"{FIREWALL_STATE_DIR}/firewall-rollback.pid"
# The host's deploy lock (edgekit.deploy.lock): under /run, which only root may write.
DEPLOY_LOCK = "/run/edgekit-deploy.lock"
# What a VIP move sets up for a moment (edgekit.deploy.placement; PLACEMENT_DIR too).
HANDOVER_DIR = f"{STATE_DIR}/handover"
# Deploy state on each host. BACKUP_ROOT holds one directory per running deploy.
# PENDING ("DEPLOY-ID UNIT...") exists from just before the install until the host is
# healthy on the new files: a deploy that stopped in between left those units running
# older configs than the ones on disk. APPLIED is "DEPLOY-ID TIME" of the last that ended.
BACKUP_ROOT = f"{FIREWALL_STATE_DIR}/backup"
PENDING = f"{FIREWALL_STATE_DIR}/pending"
APPLIED = f"{FIREWALL_STATE_DIR}/applied"
# What a haproxy reload or restart reads; the newest of their mtimes is compared with
# the start of haproxy's newest process.
HAPROXY_ENV = "/etc/default/haproxy"
HAPROXY_FILES = (HAPROXY_CFG, HAPROXY_ENV)


class TableState(StrEnum):
    """The edgekit nftables table on a host, as the facts script prints it."""

    MATCH = "match"  # loaded, and what the installed ruleset loads (nft lists compared)
    DIFFERS = "differs"  # loaded, but not what the installed ruleset loads
    LOADED = "loaded"  # loaded; not compared (no ruleset file among the paths asked)
    UNLOADED = "unloaded"
    NO_NFT = "no-nft"  # nft is not installed
    UNKNOWN = "unknown"

    @property
    def present(self) -> bool:
        return self in (TableState.MATCH, TableState.DIFFERS, TableState.LOADED)


@dataclass
class FirewallFacts:
    """The edgekit nftables table and its unit on a host."""

    table: TableState = TableState.UNKNOWN
    comment_hash: str = ""  # from the table's `comment "edgekit inventory sha256:..."`
    unit_active: str = ""
    unit_enabled: str = ""  # "" when the unit file does not exist
    rolled_back: str = ""  # when the commit-confirmed timer last restored a ruleset

    def __post_init__(self) -> None:
        self.table = TableState(self.table)

    @property
    def present(self) -> bool:
        """Anything of edgekit's firewall on the host."""
        return (
            self.table.present
            or self.unit_enabled != ""
            or self.unit_active in ("active", "activating")
        )


@dataclass(frozen=True)
class LiveFile:
    path: str
    content: str | None  # None: the file does not exist
    mode: int | None = None
    owner: str | None = None


@dataclass
class HostFacts:
    os_id: str = ""
    os_version: str = ""
    packages: dict[str, bool] = field(default_factory=dict)  # installed?
    addresses: dict[str, list[ipaddress.IPv4Interface]] = field(default_factory=dict)
    files: dict[str, LiveFile] = field(default_factory=dict)
    units: dict[str, tuple[str, str]] = field(default_factory=dict)  # active, enabled
    haproxy_pids: list[int] = field(default_factory=list)
    haproxy_master: int | None = None
    vrrp_states: dict[str, str] = field(default_factory=dict)  # VI_51 -> MASTER
    nr_open: int | None = None  # fs.nr_open: the most files one process may open
    pending_deploy: str = ""  # the id of a deploy that stopped before it finished here
    pending_units: list[str] = field(default_factory=list)  # units it had not reloaded
    pending_restart: list[str] = field(default_factory=list)  # ... that need a restart
    deploy_running: str = ""  # the holder of the host's deploy lock, while one runs
    haproxy_master_started: int | None = None  # the master's start (a reload keeps it)
    haproxy_env_mtime: int | None = None  # /etc/default/haproxy (read only at start)
    applied: str = ""  # "DEPLOY-ID TIME" of the last deploy that finished here
    haproxy_cfg_mtime: int | None = None  # the newest of HAPROXY_FILES (epoch s)
    haproxy_started: int | None = None  # the newest haproxy process's start (epoch s)
    leftovers: list[str] = field(default_factory=list)  # staging/backup a deploy left
    firewall: FirewallFacts = field(default_factory=FirewallFacts)
    drained: bool = False  # edgekit drain's mark (DRAIN_FILE holds a non-zero number)

    def holds(self, vip: ipaddress.IPv4Interface) -> bool:
        return any(a.ip == vip.ip for addrs in self.addresses.values() for a in addrs)

    def interface_addresses(self, interface: str) -> list[ipaddress.IPv4Interface]:
        return self.addresses.get(interface, [])

    def stale_units(self) -> list[str]:
        """Units that run an older config than the one installed. haproxy: its newest
        process started before its newest file was written (each reload starts new
        workers; to the second). keepalived reloads in place, so only a pending mark (a
        deploy stopped before it finished) says so; haproxy too when its times are
        unknown."""
        return list(self.stale_actions())

    def stale_actions(self) -> dict[str, str]:
        """stale_units() with what each needs: "restart" where the change is in the
        unit's environment (/etc/default/haproxy: the master reads it only at start, a
        reload keeps the master), else "reload"."""
        stale = {
            u: "restart" if u in self.pending_restart else "reload" for u in self.pending_units
        }
        running = self.units.get("haproxy", ("",))[0] == "active"
        if self.haproxy_started is not None and self.haproxy_cfg_mtime is not None:
            stale.pop("haproxy", None)
            if running and self.haproxy_started < self.haproxy_cfg_mtime:
                stale["haproxy"] = "reload"
            if (
                running
                and self.haproxy_master_started is not None
                and self.haproxy_env_mtime is not None
                and self.haproxy_master_started < self.haproxy_env_mtime
            ):
                stale["haproxy"] = "restart"
        return {u: stale[u] for u in UNITS if u in stale}


def firewall_command(compare: bool) -> str:
    """Print the edgekit table's state. With `compare`, load the installed ruleset into a
    throwaway network namespace and compare nft's listing of both (stateless: no counter
    values), which catches hand edits that a file hash cannot see."""
    return script("fw-facts", **_firewall_values(compare))


def _firewall_values(compare: bool) -> dict[str, object]:
    return {
        "compare": compare,
        "unit": firewall.UNIT,
        "table": firewall.TABLE,
        "ruleset": firewall.RULESET,
        "marker": ROLLED_BACK_MARKER,
    }


def gather_command(paths: list[str]) -> str:
    """A POSIX shell script (run with sudo) that prints every fact in marked sections.
    When the firewall's ruleset is among `paths`, the loaded table is compared with it."""
    return script(
        "gather-facts",
        packages=PACKAGES,
        paths=paths,
        units=UNITS,
        state_dir=STATE_DIR,
        drain_file=DRAIN_FILE,
        pending=PENDING,
        applied=APPLIED,
        backup_root=BACKUP_ROOT,
        haproxy_files=HAPROXY_FILES,
        haproxy_env=HAPROXY_ENV,
        deploy_lock=DEPLOY_LOCK,
        leftover_dirs=[PLACEMENT_DIR, HANDOVER_DIR],
        rollback_pid=ROLLBACK_PID,
        rollback_unit=ROLLBACK_UNIT,
        **_firewall_values(firewall.RULESET in paths),
    )


TIMES = ("haproxy_cfg_mtime", "haproxy_started", "haproxy_master_started", "haproxy_env_mtime")


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@") and " " not in line:
            current = line[1:]
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def parse_addresses(data: str) -> dict[str, list[ipaddress.IPv4Interface]]:
    result: dict[str, list[ipaddress.IPv4Interface]] = {}
    for link in json.loads(data or "[]"):
        addrs = result.setdefault(link.get("ifname", "?"), [])
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                addrs.append(ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}"))
    return result


def parse_facts(text: str) -> HostFacts:
    s = _sections(text)
    facts = HostFacts()
    os_line = (s.get("os") or [""])[0].split()
    facts.os_id = os_line[0] if os_line else ""
    facts.os_version = os_line[1] if len(os_line) > 1 else ""
    for line in s.get("packages", []):
        name, _, status = line.partition(" ")
        facts.packages[name] = status.strip() == "installed"
    for name in PACKAGES:
        facts.packages.setdefault(name, False)
    facts.addresses = parse_addresses("\n".join(s.get("addresses", [])))
    for line in s.get("files", []):
        parts = line.split(" ")
        if len(parts) == 2 and parts[1] == "-":
            facts.files[parts[0]] = LiveFile(parts[0], None)
        elif len(parts) >= 3:
            content = base64.b64decode(parts[3]).decode() if len(parts) > 3 else ""
            facts.files[parts[0]] = LiveFile(parts[0], content, int(parts[1], 8), parts[2])
    for line in s.get("units", []):
        parts = line.split()
        if parts:
            facts.units[parts[0]] = (
                parts[1] if len(parts) > 1 else "unknown",
                parts[2] if len(parts) > 2 else "unknown",
            )
    hap = s.get("haproxy", [])
    if hap and hap[0].strip().isdigit():
        facts.haproxy_master = int(hap[0].strip())
    if len(hap) > 1:
        facts.haproxy_pids = sorted(int(p) for p in hap[1].split() if p.isdigit())
    for line in s.get("vrrp", []):
        name, _, state = line.partition(" ")
        if name:
            facts.vrrp_states[name] = state.strip()
    for line in s.get("deploy", []):
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "pending":
            deploy_id, *units = value.split() or ["?"]
            facts.pending_deploy = deploy_id if deploy_id else "?"
            # "haproxy" (reload) or "haproxy:restart"
            pairs = [u.partition(":")[::2] for u in units]
            facts.pending_units = [u for u, _ in pairs if u in UNITS]
            facts.pending_restart = [u for u, verb in pairs if u in UNITS and verb == "restart"]
        elif key == "running":
            facts.deploy_running = value or "holder unknown"
        elif key == "applied":
            facts.applied = value
        elif key in TIMES and value.isdigit():
            setattr(facts, key, int(value))
        elif key == "leftover" and value:
            facts.leftovers.append(value)
    for line in s.get("limits", []):
        key, _, value = line.partition(" ")
        if key == "nr_open" and value.strip().isdigit():
            facts.nr_open = int(value.strip())
    facts.firewall = parse_firewall(s.get("firewall", []))
    facts.drained = drained_value((s.get("drain") or [""])[0])
    return facts


def drained_value(text: str) -> bool:
    """What keepalived reads in the drain file: a number, non-zero when drained."""
    try:
        return int(text.strip() or "0") != 0
    except ValueError:
        return False


def parse_firewall(lines: list[str]) -> FirewallFacts:
    fw = FirewallFacts()
    for line in lines:
        key, _, rest = line.partition(" ")
        if key == "unit":
            words = rest.split()
            fw.unit_active = words[0] if words else ""
            # `is-enabled` prints nothing on stdout for a unit file that does not exist.
            fw.unit_enabled = words[1] if len(words) > 1 else ""
        elif key == "table":
            try:
                fw.table = TableState(rest.strip())
            except ValueError:
                fw.table = TableState.UNKNOWN
        elif key == "comment":
            fw.comment_hash = rest.strip()
        elif key == "rolledback":
            fw.rolled_back = rest.strip()
    return fw
