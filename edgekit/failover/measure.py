"""What clients saw, computed from recorded series. Pure functions, unit-tested on recordings.

Times are seconds on one clock (epoch seconds): probes are stamped by the
machine running edgekit, ownership samples by each peer (NTP-synced hosts, or
the same clock in the local lab).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar


@dataclass(frozen=True)
class Probe:
    t: float  # when it was sent
    ok: bool
    target: str = ""  # the service
    vip: str = ""  # the address it went to


@dataclass(frozen=True)
class Sample:
    t: float
    peer: str
    holds: bool
    vip: str = ""


T = TypeVar("T", Probe, Sample)


def of_vip(items: Iterable[T], vip: str) -> list[T]:
    """The probes or samples of one VIP."""
    return [i for i in items if i.vip == vip]


def outage(probes: Sequence[Probe]) -> float:
    """Longest span of failed probes: from the first failure of a run to the next success.

    A run still failing at the end lasts until the last probe. Probes of all targets
    count together: any failure is something a client saw.
    """
    longest = 0.0
    start: float | None = None
    for p in sorted(probes, key=lambda p: p.t):
        if not p.ok and start is None:
            start = p.t
        elif p.ok and start is not None:
            longest = max(longest, p.t - start)
            start = None
    if start is not None and probes:
        longest = max(longest, max(p.t for p in probes) - start)
    return longest


def holder_timeline(
    samples: Iterable[Sample], peers: Sequence[str], stale_after: float = 0.5
) -> list[tuple[float, frozenset[str]]]:
    """(time, set of holders) at each sample; a peer silent for stale_after seconds holds
    nothing (a dead host cannot answer ARP for the VIP)."""
    latest: dict[str, Sample] = {}
    out: list[tuple[float, frozenset[str]]] = []
    for s in sorted(samples, key=lambda s: s.t):
        latest[s.peer] = s
        holders = frozenset(
            p
            for p, last in latest.items()
            if last.holds and s.t - last.t <= stale_after and p in peers
        )
        out.append((s.t, holders))
    return out


def vip_move(
    timeline: Sequence[tuple[float, frozenset[str]]], old_holder: str, fault_t: float
) -> float | None:
    """Seconds from the fault until another peer alone holds the VIP; None if never."""
    for t, holders in timeline:
        if t >= fault_t and holders and old_holder not in holders:
            return t - fault_t
    return None


def split_brain(
    timeline: Sequence[tuple[float, frozenset[str]]], since: float | None = None
) -> float:
    """Total time with two or more holders (after `since`, when given)."""
    total = 0.0
    for (t, holders), (t_next, _) in zip(timeline, timeline[1:], strict=False):
        if len(holders) > 1 and (since is None or t >= since):
            total += t_next - t
    return total


def holders_at(timeline: Sequence[tuple[float, frozenset[str]]], t: float) -> frozenset[str]:
    """Who held the VIP at time t (the latest entry at or before it)."""
    held: frozenset[str] = frozenset()
    for when, holders in timeline:
        if when > t:
            break
        held = holders
    return held


def transitions(timeline: Sequence[tuple[float, frozenset[str]]]) -> int:
    """How often the set of holders changed (for the no-spurious-failover check)."""
    changes = 0
    for (_, a), (_, b) in zip(timeline, timeline[1:], strict=False):
        if a != b:
            changes += 1
    return changes
