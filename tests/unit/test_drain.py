"""Planned maintenance: drain and undrain a peer make-before-break (edgekit.deploy.drain),
and reboots and rolling upgrades inside a drain (edgekit.deploy.maintenance).

The hosts are FakeHosts over test_placement's VRRP model, extended with the drain mark
(the facts' `@drain` section, written by the drain-mark script) and a takeover rule by
effective priority: a peer allowed to preempt takes a VIP when its priority for it is
higher than the holder's, and a drained peer's priority is the floor (1)."""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from edgekit.deploy import drain as drain_module
from edgekit.deploy import maintenance, placement
from edgekit.deploy.apply import health_command
from edgekit.deploy.drain import DrainReport, Interrupted, drain, drain_moves, takers, undrain
from edgekit.deploy.maintenance import (
    Maintenance,
    Upgrade,
    parse_simulation,
    reboot_host,
    upgrade_order,
)
from edgekit.deploy.placement import Move
from edgekit.errors import ExitCode, InputError, OperationError
from edgekit.facts import HostFacts, parse_facts
from edgekit.hosts import gather
from edgekit.inventory import Loaded, load_inventory
from edgekit.progress import wait_until
from edgekit.remote import HostError, Result
from edgekit.remote.fake import FakeHost
from edgekit.remote.scripts import script
from edgekit.render import DRAIN_FILE, priorities, render_all
from edgekit.status import cluster_status
from tests.unit import simhost
from tests.unit.simhost import PASSWORD
from tests.unit.test_placement import ALLOW, RESTORE, A, B, Cluster, inventory

# The drain-mark script's write: `printf '%s\n' 1 > /var/lib/edgekit/drained`.
MARK = r"printf '%s\\n' ([01]) > " + re.escape(DRAIN_FILE)
FACTS = r"echo '@os'"
LOCK = r"flock -n 9"
UPGRADE = r"--force-confold"  # apt-get upgrade itself, not its simulation
SIMULATE = r"apt-get -s"
CHECK = r"keepalived -t -f"  # the check-running script after an upgrade
T = 0.5  # how long a VIP may take to move (in the model it moves at once)


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", PASSWORD)
    monkeypatch.setattr(placement, "HANDOVER_S", 0.0)
    monkeypatch.setattr(placement, "CLOSE_S", 0.0)
    # drain takes HANDOVER_S as the least handover a move gets (a copy of the name).
    monkeypatch.setattr(drain_module, "HANDOVER_S", 0.0, raising=False)


def inventory3(tmp_path: Path, *, a: str | None, b: str | None = None) -> Loaded:
    """simhost's three peers, with VIP A preferring `a` and VIP B preferring `b`."""
    text = simhost.INVENTORY.format(firewall="false")
    vips = "".join(
        f"  - {{address: {vip}/24, vrid: {vrid}{f', preferred: {pref}' if pref else ''}}}\n"
        for vip, vrid, pref in ((A, 51, a), (B, 52, b))
    )
    text = text.replace(f"  - {{address: {A}/24, vrid: 51}}\n", vips)
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return load_inventory(path)


class Drainable(Cluster):
    """test_placement's Cluster for any number of peers, plus each peer's drain mark
    (written by the drain-mark script, read back in the facts' `@drain` section) and
    keepalived's choice by effective priority. `events` holds every mark written,
    preempt allowed, takeover and restore, in order."""

    def __init__(
        self,
        loaded: Loaded,
        holders: dict[str, str],
        *,
        drained: Iterable[str] = (),
        unhealthy: Iterable[str] = (),
        stuck: bool = False,
    ) -> None:
        inv = loaded.inventory
        self.loaded = loaded
        self.peers = [p.name for p in inv.peers]
        self.holder = dict(holders)
        self.unhealthy = frozenset(unhealthy)
        self.stuck = stuck
        self.mark = {p: int(p in set(drained)) for p in self.peers}
        self.allowed: dict[str, set[str]] = {p: set() for p in self.peers}
        self.events: list[str] = []
        self.files = render_all(loaded)
        self.priority = {
            f"VI_{v.vrid}": prio for v, prio in zip(inv.vips, priorities(inv), strict=True)
        }
        self.hosts = {p: self._host(p) for p in self.peers}

    def facts(self, peer: str) -> str:
        text = super().facts(peer)
        assert text.endswith("@end\n")
        return text.removesuffix("@end\n") + f"@drain\n{self.mark[peer]}\n@end\n"

    def effective(self, peer: str, instance: str) -> int:
        """keepalived's priority: the tracked drain file (weight -253) floors it at 1."""
        return 1 if self.mark[peer] else self.priority[instance][peer]

    def _allow(self, peer: str, command: str) -> Result:
        instances = set(re.findall(r"/(VI_\d+)\.conf\.tmp", command))
        self.allowed[peer] |= instances
        self.events.append(f"{peer} may preempt {' '.join(sorted(instances))}")
        for vip, inst, _ in self._vips():
            holder = self.holder.get(vip)
            if self.stuck or holder is None or inst not in self.allowed[peer]:
                continue
            if peer != holder and peer not in self.unhealthy:
                if self.effective(peer, inst) > self.effective(holder, inst):
                    # The taker becomes MASTER first; the holder hears its higher
                    # priority and only then lets go.
                    self.events += [f"{peer} takes {vip}", f"{holder} releases {vip}"]
                    self.holder[vip] = peer
        return Result(command, 0, "", "")

    def _restore(self, peer: str, command: str) -> Result:
        self.events.append(f"{peer} restores")  # the handover's local route goes too
        if self.allowed[peer]:
            self.events.append(f"{peer} nopreempt")
        return super()._restore(peer, command)

    def _mark(self, peer: str, command: str) -> Result:
        found = re.search(MARK, command)
        assert found
        self.mark[peer] = int(found.group(1))
        self.events.append(f"{peer} mark {self.mark[peer]}")
        return Result(command, 0, "", "")

    def _host(self, peer: str) -> FakeHost:
        host = super()._host(peer)
        host.on(MARK, respond=lambda cmd: self._mark(peer, cmd))
        return host

    def marks(self, peer: str) -> list[int]:
        """The drain marks written on `peer`, in order."""
        return [int(m.group(1)) for c in self.hosts[peer].commands() if (m := re.search(MARK, c))]

    def changes(self, peer: str) -> list[str]:
        """Every command sent to `peer` other than a facts read."""
        return [c for c in self.hosts[peer].commands() if not re.search(FACTS, c)]

    def locks_released(self) -> bool:
        return all(not h.shared.held for h in self.hosts.values())


def ctrl_c(_command: str) -> Result:
    raise KeyboardInterrupt


def before(events: list[str], first: str, then: str) -> bool:
    return events.index(first) < events.index(then)


def last(host: FakeHost, pattern: str) -> int:
    """Position of the last command sent to `host` that matches `pattern`."""
    return max(i for i, c in enumerate(host.commands()) if re.search(pattern, c))


# --- drain ----------------------------------------------------------------------------


def test_draining_the_holder_of_a_moves_it_to_the_other_peer_make_before_break(
    tmp_path: Path,
) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy2"})
    notes: list[str] = []
    report = drain(cluster.loaded, cluster.hosts, "proxy1", notes.append, grace=0, timeout=T)
    assert report.moved == [Move(A, "VI_51", "proxy1", "proxy2")]
    assert report.drained and not report.already and report.stayed == []
    assert report.to_dict()["moved"] == [{"vip": A, "from": "proxy1", "to": "proxy2"}]
    assert cluster.holder == {A: "proxy2", B: "proxy2"}
    assert cluster.mark == {"proxy1": 1, "proxy2": 0}
    ev = cluster.events
    # The mark first (proxy1 at the floor), then proxy2 may preempt, takes A, and only
    # then does proxy1 let go; then nopreempt is back.
    assert before(ev, "proxy1 mark 1", "proxy2 may preempt VI_51")
    assert before(ev, "proxy2 may preempt VI_51", f"proxy2 takes {A}")
    assert before(ev, f"proxy2 takes {A}", f"proxy1 releases {A}")
    assert before(ev, f"proxy1 releases {A}", "proxy2 nopreempt")
    assert cluster.allowed == {"proxy1": set(), "proxy2": set()}
    p1, p2 = cluster.hosts["proxy1"], cluster.hosts["proxy2"]
    assert p2.index(ALLOW) < last(p2, RESTORE) and p1.index(MARK) < last(p1, RESTORE)
    # B was on proxy2 already: nobody was allowed to preempt for it, and it never moved.
    (allow,) = cluster.sent("proxy2", ALLOW)
    assert "VI_51.conf" in allow and "VI_52" not in allow
    assert cluster.sent("proxy1", ALLOW) == []
    assert not [e for e in ev if B in e]
    assert cluster.marks("proxy1") == [1] and cluster.marks("proxy2") == []
    # The holder is never stopped or restarted: it serves until proxy2 has A.
    assert cluster.sent("proxy1", r"systemctl (stop|restart) keepalived") == []
    assert any(f"VIP {A}: moved from proxy1 to proxy2" in n for n in notes)
    assert cluster.locks_released()


def test_draining_a_peer_that_holds_both_vips_hands_both_over_in_one_takeover(
    tmp_path: Path,
) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy1"})
    report = drain(cluster.loaded, cluster.hosts, "proxy1", lambda _m: None, grace=0, timeout=T)
    assert [m.vip for m in report.moved] == [A, B]
    assert cluster.holder == {A: "proxy2", B: "proxy2"}
    (allow,) = cluster.sent("proxy2", ALLOW)
    assert "VI_51.conf" in allow and "VI_52.conf" in allow
    assert cluster.mark["proxy1"] == 1


def test_the_drained_peer_serves_its_connections_for_the_grace_time_after_the_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy2"})
    monkeypatch.setattr(time, "sleep", lambda s: cluster.events.append(f"sleep {s:g}"))
    drain(cluster.loaded, cluster.hosts, "proxy1", lambda _m: None, grace=7, timeout=T)
    ev = cluster.events
    # After proxy2 took A, and before proxy1's handover (its local route for A) is undone.
    assert before(ev, f"proxy1 releases {A}", "sleep 7")
    assert before(ev, "sleep 7", "proxy1 restores")


@pytest.mark.parametrize(
    ("prefs", "holder", "peer", "drained", "unhealthy", "to"),
    [
        # Its preferred peer when that one is ready (though proxy2 is first in order).
        (("proxy3", None), "proxy1", "proxy1", (), (), "proxy3"),
        # The drained peer was the preferred one: the next by priority (proxy3 140),
        # not the next in inventory order (proxy1 130).
        (("proxy2", None), "proxy2", "proxy2", (), (), "proxy3"),
        # No preferred peer: priorities follow inventory order.
        ((None, None), "proxy1", "proxy1", (), (), "proxy2"),
        # The preferred peer is drained, or its haproxy is down: the next ready one.
        (("proxy3", None), "proxy1", "proxy1", ("proxy3",), (), "proxy2"),
        (("proxy3", None), "proxy1", "proxy1", (), ("proxy3",), "proxy2"),
        (("proxy2", None), "proxy2", "proxy2", ("proxy3",), (), "proxy1"),
        # Nobody ready: no move.
        (("proxy1", None), "proxy1", "proxy1", ("proxy2",), ("proxy3",), None),
        # The drained peer does not hold it: no move.
        (("proxy1", None), "proxy2", "proxy1", (), (), None),
    ],
    ids=[
        "preferred-ready",
        "next-by-priority",
        "inventory-order",
        "preferred-drained",
        "preferred-unhealthy",
        "highest-drained",
        "none-ready",
        "not-held",
    ],
)
def test_drain_moves_go_to_the_preferred_peer_else_the_highest_priority_ready_one(
    tmp_path: Path,
    prefs: tuple[str | None, str | None],
    holder: str,
    peer: str,
    drained: tuple[str, ...],
    unhealthy: tuple[str, ...],
    to: str | None,
) -> None:
    loaded = inventory3(tmp_path, a=prefs[0], b=prefs[1])
    # As drain sees it once its mark is set: `peer` drained too. B is on a peer that
    # is not drained, so only A may move.
    other = next(p for p in ("proxy1", "proxy2", "proxy3") if p not in (peer, *drained))
    cluster = Drainable(
        loaded, {A: holder, B: other}, drained=(peer, *drained), unhealthy=unhealthy
    )
    facts = {n: gather(h, []) for n, h in cluster.hosts.items()}
    moves = drain_moves(loaded, facts, peer)
    assert moves == ([Move(A, "VI_51", peer, to)] if to else [])


def test_takers_are_the_other_healthy_undrained_peers(tmp_path: Path) -> None:
    loaded = inventory3(tmp_path, a="proxy1")
    cluster = Drainable(
        loaded, {A: "proxy1", B: "proxy1"}, drained=("proxy2",), unhealthy=("proxy3",)
    )
    facts = {n: gather(h, []) for n, h in cluster.hosts.items()}
    assert takers(loaded, facts, "proxy1") == []
    assert takers(loaded, facts, "proxy2") == ["proxy1"]


def last_healthy(tmp_path: Path, why: str) -> Drainable:
    """proxy1 holds both VIPs; proxy2 is drained or its haproxy is down."""
    other = ("proxy2",)
    return Drainable(
        inventory(tmp_path),
        {A: "proxy1", B: "proxy1"},
        drained=other if why == "drained" else (),
        unhealthy=other if why == "unhealthy" else (),
    )


@pytest.mark.parametrize("why", ["drained", "unhealthy"])
def test_refusing_to_drain_the_last_healthy_peer_changes_nothing(tmp_path: Path, why: str) -> None:
    cluster = last_healthy(tmp_path, why)
    with pytest.raises(OperationError) as caught:
        drain(cluster.loaded, cluster.hosts, "proxy1", lambda _m: None, grace=0, timeout=T)
    assert caught.value.exit_code == ExitCode.FAILED == 1
    assert caught.value.message.startswith("refusing to drain proxy1: no other peer")
    assert "--force" in caught.value.message
    # Only facts were read: no lock, no mark, no preempt anywhere.
    assert cluster.changes("proxy1") == cluster.changes("proxy2") == []
    assert cluster.mark["proxy1"] == 0 and cluster.events == []


@pytest.mark.parametrize("why", ["drained", "unhealthy"])
def test_force_drains_the_last_healthy_peer_which_keeps_its_vips(tmp_path: Path, why: str) -> None:
    cluster = last_healthy(tmp_path, why)
    notes: list[str] = []
    report = drain(
        cluster.loaded, cluster.hosts, "proxy1", notes.append, force=True, grace=0, timeout=T
    )
    assert report.drained and report.moved == []
    assert report.stayed == [A, B]
    assert report.to_dict()["stayed"] == [A, B]
    assert cluster.mark["proxy1"] == 1 and cluster.marks("proxy1") == [1]
    assert cluster.holder == {A: "proxy1", B: "proxy1"}
    assert cluster.sent("proxy1", ALLOW) == cluster.sent("proxy2", ALLOW) == []
    assert f"proxy1: keeps {A}, {B}: no other peer can take them" in notes


def test_an_unknown_peer_is_an_input_error_that_lists_the_peers(tmp_path: Path) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy2"})
    for action in (drain, undrain):
        with pytest.raises(InputError) as caught:
            action(cluster.loaded, cluster.hosts, "proxy9", lambda _m: None)
        assert caught.value.exit_code == ExitCode.BAD_INPUT == 2
        assert "no peer named 'proxy9'" in caught.value.message
        assert "(peers: proxy1, proxy2)" in caught.value.message
    assert cluster.hosts["proxy1"].commands() == cluster.hosts["proxy2"].commands() == []


def test_an_unreachable_peer_is_not_drained_and_nothing_is_written(tmp_path: Path) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy2"})
    cluster.hosts["proxy1"].set_reachable(False)
    with pytest.raises(OperationError) as caught:
        drain(cluster.loaded, cluster.hosts, "proxy1", lambda _m: None, grace=0, timeout=T)
    assert caught.value.exit_code == ExitCode.FAILED
    assert caught.value.message.startswith("proxy1: unreachable, not drained: ")
    assert cluster.hosts["proxy1"].commands() == []
    assert cluster.changes("proxy2") == []
    assert cluster.mark == {"proxy1": 0, "proxy2": 0} and cluster.events == []


def test_a_vip_that_does_not_move_puts_the_mark_back_to_0(tmp_path: Path) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy2"}, stuck=True)
    with pytest.raises(OperationError) as caught:
        drain(cluster.loaded, cluster.hosts, "proxy1", lambda _m: None, grace=0, timeout=0.02)
    message = caught.value.message
    assert message.startswith("VIPs did not move to proxy2, a healthy undrained peer, within")
    assert message.endswith("; proxy1 is not drained (it still held a VIP)")
    assert cluster.marks("proxy1") == [1, 0] and cluster.mark["proxy1"] == 0
    assert cluster.holder[A] == "proxy1"
    assert cluster.allowed == {"proxy1": set(), "proxy2": set()}
    assert cluster.locks_released()


def test_ctrl_c_before_the_vip_moved_leaves_the_peer_not_drained(tmp_path: Path) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy2"})
    cluster.hosts["proxy2"].on(ALLOW, respond=ctrl_c)  # Ctrl-C as proxy2 may preempt
    with pytest.raises(Interrupted) as caught:
        drain(cluster.loaded, cluster.hosts, "proxy1", lambda _m: None, grace=0, timeout=T)
    assert caught.value.exit_code == ExitCode.INTERRUPTED == 130
    assert "proxy1 is not drained" in caught.value.message
    # The mark was set, then written back to 0 since proxy1 still holds A.
    assert cluster.marks("proxy1") == [1, 0] and cluster.mark["proxy1"] == 0
    assert cluster.holder == {A: "proxy1", B: "proxy2"}
    # nopreempt restored on both, after the interrupted allow.
    p2 = cluster.hosts["proxy2"]
    assert any(re.search(RESTORE, c) for c in p2.commands()[p2.index(ALLOW) :])
    assert cluster.sent("proxy1", RESTORE)
    assert cluster.allowed == {"proxy1": set(), "proxy2": set()}
    assert cluster.locks_released()


def test_ctrl_c_after_the_vip_moved_leaves_the_peer_drained(tmp_path: Path) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy2"})
    inv = cluster.loaded.inventory
    health = health_command([f"VI_{v.vrid}" for v in inv.vips], inv.stats.port)
    # Ctrl-C while drain waits for proxy2's health after it took A.
    cluster.hosts["proxy2"].on(re.escape(health), respond=ctrl_c)
    with pytest.raises(Interrupted) as caught:
        drain(cluster.loaded, cluster.hosts, "proxy1", lambda _m: None, grace=0, timeout=T)
    assert caught.value.exit_code == ExitCode.INTERRUPTED
    assert caught.value.message == "interrupted: proxy1 is drained"
    assert cluster.holder[A] == "proxy2"
    assert cluster.marks("proxy1") == [1] and cluster.mark["proxy1"] == 1
    assert cluster.allowed == {"proxy1": set(), "proxy2": set()}
    assert cluster.locks_released()


def test_draining_an_already_drained_peer_says_so(tmp_path: Path) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy2", B: "proxy2"}, drained=("proxy1",))
    report = drain(cluster.loaded, cluster.hosts, "proxy1", lambda _m: None, grace=0, timeout=T)
    assert report == DrainReport("proxy1", drained=True, already=True)


# --- undrain --------------------------------------------------------------------------


def test_undrain_clears_the_mark_and_moves_back_only_the_vips_that_prefer_the_peer(
    tmp_path: Path,
) -> None:
    # A prefers proxy1; B prefers proxy3 but is on proxy2: undrain proxy1 leaves B be.
    loaded = inventory3(tmp_path, a="proxy1", b="proxy3")
    cluster = Drainable(loaded, {A: "proxy2", B: "proxy2"}, drained=("proxy1",))
    notes: list[str] = []
    moved = undrain(loaded, cluster.hosts, "proxy1", notes.append, timeout=T)
    assert moved == [Move(A, "VI_51", "proxy2", "proxy1")]
    assert cluster.marks("proxy1") == [0] and cluster.mark["proxy1"] == 0
    assert cluster.holder == {A: "proxy1", B: "proxy2"}
    ev = cluster.events
    assert before(ev, "proxy1 mark 0", "proxy1 may preempt VI_51")
    assert before(ev, "proxy1 may preempt VI_51", f"proxy1 takes {A}")
    assert before(ev, f"proxy1 takes {A}", f"proxy2 releases {A}")
    assert before(ev, f"proxy2 releases {A}", "proxy1 nopreempt")
    (allow,) = cluster.sent("proxy1", ALLOW)
    assert "VI_52" not in allow
    assert cluster.sent("proxy2", ALLOW) == cluster.sent("proxy3", ALLOW) == []
    assert not [e for e in ev if B in e]
    assert cluster.allowed == {p: set() for p in cluster.peers}
    assert "proxy1: undrained (priorities as the inventory sets them)" in notes


def test_undrain_in_a_pair_leaves_the_vip_that_prefers_the_other_peer(tmp_path: Path) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy2", B: "proxy2"}, drained=("proxy1",))
    moved = undrain(cluster.loaded, cluster.hosts, "proxy1", lambda _m: None, timeout=T)
    assert [m.line() for m in moved] == [f"VIP {A}: proxy2 -> proxy1 (its preferred peer)"]
    assert cluster.holder == {A: "proxy1", B: "proxy2"}


def test_ctrl_c_while_undrain_moves_a_vip_back_leaves_the_peer_undrained(
    tmp_path: Path,
) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy2", B: "proxy2"}, drained=("proxy1",))
    cluster.hosts["proxy1"].on(ALLOW, respond=ctrl_c)
    with pytest.raises(Interrupted) as caught:
        undrain(cluster.loaded, cluster.hosts, "proxy1", lambda _m: None, timeout=T)
    assert caught.value.exit_code == ExitCode.INTERRUPTED
    assert caught.value.message.startswith("interrupted: proxy1 is undrained")
    assert cluster.marks("proxy1") == [0] and cluster.holder[A] == "proxy2"
    p1 = cluster.hosts["proxy1"]
    assert p1.index(ALLOW) < last(p1, RESTORE)  # nopreempt restored
    assert cluster.locks_released()


# --- placement and status around a drained peer ---------------------------------------


def test_placement_never_moves_a_vip_to_its_drained_preferred_peer(tmp_path: Path) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy2", B: "proxy2"}, drained=("proxy1",))
    notes: list[str] = []
    moved: list[Move] = []
    error = placement.place_vips(cluster.loaded, cluster.hosts, notes.append, 0.1, moved=moved)
    assert error is None and moved == []
    assert cluster.holder == {A: "proxy2", B: "proxy2"}
    assert cluster.sent("proxy1", ALLOW) == cluster.sent("proxy2", ALLOW) == []
    assert f"VIP {A}: stays on proxy2: its preferred peer proxy1 is drained" in notes
    facts = {n: gather(h, []) for n, h in cluster.hosts.items()}
    assert placement.planned_moves(cluster.loaded, facts) == []


def test_status_names_a_drained_peer_and_does_not_call_its_vip_misplaced(
    tmp_path: Path,
) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy2", B: "proxy2"}, drained=("proxy1",))
    st = cluster_status(cluster.loaded, cluster.hosts)
    assert [p.drained for p in st.peers] == [True, False]
    assert st.problems == [] and st.healthy
    assert st.warnings == ["proxy1 is drained (edgekit undrain proxy1 ends it)"]
    # Undrained, A off proxy1 is a warning again.
    cluster.mark["proxy1"] = 0
    again = cluster_status(cluster.loaded, cluster.hosts)
    assert again.warnings == [
        f"VIP {A} is on proxy2, not on its preferred peer proxy1 (edgekit deploy moves it there)"
    ]


def test_status_says_what_a_forced_drained_peer_still_holds(tmp_path: Path) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy1"}, drained=("proxy1",))
    st = cluster_status(cluster.loaded, cluster.hosts)
    assert st.warnings == [
        f"VIP {B} is on proxy1, not on its preferred peer proxy2 (edgekit deploy moves it there)",
        f"proxy1 is drained (edgekit undrain proxy1 ends it); it still holds {A}, {B}",
    ]


@pytest.mark.parametrize(
    ("section", "drained"),
    [("1\n", True), ("2\n", True), ("0\n", False), ("", False), (" 1 \n", True), ("x\n", False)],
)
def test_the_drain_mark_is_the_first_line_of_the_drain_section(section: str, drained: bool) -> None:
    text = f"@os\ndebian 12\n@vrrp\nVI_51 BACKUP\n@drain\n{section}@firewall\n@end\n"
    assert parse_facts(text).drained is drained
    assert parse_facts("@os\ndebian 12\n@end\n").drained is False  # no section: older host


# --- maintenance: apt-get simulation and upgrade order --------------------------------

APT_S = "\n".join(
    [
        "NOTE: This is only a simulation!",
        "      apt-get needs root privileges for real execution.",
        "Reading package lists...",
        "Inst haproxy [2.6.12-1+deb12u3] (2.6.12-1+deb12u3+edgekit1 Debian:12.8/stable [amd64])",
        "Inst libfoo1 (1.2-3 Debian:12.8/stable [amd64])",
        "Inst libc6 [2.36-9+deb12u7] (2.36-9+deb12u9 Debian:12.9/stable, "
        "Debian-Security:12/stable-security [amd64]) []",
        "Remv oldpkg [0.9-1]",
        "Conf haproxy (2.6.12-1+deb12u3+edgekit1 Debian:12.8/stable [amd64])",
        "Conf libfoo1 (1.2-3 Debian:12.8/stable [amd64])",
        "",
    ]
)


def test_parse_simulation_reads_inst_lines_and_ignores_the_rest() -> None:
    assert parse_simulation(APT_S) == [
        Upgrade("haproxy", "2.6.12-1+deb12u3", "2.6.12-1+deb12u3+edgekit1"),
        Upgrade("libfoo1", "", "1.2-3"),
        Upgrade("libc6", "2.36-9+deb12u7", "2.36-9+deb12u9"),
    ]
    assert Upgrade("libfoo1", "", "1.2-3").to_dict() == {
        "package": "libfoo1",
        "from": "",
        "to": "1.2-3",
    }
    assert parse_simulation("") == parse_simulation("Conf x (1 a [amd64])\n") == []


def run_with_apt(tmp_path: Path, script: str, apt_get: str) -> subprocess.CompletedProcess[str]:
    """Run a remote script with `apt-get` on PATH being the shell code `apt_get`
    (`apt-get update` always succeeds)."""
    if not shutil.which("sh"):
        pytest.skip("needs sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "apt-get"
    stub.write_text(f'#!/bin/sh\ncase " $* " in *" update "*) exit 0;; esac\n{apt_get}\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    return subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=30, env=env, check=False
    )


def test_the_upgrade_plan_script_passes_on_only_the_inst_lines(tmp_path: Path) -> None:
    printed = APT_S.replace("'", "")  # no quote in it: printed by a here-document
    done = run_with_apt(tmp_path, script("upgrade-plan", packages=[]), f"cat <<'EOF'\n{printed}EOF")
    assert done.returncode == 0, done.stderr
    assert [ln.split()[1] for ln in done.stdout.splitlines()] == ["haproxy", "libfoo1", "libc6"]
    assert [u.package for u in parse_simulation(done.stdout)] == ["haproxy", "libfoo1", "libc6"]


@pytest.mark.parametrize("packages", [[], ["haproxyy"]], ids=["upgrade", "only-upgrade"])
def test_a_failing_apt_get_simulation_fails_the_upgrade_plan(
    tmp_path: Path, packages: list[str]
) -> None:
    done = run_with_apt(
        tmp_path,
        script("upgrade-plan", packages=packages),
        "echo 'E: Unable to locate package haproxyy' >&2; exit 100",
    )
    # Not "up to date": a mistyped --packages or a broken dpkg state stops the upgrade.
    assert done.returncode != 0
    assert "apt-get -s: E: Unable to locate package haproxyy" in done.stderr


def test_upgrade_order_puts_peers_holding_no_vip_first(tmp_path: Path) -> None:
    loaded = inventory3(tmp_path, a="proxy1", b="proxy2")

    def holding(*vips: str) -> HostFacts:
        return HostFacts(addresses={"eth1": [ipaddress.IPv4Interface(f"{v}/24") for v in vips]})

    facts = {"proxy1": holding(A), "proxy2": holding(), "proxy3": holding(B)}
    names = ["proxy1", "proxy2", "proxy3"]
    assert upgrade_order(loaded, facts, names) == ["proxy2", "proxy1", "proxy3"]
    facts = {"proxy1": holding(), "proxy2": holding(A, B), "proxy3": holding()}
    assert upgrade_order(loaded, facts, names) == ["proxy1", "proxy3", "proxy2"]
    assert upgrade_order(loaded, facts, ["proxy2", "proxy3"]) == ["proxy3", "proxy2"]


def upgradable(cluster: Drainable) -> Drainable:
    """Each peer's apt-get -s plans a haproxy upgrade; the upgrade (an event naming the
    VIPs the peer holds then) and its checks pass."""

    def upgraded(peer: str, command: str) -> Result:
        held = [vip for vip, holder in cluster.holder.items() if holder == peer]
        cluster.events.append(f"{peer} upgraded holding {', '.join(held) or 'nothing'}")
        return Result(command, 0, "", "")

    for name, host in cluster.hosts.items():
        host.on(SIMULATE, stdout=APT_S.splitlines()[3] + "\n")
        host.on(UPGRADE, respond=lambda cmd, name=name: upgraded(name, cmd))  # type: ignore[misc]
    return cluster


def test_a_dry_run_upgrade_only_simulates(tmp_path: Path) -> None:
    cluster = upgradable(Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy1"}))
    notes: list[str] = []
    report = Maintenance(cluster.loaded, cluster.hosts, notes.append, 0, T).upgrade(dry_run=True)
    assert list(report.planned) == ["proxy2", "proxy1"]  # the holder last
    assert report.pending and report.upgraded == [] and report.failed == ""
    assert report.planned["proxy1"] == [
        Upgrade("haproxy", "2.6.12-1+deb12u3", "2.6.12-1+deb12u3+edgekit1")
    ]
    for peer in cluster.peers:
        assert cluster.marks(peer) == []
        assert cluster.sent(peer, UPGRADE) == [] and cluster.sent(peer, LOCK) == []
        assert len(cluster.sent(peer, SIMULATE)) == 1
    assert cluster.events == []
    assert "proxy2: haproxy 2.6.12-1+deb12u3 -> 2.6.12-1+deb12u3+edgekit1" in notes


def test_a_failed_apt_get_upgrade_stops_the_rollout_and_leaves_that_peer_drained(
    tmp_path: Path,
) -> None:
    cluster = upgradable(Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy1"}))
    cluster.hosts["proxy2"].on(
        UPGRADE, exit_code=100, stderr="E: Sub-process /usr/bin/dpkg returned an error code (1)"
    )
    report = Maintenance(cluster.loaded, cluster.hosts, lambda _m: None, 0, T).upgrade()
    assert report.failed == "proxy2" and report.upgraded == []
    assert report.error.startswith("proxy2: apt-get upgrade failed: E: Sub-process")
    assert report.error.endswith("; proxy2 is left drained")
    assert report.to_dict()["failed"] == "proxy2"
    assert cluster.marks("proxy2") == [1] and cluster.mark["proxy2"] == 1
    assert cluster.sent("proxy2", CHECK) == []  # stopped right there
    # proxy1 (the holder, last) was never drained nor upgraded, and keeps its VIPs.
    assert cluster.marks("proxy1") == [] and cluster.sent("proxy1", UPGRADE) == []
    assert cluster.holder == {A: "proxy1", B: "proxy1"}


def test_an_upgrade_drains_upgrades_and_undrains_each_peer_non_holders_first(
    tmp_path: Path,
) -> None:
    cluster = upgradable(Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy1"}))
    report = Maintenance(cluster.loaded, cluster.hosts, lambda _m: None, 0, T).upgrade()
    assert report.failed == "" and report.upgraded == ["proxy2", "proxy1"]
    assert cluster.marks("proxy2") == [1, 0] and cluster.marks("proxy1") == [1, 0]
    ev = [e for e in cluster.events if " mark " in e]
    assert ev == ["proxy2 mark 1", "proxy2 mark 0", "proxy1 mark 1", "proxy1 mark 0"]
    for peer in cluster.peers:
        host = cluster.hosts[peer]
        marks = [i for i, c in enumerate(host.commands()) if re.search(MARK, c)]
        assert marks[0] < host.index(UPGRADE) < host.index(CHECK) < marks[1]
    # No peer is upgraded while it holds a VIP, and each VIP ends on its preferred peer.
    upgrades = [e for e in cluster.events if " upgraded " in e]
    assert upgrades == ["proxy2 upgraded holding nothing", "proxy1 upgraded holding nothing"]
    assert cluster.holder == {A: "proxy1", B: "proxy2"}


# --- maintenance: reboot --------------------------------------------------------------


@pytest.fixture
def quick_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """reboot_host polls every second and wait_healthy every 0.3 s: poll at once here."""

    def quick(condition: Callable[[], object], timeout: float, interval: float = 0.5) -> object:
        return wait_until(condition, timeout, 0.001)

    monkeypatch.setattr(maintenance, "wait_until", quick)
    # edgekit.deploy's own `apply` (a function) hides the module of that name.
    monkeypatch.setattr(importlib.import_module("edgekit.deploy.apply"), "wait_until", quick)


BOOT_ID = r"random/boot_id"
REBOOT = r"systemctl reboot"


def answers(*steps: str | int | Exception) -> Callable[[str], Result]:
    """A responder that answers each call with the next step: stdout, an exit code, or
    an exception raised (the connection failed); the last step repeats."""
    it: Iterator[str | int | Exception] = iter(steps)
    last: list[str | int | Exception] = []

    def respond(command: str) -> Result:
        step = next(it, None)
        if step is None:
            step = last[0]
        else:
            last[:] = [step]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, int):
            return Result(command, step, "", "ssh: connect to host port 22: Connection refused")
        return Result(command, 0, step, "")

    return respond


def test_reboot_host_waits_until_the_boot_id_changes_then_for_health(
    tmp_path: Path, quick_waits: None
) -> None:
    loaded = inventory(tmp_path)
    inv = loaded.inventory
    health = re.escape(health_command([f"VI_{v.vrid}" for v in inv.vips], inv.stats.port))
    host = FakeHost("proxy1")
    old, new = "9d5c-old 1\n", "41ab-new 1\n"
    down = HostError("proxy1", "connection timed out")
    # Read before the reboot, still up, down twice, back with a new boot id.
    host.on(BOOT_ID, respond=answers(old, old, down, 255, new))
    host.on(health, respond=answers(1, 1, ""))  # healthy at the third try
    notes: list[str] = []
    reboot_host(loaded, host, notes.append, timeout=5)
    commands = host.commands()
    boots = [i for i, c in enumerate(commands) if re.search(BOOT_ID, c)]
    healths = [i for i, c in enumerate(commands) if re.search(health, c)]
    assert len(boots) == 5 and len(healths) == 3
    assert boots[0] < host.index(REBOOT) < boots[1]
    assert boots[-1] < healths[0]  # health is waited for only once it is back
    assert notes[0] == "proxy1: rebooting" and notes[1].startswith("proxy1: back after ")


def test_reboot_host_that_does_not_come_back_is_an_error(tmp_path: Path, quick_waits: None) -> None:
    loaded = inventory(tmp_path)
    host = FakeHost("proxy1")
    host.on(BOOT_ID, stdout="9d5c-old 1\n")  # never a new boot id
    with pytest.raises(OperationError) as caught:
        reboot_host(loaded, host, lambda _m: None, timeout=0.02)
    assert caught.value.message.startswith("proxy1: not back over SSH")
    assert not host.ran(r"pgrep -x haproxy")  # no health check of the old boot


def test_reboot_drains_reboots_waits_and_undrains(tmp_path: Path, quick_waits: None) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy2"})
    p1 = cluster.hosts["proxy1"]
    p1.on(BOOT_ID, respond=answers("old 1\n", HostError("proxy1", "refused"), "new 1\n"))

    def rebooting(command: str) -> Result:
        held = [vip for vip, holder in cluster.holder.items() if holder == "proxy1"]
        cluster.events.append(f"proxy1 reboots holding {', '.join(held) or 'nothing'}")
        return Result(command, 0, "rebooting\n", "")

    p1.on(REBOOT, respond=rebooting)
    Maintenance(cluster.loaded, cluster.hosts, lambda _m: None, 0, T).reboot("proxy1")
    ev = cluster.events
    assert before(ev, "proxy1 mark 1", "proxy1 reboots holding nothing")
    assert before(ev, "proxy1 reboots holding nothing", "proxy1 mark 0")
    assert before(ev, "proxy1 mark 0", f"proxy1 takes {A}")  # moved back after
    assert cluster.holder == {A: "proxy1", B: "proxy2"} and cluster.mark["proxy1"] == 0


def test_a_peer_that_does_not_come_back_from_a_reboot_is_left_drained(
    tmp_path: Path, quick_waits: None
) -> None:
    cluster = Drainable(inventory(tmp_path), {A: "proxy1", B: "proxy2"})
    cluster.hosts["proxy1"].on(BOOT_ID, stdout="old 1\n")
    with pytest.raises(OperationError) as caught:
        Maintenance(cluster.loaded, cluster.hosts, lambda _m: None, 0, T, 0.02).reboot("proxy1")
    assert caught.value.message.startswith("proxy1: not back over SSH")
    assert caught.value.message.endswith("; proxy1 is left drained")
    assert cluster.marks("proxy1") == [1] and cluster.holder[A] == "proxy2"
