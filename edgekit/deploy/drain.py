"""Planned maintenance: drain a peer of its VIPs make-before-break, and undrain it.

Stopping keepalived moves a VIP break-before-make: the holder drops it and sends priority
0, and nobody holds it until the backup's skew time is over (2 of 200 requests failed in
the lab, every time). A drain instead writes 1 into the file keepalived tracks for it
(render.DRAIN_FILE, weight -253): the peer's priority drops to the floor for every VIP,
yet it keeps holding and serving them. Then each VIP it holds moves to another healthy
peer the way deploy's placement moves VIPs (that peer may preempt for a moment, takes
over when its down timer expires, and the old holder lets go when it hears it); so
there is always a holder. nopreempt is back once the VIP has moved.

The mark lives under /var/lib and keepalived reads it at every start: a drained peer
stays at the floor across reboots and deploys until `undrain`, and never takes a VIP
while another healthy peer can hold it. Undrain writes 0 and moves back only the VIPs
the inventory prefers on that peer, make-before-break as well.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from edgekit.deploy import lock as deploy_lock
from edgekit.deploy.placement import HANDOVER_S, Move, healthy, move_to, place_vips, ready
from edgekit.errors import EdgekitError, ExitCode, InputError, OperationError
from edgekit.facts import HostFacts
from edgekit.hosts import gather, in_parallel
from edgekit.inventory import Loaded
from edgekit.progress import Progress
from edgekit.remote import Transport
from edgekit.remote.scripts import script
from edgekit.render import DRAIN_FILE, priorities

GRACE_S = 10.0  # how long a drained peer's haproxy serves on after its VIPs moved


class Interrupted(EdgekitError):
    """Ctrl-C during a drain or undrain, after the peer was left in one whole state."""

    exit_code = ExitCode.INTERRUPTED


@dataclass
class DrainReport:
    peer: str
    drained: bool  # the peer's state at the end
    moved: list[Move] = field(default_factory=list)
    already: bool = False  # it was drained before this command
    stayed: list[str] = field(default_factory=list)  # VIPs it still holds (forced)

    def to_dict(self) -> dict[str, object]:
        return {
            "peer": self.peer,
            "drained": self.drained,
            "already": self.already,
            "moved": [m.to_dict() for m in self.moved],
            "stayed": self.stayed,
        }


def check_peer(loaded: Loaded, peer: str) -> None:
    names = [p.name for p in loaded.inventory.peers]
    if peer not in names:
        raise InputError(
            f"{loaded.path}: no peer named {peer!r} (peers: {', '.join(names)})",
        )


def mark_script(drained: bool) -> str:
    return script("drain-mark", drain_file=DRAIN_FILE, value=1 if drained else 0)


def set_mark(host: Transport, drained: bool) -> None:
    # Written in place: keepalived watches the file with inotify (a rename ends the watch).
    host.check(mark_script(drained), "writing the drain mark", sudo=True, timeout=30)


def read_all(hosts: Mapping[str, Transport]) -> dict[str, HostFacts | EdgekitError]:
    """Facts of every peer, or the error that kept them from being read."""

    def one(host: Transport) -> HostFacts | EdgekitError:
        try:
            return gather(host, [])
        except EdgekitError as exc:
            return exc

    return in_parallel(hosts, one)


def _facts(hosts: Mapping[str, Transport]) -> dict[str, HostFacts]:
    return in_parallel(hosts, lambda h: gather(h, []))


def takers(loaded: Loaded, facts: Mapping[str, HostFacts], peer: str) -> list[str]:
    """Peers other than `peer` that could take its VIPs (healthy, not drained, and no
    instance in FAULT)."""
    instances = [f"VI_{v.vrid}" for v in loaded.inventory.vips]
    return [
        name
        for name, f in facts.items()
        if name != peer
        and healthy(f)
        and all(f.vrrp_states.get(i) in ("BACKUP", "MASTER") for i in instances)
    ]


def drain_moves(loaded: Loaded, facts: Mapping[str, HostFacts], peer: str) -> list[Move]:
    """Where each VIP `peer` holds goes: its preferred peer when that one is ready, else
    the ready peer with the highest priority for it (the one keepalived would pick)."""
    inv = loaded.inventory
    out = []
    for vip, prio in zip(inv.vips, priorities(inv), strict=True):
        address, instance = str(vip.address.ip), f"VI_{vip.vrid}"
        if not facts[peer].holds(vip.address):
            continue
        candidates = [
            n
            for n, f in facts.items()
            if n != peer and ready(f, instance) and not f.holds(vip.address)
        ]
        if not candidates:
            continue
        to = max(candidates, key=lambda n: (n == vip.preferred, prio[n]))
        out.append(Move(address, instance, peer, to))
    return out


def _reachable(
    hosts: Mapping[str, Transport], read: Mapping[str, HostFacts | EdgekitError], peer: str
) -> dict[str, HostFacts]:
    error = read[peer]
    if isinstance(error, EdgekitError):
        raise OperationError(f"{peer}: unreachable, not drained: {error}")
    return {n: f for n, f in read.items() if isinstance(f, HostFacts)}


def drain(
    loaded: Loaded,
    hosts: Mapping[str, Transport],
    peer: str,
    progress: Progress,
    *,
    force: bool = False,
    grace: float = GRACE_S,
    timeout: float = 30.0,
) -> DrainReport:
    """Give every VIP `peer` holds to another healthy peer, make-before-break, and mark
    it drained (it keeps that mark until undrain). Refuses when no other peer could
    take its VIPs, unless `force`. For `grace` seconds after a move the peer still
    serves its established connections and clients whose ARP caches point at it."""
    check_peer(loaded, peer)
    facts = _reachable(hosts, read_all(hosts), peer)
    others = takers(loaded, facts, peer)
    if not others and not force:
        raise OperationError(
            f"refusing to drain {peer}: no other peer is healthy and undrained to take "
            "its VIPs (--force drains it anyway; it then keeps them)"
        )
    live = {n: h for n, h in hosts.items() if n in facts}
    report = DrainReport(peer, drained=False, already=facts[peer].drained)
    with deploy_lock.host_locks(live, deploy_lock.owner()):
        try:
            report.moved = give_away(loaded, live, peer, progress, grace=grace, timeout=timeout)
        except (KeyboardInterrupt, EdgekitError) as exc:
            # Either whole or not at all: a peer that still holds a VIP is undrained.
            state = _settle(loaded, live, peer)
            report.drained = state
            word = "drained" if state else "not drained (it still held a VIP)"
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(f"interrupted: {peer} is {word}") from None
            raise OperationError(f"{exc.message}; {peer} is {word}") from None
    report.drained = True
    now = gather(hosts[peer], [])
    report.stayed = [str(v.address.ip) for v in loaded.inventory.vips if now.holds(v.address)]
    if report.stayed:
        progress(f"{peer}: keeps {', '.join(report.stayed)}: no other peer can take them")
    return report


def give_away(
    loaded: Loaded,
    hosts: Mapping[str, Transport],
    peer: str,
    progress: Progress,
    *,
    grace: float,
    timeout: float,
) -> list[Move]:
    """The drain itself, under locks the caller holds: the mark, then each VIP `peer`
    holds to another ready peer, make-before-break (OperationError when one does not
    move). For `grace` seconds after a move the peer still serves its established
    connections (the new holder passes their packets on) and stale ARP caches."""
    set_mark(hosts[peer], True)
    progress(f"{peer}: drained mark set (priority at the floor for every VIP)")
    facts = _facts(hosts)
    moves = drain_moves(loaded, facts, peer)
    for to in dict.fromkeys(m.to for m in moves):
        group = [m for m in moves if m.to == to]
        if grace > 0:
            progress(f"{peer}: serves the connections it has for {grace:g}s after the move")
        error = move_to(
            loaded,
            hosts,
            to,
            group,
            progress,
            timeout,
            why="a healthy undrained peer",
            handover_s=max(grace, HANDOVER_S),
        )
        if error:
            raise OperationError(error)
    return moves


@contextmanager
def drained_for_restart(
    loaded: Loaded, hosts: Mapping[str, Transport], peer: str, progress: Progress
) -> Iterator[None]:
    """For a deploy that restarts haproxy or keepalived on `peer` (under the locks it
    holds): a restart would move the peer's VIPs break-before-make (haproxy down is
    FAULT, a stopping keepalived sends priority 0), so when it holds a VIP and another
    peer can take it, the VIPs move first, make-before-break, and the peer is undrained
    after the restart. A failed restart leaves it drained (its VIPs are elsewhere)."""
    facts = _facts(hosts)
    holds = any(facts[peer].holds(v.address) for v in loaded.inventory.vips)
    if not holds or facts[peer].drained or not takers(loaded, facts, peer):
        yield
        return
    progress(f"{peer}: restarts a unit while holding VIPs: draining it first")
    give_away(loaded, hosts, peer, progress, grace=0.0, timeout=30.0)
    try:
        yield
    except BaseException:
        progress(f"{peer}: left drained after the failed restart (edgekit undrain {peer})")
        raise
    set_mark(hosts[peer], False)
    progress(f"{peer}: undrained after the restart")


def _settle(loaded: Loaded, hosts: Mapping[str, Transport], peer: str) -> bool:
    """After a drain stopped midway: drained when the peer holds no VIP any more, else
    its mark goes back to 0. Returns whether it is drained."""
    try:
        holds = any(gather(hosts[peer], []).holds(v.address) for v in loaded.inventory.vips)
        if holds:
            set_mark(hosts[peer], False)
        return not holds
    except EdgekitError:
        return True  # the mark was written (or not): the next drain or undrain says


def undrain(
    loaded: Loaded,
    hosts: Mapping[str, Transport],
    peer: str,
    progress: Progress,
    *,
    timeout: float = 30.0,
) -> list[Move]:
    """Make `peer` eligible again, then move back the VIPs the inventory prefers on it
    (make-before-break); the VIPs moved."""
    check_peer(loaded, peer)
    facts = _reachable(hosts, read_all(hosts), peer)
    if not facts[peer].drained:
        progress(f"{peer}: not drained")
    live = {n: h for n, h in hosts.items() if n in facts}
    try:
        with deploy_lock.host_locks(live, deploy_lock.owner()):
            set_mark(hosts[peer], False)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {peer} may still be drained; run undrain again") from None
    progress(f"{peer}: undrained (priorities as the inventory sets them)")
    moved: list[Move] = []
    if len(live) < len(hosts):
        progress("VIPs not moved back: some peers are unreachable")
        return moved
    try:
        error = place_vips(loaded, live, progress, timeout, moved=moved, only_to=peer)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: {peer} is undrained; its preferred VIPs may not be back yet"
        ) from None
    if error:
        raise OperationError(f"{peer} is undrained, but {error}")
    return moved
