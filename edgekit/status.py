"""edgekit status: per-peer health, VIP holders, drift, and one verdict for the cluster."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from edgekit import firewall
from edgekit.deploy.placement import misplaced
from edgekit.errors import EdgekitError
from edgekit.facts import FirewallFacts, HostFacts, TableState
from edgekit.hosts import gather, in_parallel
from edgekit.inventory import Loaded
from edgekit.remote import Transport
from edgekit.render import HAPROXY_CFG, KEEPALIVED_CONF, firewall_hash, render_all

# Reads haproxy's runtime API (a unix socket) on the host; python3 is on every
# Debian edgekit supports, socat is not.
SHOW_STAT = (
    "python3 -c 'import socket;s=socket.socket(socket.AF_UNIX);"
    's.connect("/run/haproxy/admin.sock");s.sendall(b"show stat\\n");'
    'import sys;[sys.stdout.write(c.decode()) for c in iter(lambda:s.recv(65536),b"")]\''
)


@dataclass
class PeerStatus:
    name: str
    reachable: bool
    error: str = ""
    haproxy_up: bool = False
    keepalived_up: bool = False
    vrrp: dict[str, str] = field(default_factory=dict)  # VI_51 -> MASTER
    vips: list[str] = field(default_factory=list)
    servers: dict[str, dict[str, str]] = field(default_factory=dict)  # backend -> server -> UP
    drift: list[str] = field(default_factory=list)
    # "loaded" (the table is what the installed ruleset loads), "off" (firewall.enabled is
    # false), or what is wrong: "not loaded", "differs", ...; see firewall_state().
    firewall: str = ""
    # Units that run an older config than the installed one (a deploy stopped before it
    # reloaded them), and what a stopped deploy left behind (staging holds secrets).
    stale: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    deploy_running: str = ""  # who holds the host's deploy lock now
    drained: bool = False  # edgekit drain: it takes no VIP while another peer can


STALE_CONFIG = {"haproxy": HAPROXY_CFG, "keepalived": KEEPALIVED_CONF}


@dataclass
class ClusterStatus:
    peers: list[PeerStatus]
    holders: dict[str, list[str]]
    problems: list[str]
    # What serves, but not as the inventory says (a VIP off its preferred peer): no
    # failure (exit 0, `healthy`), but part of the verdict.
    warnings: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        warned = [f"warning: {w}" for w in self.warnings]
        return "; ".join((self.problems or ["healthy"]) + warned)

    def to_dict(self) -> dict[str, object]:
        return {
            "healthy": self.healthy,
            "verdict": self.verdict,
            "problems": self.problems,
            "warnings": self.warnings,
            "vip_holders": self.holders,
            "peers": [asdict(p) for p in self.peers],
        }


def parse_show_stat(text: str, backends: set[str]) -> dict[str, dict[str, str]]:
    """haproxy `show stat` CSV -> {backend: {server: status}} for our backends."""
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        px, sv = row.get("pxname"), row.get("svname")
        if px in backends and sv not in ("FRONTEND", "BACKEND", None):
            out.setdefault(px, {})[sv] = (row.get("status") or "?").split(" ")[0]
    return out


def peer_status(loaded: Loaded, host: Transport, wanted: dict[str, str]) -> PeerStatus:
    try:
        facts = gather(host, list(wanted))
    except EdgekitError as exc:
        return PeerStatus(host.name, reachable=False, error=str(exc))
    st = PeerStatus(host.name, reachable=True)
    st.haproxy_up = facts.units.get("haproxy", ("",))[0] == "active" and bool(facts.haproxy_pids)
    st.keepalived_up = facts.units.get("keepalived", ("",))[0] == "active"
    instances = [f"VI_{v.vrid}" for v in loaded.inventory.vips]
    st.vrrp = {
        i: (facts.vrrp_states.get(i, "UNKNOWN") if st.keepalived_up else "STOPPED")
        for i in instances
    }
    st.vips = [str(v.address.ip) for v in loaded.inventory.vips if facts.holds(v.address)]
    st.drift = drift(facts, wanted)
    st.firewall = firewall_state(loaded, facts.firewall)
    st.stale = facts.stale_units()
    st.leftovers = facts.leftovers
    st.deploy_running = facts.deploy_running
    st.drained = facts.drained
    if st.haproxy_up:
        result = host.run(SHOW_STAT, sudo=True, timeout=15)
        if result.ok:
            st.servers = parse_show_stat(result.stdout, {s.name for s in loaded.inventory.services})
    return st


def firewall_state(loaded: Loaded, fw: FirewallFacts) -> str:
    """One word or phrase: whether the edgekit table is loaded and is what it should be."""
    inv = loaded.inventory
    if not inv.firewall.enabled:
        return "off (but the edgekit table is loaded)" if fw.table.present else "off"
    if fw.table is TableState.NO_NFT:
        return "nft missing"
    if fw.table is TableState.UNLOADED:
        return "not loaded" + (f" (host rolled back at {fw.rolled_back})" if fw.rolled_back else "")
    if fw.table is TableState.DIFFERS:
        return f"differs from {firewall.RULESET}"
    if fw.table is TableState.LOADED and fw.comment_hash != firewall_hash(inv):
        return "loaded from another inventory"
    if fw.table not in (TableState.MATCH, TableState.LOADED):
        return str(fw.table)
    if fw.unit_enabled != "enabled":
        return f"loaded, but {firewall.UNIT} is not enabled (lost at reboot)"
    return "loaded"


def drift(facts: HostFacts, wanted: dict[str, str]) -> list[str]:
    """Managed files whose live content differs from the rendered one."""
    return [
        path
        for path, content in wanted.items()
        if (live := facts.files.get(path)) is None or live.content != content
    ]


def verdict(loaded: Loaded, peers: list[PeerStatus]) -> tuple[dict[str, list[str]], list[str]]:
    problems: list[str] = []
    holders = {
        str(v.address.ip): [p.name for p in peers if str(v.address.ip) in p.vips]
        for v in loaded.inventory.vips
    }
    for vip, names in holders.items():
        if not names:
            problems.append(f"no holder for VIP {vip}")
        elif len(names) > 1:
            problems.append(f"split brain: VIP {vip} on {', '.join(names)}")
    for p in peers:
        if not p.reachable:
            problems.append(f"{p.name} unreachable")
            continue
        if not p.haproxy_up:
            problems.append(f"{p.name}: haproxy down")
        if not p.keepalived_up:
            problems.append(f"{p.name}: keepalived down")
        faults = [i for i, s in p.vrrp.items() if s not in ("MASTER", "BACKUP")]
        if p.keepalived_up and faults:
            problems.append(f"{p.name}: {', '.join(f'{i} {p.vrrp[i]}' for i in faults)}")
        if p.drift:
            problems.append(f"drift on {p.name}: {', '.join(p.drift)}")
        if p.deploy_running:
            # What a running deploy has under way is neither stale nor left behind.
            problems.append(f"{p.name}: a deploy is running ({p.deploy_running})")
            continue
        for unit in p.stale:
            problems.append(
                f"{p.name}: {unit} runs an older config than {STALE_CONFIG[unit]} "
                "(run edgekit deploy to reload it)"
            )
        if p.leftovers:
            problems.append(
                f"{p.name}: a stopped deploy left {', '.join(p.leftovers)} "
                "(the next deploy removes it)"
            )
        if p.firewall not in ("loaded", "off", ""):
            problems.append(f"{p.name}: firewall {p.firewall}")
    return holders, problems


def warnings(loaded: Loaded, peers: list[PeerStatus], holders: dict[str, list[str]]) -> list[str]:
    """A VIP held by one peer that is not its preferred one, while the preferred peer
    could take it (reachable, haproxy and keepalived up, that instance BACKUP). With
    nopreempt it stays there until a deploy moves it."""
    by_name = {p.name: p for p in peers}

    def ready(peer: str, instance: str) -> bool:
        p = by_name.get(peer)
        return bool(
            p
            and p.reachable
            and p.haproxy_up
            and p.keepalived_up
            and p.vrrp.get(instance) == "BACKUP"
            and not p.drained
        )

    out = [
        f"VIP {m.vip} is on {m.holder}, not on its preferred peer {m.to} "
        "(edgekit deploy moves it there)"
        for m in misplaced(loaded, holders, ready)
    ]
    for p in peers:
        if p.reachable and p.drained:
            kept = f"; it still holds {', '.join(p.vips)}" if p.vips else ""
            out.append(f"{p.name} is drained (edgekit undrain {p.name} ends it){kept}")
    return out


def cluster_status(loaded: Loaded, hosts: Mapping[str, Transport]) -> ClusterStatus:
    files = render_all(loaded)
    peers = list(
        in_parallel(
            hosts, lambda h: peer_status(loaded, h, {f.path: f.content for f in files[h.name]})
        ).values()
    )
    holders, problems = verdict(loaded, peers)
    return ClusterStatus(peers, holders, problems, warnings(loaded, peers, holders))
