"""Put each VIP with `preferred:` on its preferred peer, make-before-break.

keepalived runs with `nopreempt`: a recovered peer never takes a VIP back by itself, and
so a VIP stays wherever the last failover (or the first peer to start) left it. Deploy
moves it: on the preferred peer alone, whose priority for that VIP is the highest,
`preempt` is allowed for a moment (a file keepalived.conf includes in each instance, then
a reload). That peer then ignores the holder's lower-priority adverts, becomes MASTER when
its down timer expires, and the holder, hearing the higher priority, hands the VIP over:
it kept serving until then (about 3 adverts). Then the file goes and keepalived reloads
again, so nopreempt holds as before. A VIP never moves while the preferred peer is not
healthy.

Connections open on the old holder at the move would break: their next packets reach
the new holder, which has no socket for them and resets them (about one move in twelve
failed a request in the lab, at 25 requests a second). So for the move and HANDOVER_S
after it the old holder keeps the VIP as a local route (it serves them to the end, and
answers no ARP for it), and the new holder passes each packet of a TCP connection it does
not know on to the old holder (nft `dup`, then drop).

Stopping keepalived on the holder instead would move the VIP too, but break-before-make:
the holder drops the VIP before the other takes it (2 of 200 requests failed in the lab).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edgekit.deploy import lock as deploy_lock
from edgekit.deploy.apply import wait_healthy
from edgekit.errors import EdgekitError
from edgekit.facts import HANDOVER_DIR, HostFacts
from edgekit.hosts import gather, in_parallel
from edgekit.inventory import Loaded
from edgekit.progress import Progress, wait_until
from edgekit.remote import Transport
from edgekit.remote.scripts import script
from edgekit.render import PLACEMENT_DIR, interface_of


@dataclass(frozen=True)
class Move:
    vip: str  # the address
    instance: str  # VI_<vrid>
    holder: str  # where it is
    to: str  # its preferred peer

    def line(self) -> str:
        return f"VIP {self.vip}: {self.holder} -> {self.to} (its preferred peer)"

    def to_dict(self) -> dict[str, str]:
        return {"vip": self.vip, "from": self.holder, "to": self.to}


# The handover: for a moment after a move the old holder still serves the connections it
# had accepted (a local route for the VIP, no ARP answers for it), and the new holder
# passes on the packets of connections it does not know.
HANDOVER_TABLE = "edgekit_handover"
HANDOVER_METRIC = 1025  # our local routes; the kernel's own have metric 0
HANDOVER_S = 2.0  # how long the old holder finishes its connections after the move
# A timer on each host undoes the handover by itself if the move's own restore never
# comes (edgekit killed, the connection lost): after the move's timeout, the handover
# and this margin.
HANDOVER_UNIT = "edgekit-handover-expire"
EXPIRY_MARGIN_S = 15.0
CLOSE_S = 0.5  # for the FINs of connections closed at the end of the window to arrive
REARM_MARGIN_S = 5.0  # once the VIP has moved: the timer fires this long after the window


def allow_script(instances: list[str]) -> str:
    return script("placement-allow", placement_dir=PLACEMENT_DIR, instances=instances)


def restore_script() -> str:
    return script(
        "placement-restore",
        placement_dir=PLACEMENT_DIR,
        handover_dir=HANDOVER_DIR,
        table=HANDOVER_TABLE,
        metric=HANDOVER_METRIC,
        unit=HANDOVER_UNIT,
    )


def _rearm(window: float) -> int:
    """The expiry timer once the VIP has moved: the window, the close and a margin."""
    return math.ceil(window + CLOSE_S + REARM_MARGIN_S)


def _expiry(expire_after: int) -> dict[str, object]:
    return {"restore": restore_script(), "unit": HANDOVER_UNIT, "expire_after": expire_after}


def give_script(vips: list[tuple[str, str]], expire_after: int = 60) -> str:
    """On the old holder: (VIP, its interface there) for each VIP it hands over; undone
    by the host itself `expire_after` seconds later unless restored before."""
    return script(
        "handover-give",
        handover_dir=HANDOVER_DIR,
        vips=vips,
        metric=HANDOVER_METRIC,
        **_expiry(expire_after),
    )


def handover_ruleset(rules: list[tuple[str, str, str]]) -> str:
    """nft: (VIP, old holder's address, interface) -> pass the packets of connections
    this peer does not know on to the old holder (addresses and interface names are
    validated: nothing here needs quoting for nft)."""
    lines = [
        f"        ip daddr {vip} tcp flags & (syn | rst) == 0 ct state new,invalid "
        f'dup to {old} device "{iface}" drop'
        for vip, old, iface in rules
    ]
    return "\n".join(
        [
            f"table ip {HANDOVER_TABLE}",
            f"delete table ip {HANDOVER_TABLE}",
            f"table ip {HANDOVER_TABLE} {{",
            "    chain prerouting {",
            "        type filter hook prerouting priority -150; policy accept;",
            *lines,
            "    }",
            "}",
        ]
    )


def close_script(vips: list[str]) -> str:
    """On the old holder at the end of the window: haproxy closes (FIN) what is still
    open on these VIPs; prints `closed N`."""
    return script("handover-close", vips=vips)


def take_script(rules: list[tuple[str, str, str]], expire_after: int = 60) -> str:
    return script(
        "handover-take",
        handover_dir=HANDOVER_DIR,
        ruleset=handover_ruleset(rules),
        **_expiry(expire_after),
    )


def wanted(loaded: Loaded) -> bool:
    """Whether any VIP names a preferred peer (nothing to place otherwise)."""
    return any(v.preferred for v in loaded.inventory.vips)


def misplaced(
    loaded: Loaded, holders: Mapping[str, list[str]], ready: Callable[[str, str], bool]
) -> list[Move]:
    """VIPs held by one peer that is not their preferred one, while the preferred peer is
    `ready(peer, instance)` to take them. `holders`: VIP address -> holding peers."""
    out = []
    for vip in loaded.inventory.vips:
        address, instance = str(vip.address.ip), f"VI_{vip.vrid}"
        now = holders.get(address, [])
        if vip.preferred and len(now) == 1 and now[0] != vip.preferred:
            if ready(vip.preferred, instance):
                out.append(Move(address, instance, now[0], vip.preferred))
    return out


def healthy(facts: HostFacts) -> bool:
    """haproxy and keepalived run, and the peer is not drained (edgekit drain)."""
    units = {u: facts.units.get(u, ("",))[0] for u in ("haproxy", "keepalived")}
    return (
        units == {"haproxy": "active", "keepalived": "active"}
        and bool(facts.haproxy_pids)
        and not facts.drained
    )


def ready(facts: HostFacts, instance: str) -> bool:
    """The peer can take the VIP: healthy, and the instance is BACKUP."""
    return healthy(facts) and facts.vrrp_states.get(instance) == "BACKUP"


def _holders(loaded: Loaded, facts: Mapping[str, HostFacts]) -> dict[str, list[str]]:
    return {
        str(v.address.ip): [n for n, f in facts.items() if f.holds(v.address)]
        for v in loaded.inventory.vips
    }


def planned_moves(loaded: Loaded, facts: Mapping[str, HostFacts]) -> list[Move]:
    """What placement would do now, from facts read on every peer (none when some peer
    was not read, e.g. with --limit: its VIPs are unknown)."""
    if not wanted(loaded) or set(facts) != {p.name for p in loaded.inventory.peers}:
        return []
    return misplaced(loaded, _holders(loaded, facts), lambda peer, inst: ready(facts[peer], inst))


def place_vips(
    loaded: Loaded,
    hosts: Mapping[str, Transport],
    progress: Progress,
    timeout: float,
    *,
    moved: list[Move] | None = None,
    only_to: str | None = None,
) -> str | None:
    """Move each VIP to its healthy preferred peer, make-before-break. None when every
    VIP is where it should be (or cannot be: its preferred peer is not healthy), else
    what went wrong. Appends what it moved to `moved`. With `only_to`, only the VIPs
    that prefer that peer."""
    if not wanted(loaded):
        return None
    if set(hosts) != {p.name for p in loaded.inventory.peers}:
        progress("VIPs not placed: --limit leaves out peers that may hold them")
        return None
    with deploy_lock.host_locks(hosts, deploy_lock.owner()):
        # A deploy stopped in the middle of a move may have left `preempt` behind.
        for name, restored in in_parallel(hosts, _restore).items():
            if restored:
                progress(f"{name}: removed the VIP placement a stopped deploy left")
        facts = in_parallel(hosts, lambda h: gather(h, []))
        moves = [m for m in planned_moves(loaded, facts) if only_to in (None, m.to)]
        holders = _holders(loaded, facts)
        for vip in loaded.inventory.vips:
            address, peer = str(vip.address.ip), vip.preferred
            if only_to not in (None, peer):
                continue
            if peer and holders[address] != [peer] and address not in {m.vip for m in moves}:
                why = "is drained" if facts[peer].drained else "is not healthy"
                progress(
                    f"VIP {address}: stays on {', '.join(holders[address]) or 'no peer'}: "
                    f"its preferred peer {peer} {why}"
                )
        for peer in dict.fromkeys(m.to for m in moves):
            try:
                error = move_to(
                    loaded, hosts, peer, [m for m in moves if m.to == peer], progress, timeout
                )
            except EdgekitError as exc:
                error = str(exc)
            if error:
                return error
            if moved is not None:
                moved.extend(m for m in moves if m.to == peer)
    return None


def _restore(host: Transport) -> bool:
    result = host.check(restore_script(), "restoring nopreempt", sudo=True)
    return "restored" in result.stdout


def move_to(
    loaded: Loaded,
    hosts: Mapping[str, Transport],
    peer: str,
    moves: list[Move],
    progress: Progress,
    timeout: float,
    *,
    why: str = "their preferred peer",
    handover_s: float | None = None,
) -> str | None:
    """Hand `moves` (VIPs held elsewhere) to `peer`, make-before-break; None or what went
    wrong. The peer must have a higher priority than each holder (its preferred peer,
    or any peer when the holder is drained). For `handover_s` (default HANDOVER_S) after
    the move the old holder still serves the connections it had."""
    inv = loaded.inventory
    host = hosts[peer]
    instances = [m.instance for m in moves]
    vips = ", ".join(m.vip for m in moves)
    holders: dict[str, list[str]] = {}

    def arrived() -> bool:
        holders.update(_holders(loaded, in_parallel(hosts, lambda h: gather(h, []))))
        return all(holders[m.vip] == [peer] for m in moves)

    peers = {p.name: p for p in inv.peers}
    vip_of = {str(v.address.ip): v for v in inv.vips}
    olds = sorted({m.holder for m in moves})
    started = time.monotonic()
    window = HANDOVER_S if handover_s is None else handover_s
    expire_after = math.ceil(timeout + window + EXPIRY_MARGIN_S)
    try:
        for old in olds:
            give = [
                (m.vip, interface_of(inv, peers[old], vip_of[m.vip]))
                for m in moves
                if m.holder == old
            ]
            hosts[old].check(give_script(give, expire_after), "preparing the handover", sudo=True)
        rules = [
            (m.vip, str(peers[m.holder].address), interface_of(inv, peers[peer], vip_of[m.vip]))
            for m in moves
        ]
        taken = host.check(take_script(rules, expire_after), "preparing the handover", sudo=True)
        if "no nft" in taken.stdout:
            progress(f"{peer}: nft is missing: connections open on the old holder may break")
        if not inv.vrrp.preempt:  # with preempt the peer takes it by itself
            progress(f"{peer}: taking {vips}: preempt allowed for {', '.join(instances)}")
            allowed = host.run(allow_script(instances), sudo=True, timeout=60)
            if not allowed.ok:
                return f"{peer}: allowing preempt failed: {allowed.last_line()}"
        arrived_in_time = wait_until(arrived, timeout, interval=0.2)
        took = time.monotonic() - started
        if arrived_in_time:  # the old holder finishes what it had accepted
            # The window starts now: the hosts' own timers end it at most a few seconds
            # after it should, should this process die before it does.
            rearm = script("handover-arm", handover_dir=HANDOVER_DIR, **_expiry(_rearm(window)))
            for name in (*olds, peer):
                hosts[name].run(rearm, sudo=True, timeout=30)
            time.sleep(window)
            # What is still open there ends with a FIN from haproxy while the handover
            # still carries the clients' packets, not with a reset from the new holder.
            for old in olds:
                gone = [m.vip for m in moves if m.holder == old]
                closed = hosts[old].run(close_script(gone), sudo=True, timeout=30)
                count = closed.stdout.strip().removeprefix("closed ")
                if closed.ok and count not in ("", "0"):
                    progress(f"{old}: closed {count} connection(s) still open on {', '.join(gone)}")
            time.sleep(CLOSE_S)
    finally:
        restored = host.run(restore_script(), sudo=True, timeout=60)
        for old in olds:
            hosts[old].run(restore_script(), sudo=True, timeout=60)
    if not restored.ok:
        return f"{peer}: restoring nopreempt failed: {restored.last_line()}"
    if not arrived_in_time:
        where = "; ".join(
            f"{m.vip} on {', '.join(holders.get(m.vip, [])) or 'none'}" for m in moves
        )
        return f"VIPs did not move to {peer}, {why}, within {timeout:.0f}s ({where})"
    for m in moves:
        progress(f"VIP {m.vip}: moved from {m.holder} to {peer} in {took:.1f}s (make-before-break)")
    sick = wait_healthy(host, [f"VI_{v.vrid}" for v in inv.vips], inv.stats.port, timeout)
    if sick:
        return f"{peer}: after taking {vips}: {sick}"
    progress(f"{peer}: nopreempt again")
    return None
