"""Deploy puts each VIP on its preferred peer (edgekit.deploy.placement), and status warns
while one is elsewhere. The hosts are FakeHosts over a small VRRP model: a peer that is
allowed to preempt and is the VIP's preferred (highest-priority) peer takes the VIP, and
only then does the holder let go."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from edgekit import deploy
from edgekit.deploy import placement
from edgekit.deploy.apply import Timing
from edgekit.inventory import Loaded, load_inventory
from edgekit.remote import Result
from edgekit.remote.fake import FakeHost
from edgekit.render import PLACEMENT_DIR, render_all
from edgekit.status import ClusterStatus, PeerStatus, warnings
from tests.unit import simhost
from tests.unit.simhost import PASSWORD

A, B = "10.10.0.100", "10.10.0.101"
PEERS = ("proxy1", "proxy2")
FAST = Timing(health_s=0.2, verify_s=0.1)


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", PASSWORD)
    monkeypatch.setattr(placement, "HANDOVER_S", 0.0)
    monkeypatch.setattr(placement, "CLOSE_S", 0.0)


def inventory(
    tmp_path: Path, *, a: str | None = "proxy1", b: str | None = "proxy2", preempt: bool = False
) -> Loaded:
    """simhost's cluster with two peers and two VIPs, each preferring `a` and `b`."""
    text = simhost.INVENTORY.format(firewall="false")
    text = text.replace("  - {name: proxy3, address: 10.10.0.13}\n", "")
    vips = "".join(
        f"  - {{address: {vip}/24, vrid: {vrid}{f', preferred: {pref}' if pref else ''}}}\n"
        for vip, vrid, pref in ((A, 51, a), (B, 52, b))
    )
    text = text.replace(f"  - {{address: {A}/24, vrid: 51}}\n", vips)
    if preempt:
        text = text.replace("vrrp: {interface: eth1}", "vrrp: {interface: eth1, preempt: true}")
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return load_inventory(path)


class Cluster:
    """Two proxies running haproxy and keepalived with every rendered file in place, and
    who holds each VIP. `events` records each takeover in order."""

    def __init__(
        self,
        loaded: Loaded,
        holders: dict[str, str],
        *,
        unhealthy: frozenset[str] = frozenset(),
        stuck: bool = False,
        left_over: frozenset[str] = frozenset(),
    ) -> None:
        self.loaded = loaded
        self.holder = dict(holders)
        self.unhealthy = unhealthy  # peers whose haproxy is down (instances in FAULT)
        self.stuck = stuck  # preempt allowed, but no takeover happens
        self.allowed: dict[str, set[str]] = {p: set() for p in PEERS}
        for peer in left_over:
            self.allowed[peer].add("VI_51")
        self.events: list[str] = []
        self.files = render_all(loaded)
        self.hosts = {p: self._host(p) for p in PEERS}

    def _vips(self) -> list[tuple[str, str, str | None]]:
        return [
            (str(v.address.ip), f"VI_{v.vrid}", v.preferred) for v in self.loaded.inventory.vips
        ]

    def facts(self, peer: str) -> str:
        addrs = [{"family": "inet", "local": f"10.10.0.1{peer[-1]}", "prefixlen": 24}]
        addrs += [
            {"family": "inet", "local": vip, "prefixlen": 24}
            for vip, _, _ in self._vips()
            if self.holder.get(vip) == peer
        ]
        files = [
            f"{f.path} {f.mode:o} {f.owner} {base64.b64encode(f.content.encode()).decode()}"
            for f in self.files[peer]
        ]
        down = peer in self.unhealthy
        states = [
            f"{inst} {'FAULT' if down else 'MASTER' if self.holder.get(vip) == peer else 'BACKUP'}"
            for vip, inst, _ in self._vips()
        ]
        lines = [
            "@os",
            "debian 12",
            "@packages",
            "haproxy installed",
            "keepalived installed",
            "@addresses",
            json.dumps([{"ifname": "eth1", "addr_info": addrs}]),
            "@files",
            *files,
            "@units",
            f"haproxy {'failed' if down else 'active'} enabled",
            "keepalived active enabled",
            "@haproxy",
            "" if down else "4242",
            "" if down else "4242 4250",
            "@deploy",
            "@limits",
            "nr_open 1048576",
            "@vrrp",
            *states,
            "@firewall",
            "@end",
        ]
        return "\n".join(lines) + "\n"

    def _allow(self, peer: str, command: str) -> Result:
        self.allowed[peer] |= set(re.findall(r"/(VI_\d+)\.conf\.tmp", command))
        for vip, inst, preferred in self._vips():
            holder = self.holder.get(vip)
            if inst in self.allowed[peer] and preferred == peer and holder != peer:
                if not self.stuck and peer not in self.unhealthy:
                    # The preferred peer becomes MASTER first; the holder hears its
                    # higher priority and only then lets go.
                    self.events += [f"{peer} takes {vip}", f"{holder} releases {vip}"]
                    self.holder[vip] = peer
        return Result(command, 0, "", "")

    def _restore(self, peer: str, command: str) -> Result:
        had = bool(self.allowed[peer])
        self.allowed[peer] = set()
        return Result(command, 0, "restored\n" if had else "", "")

    def _host(self, peer: str) -> FakeHost:
        host = FakeHost(peer)
        host.on(r"echo '@os'", respond=lambda cmd: Result(cmd, 0, self.facts(peer), ""))
        host.on(r"flock -n 9", stdout="locked\n")
        host.on(r"printf 'preempt", respond=lambda cmd: self._allow(peer, cmd))
        host.on(RESTORE, respond=lambda cmd: self._restore(peer, cmd))
        return host

    def sent(self, peer: str, pattern: str) -> list[str]:
        return [c for c in self.hosts[peer].commands() if re.search(pattern, c)]


ALLOW = r"printf 'preempt"


def outside_expiry(command: str) -> str:
    """A command without the restore script it stores for the host's expiry timer."""
    return re.sub(r"<<'EDGEKIT_HANDOVER_EXPIRE'\n[\s\S]*?\nEDGEKIT_HANDOVER_EXPIRE\n", "", command)


# The restore script; the handover scripts carry a copy of it for the host's own expiry
# timer (inside an EDGEKIT_HANDOVER_EXPIRE here-document), which is not a restore.
RESTORE = r"\A(?![\s\S]*EDGEKIT_HANDOVER_EXPIRE)[\s\S]*echo restored"


def place(cluster: Cluster, notes: list[str] | None = None) -> tuple[str | None, list[str]]:
    moved: list[placement.Move] = []
    progress = notes.append if notes is not None else lambda _m: None
    error = placement.place_vips(cluster.loaded, cluster.hosts, progress, timeout=0.1, moved=moved)
    return error, [m.line() for m in moved]


# --- moving ---------------------------------------------------------------------------


def test_a_vip_moves_to_its_healthy_preferred_peer_which_takes_it_before_the_holder_lets_go(
    tmp_path: Path,
) -> None:
    cluster = Cluster(inventory(tmp_path), {A: "proxy1", B: "proxy1"})
    notes: list[str] = []
    error, moved = place(cluster, notes)
    assert error is None
    assert moved == [f"VIP {B}: proxy1 -> proxy2 (its preferred peer)"]
    assert cluster.holder == {A: "proxy1", B: "proxy2"}
    assert cluster.events == [f"proxy2 takes {B}", f"proxy1 releases {B}"]
    # Only proxy2 was allowed to preempt, only for the second VIP, and nopreempt is back.
    (allow,) = cluster.sent("proxy2", ALLOW)
    assert "VI_52.conf" in allow and "VI_51" not in allow
    assert allow.rstrip().endswith("systemctl reload keepalived")
    assert cluster.sent("proxy1", ALLOW) == []
    assert cluster.allowed == {"proxy1": set(), "proxy2": set()}
    p2 = cluster.hosts["proxy2"].commands()
    assert p2.index(allow) < max(i for i, c in enumerate(p2) if re.search(RESTORE, c))
    # The holder is never stopped or reloaded (its restore found nothing to undo): it
    # keeps serving until proxy2 has the VIP.
    p1 = [
        outside_expiry(c) for c in cluster.hosts["proxy1"].commands() if not re.search(RESTORE, c)
    ]
    assert not [c for c in p1 if re.search(r"systemctl (stop|restart|reload) keepalived", c)]
    assert any("moved from proxy1 to proxy2" in n for n in notes)


def test_the_old_holder_keeps_serving_its_connections_through_the_move(tmp_path: Path) -> None:
    """Before the move the old holder keeps the VIP as a local route (not an address, and
    not answered in ARP) and the new holder passes on packets of connections it does not
    know to the old holder; both are undone after it."""
    cluster = Cluster(inventory(tmp_path), {A: "proxy1", B: "proxy1"})
    place(cluster)
    p1, p2 = cluster.hosts["proxy1"], cluster.hosts["proxy2"]
    give = p1.index(r"ip route replace local")
    assert f"local {B}/32 dev lo table local" in p1.commands()[give]
    assert f"{A}/32" not in p1.commands()[give]  # only the VIP that moves
    assert "arp_ignore" in p1.commands()[give]
    take = p2.index(r"nft -f -")
    assert f"ip daddr {B} tcp flags & (syn | rst) == 0" in p2.commands()[take]
    assert 'dup to 10.10.0.11 device "eth1" drop' in p2.commands()[take]
    assert take < p2.index(ALLOW)
    # Undone on both once the VIP is on proxy2.
    assert p1.commands()[give:] and any(re.search(RESTORE, c) for c in p1.commands()[give:])
    assert any(re.search(RESTORE, c) for c in p2.commands()[p2.index(ALLOW) :])


def test_vips_already_on_their_preferred_peers_are_left_alone(tmp_path: Path) -> None:
    cluster = Cluster(inventory(tmp_path), {A: "proxy1", B: "proxy2"})
    assert place(cluster) == (None, [])
    assert cluster.sent("proxy1", ALLOW) == cluster.sent("proxy2", ALLOW) == []


def test_a_vip_stays_where_it_is_while_its_preferred_peer_is_not_healthy(
    tmp_path: Path,
) -> None:
    cluster = Cluster(
        inventory(tmp_path), {A: "proxy1", B: "proxy1"}, unhealthy=frozenset({"proxy2"})
    )
    notes: list[str] = []
    assert place(cluster, notes) == (None, [])
    assert cluster.sent("proxy2", ALLOW) == [] and cluster.holder[B] == "proxy1"
    assert f"VIP {B}: stays on proxy1: its preferred peer proxy2 is not healthy" in notes


def test_an_inventory_without_preferred_peers_sends_no_command(tmp_path: Path) -> None:
    cluster = Cluster(inventory(tmp_path, a=None, b=None), {A: "proxy1", B: "proxy1"})
    assert place(cluster) == (None, [])
    assert cluster.hosts["proxy1"].commands() == cluster.hosts["proxy2"].commands() == []


def test_a_vip_that_does_not_arrive_is_an_error_and_nopreempt_is_restored(
    tmp_path: Path,
) -> None:
    cluster = Cluster(inventory(tmp_path), {A: "proxy1", B: "proxy1"}, stuck=True)
    error, moved = place(cluster)
    assert moved == [] and error is not None
    assert error.startswith("VIPs did not move to proxy2, their preferred peer, within")
    assert f"{B} on proxy1" in error
    assert cluster.allowed["proxy2"] == set()  # restored although the move failed


def test_preempt_left_by_a_stopped_deploy_is_removed_first(tmp_path: Path) -> None:
    cluster = Cluster(
        inventory(tmp_path), {A: "proxy1", B: "proxy2"}, left_over=frozenset({"proxy2"})
    )
    notes: list[str] = []
    assert place(cluster, notes) == (None, [])
    assert cluster.allowed["proxy2"] == set()
    assert "proxy2: removed the VIP placement a stopped deploy left" in notes


def test_placement_holds_every_host_lock_while_it_moves(tmp_path: Path) -> None:
    cluster = Cluster(inventory(tmp_path), {A: "proxy1", B: "proxy1"})
    place(cluster)
    for peer in PEERS:
        host = cluster.hosts[peer]
        assert host.index(r"flock -n 9") < host.index(r"echo '@os'")


def test_with_limit_placement_does_nothing_and_says_why(tmp_path: Path) -> None:
    cluster = Cluster(inventory(tmp_path), {A: "proxy1", B: "proxy1"})
    notes: list[str] = []
    hosts = {"proxy2": cluster.hosts["proxy2"]}
    assert placement.place_vips(cluster.loaded, hosts, notes.append, 0.5) is None
    assert cluster.hosts["proxy2"].commands() == []
    assert notes == ["VIPs not placed: --limit leaves out peers that may hold them"]


def test_with_preempt_the_preferred_peer_is_only_waited_for(tmp_path: Path) -> None:
    cluster = Cluster(inventory(tmp_path, preempt=True), {A: "proxy1", B: "proxy2"})
    assert place(cluster) == (None, [])
    assert cluster.sent("proxy2", ALLOW) == []


# --- deploy: plan, dry run, apply -----------------------------------------------------


def test_the_plan_lists_the_move_and_makes_the_deploy_pending(tmp_path: Path) -> None:
    cluster = Cluster(inventory(tmp_path), {A: "proxy1", B: "proxy1"})
    the_plan = deploy.plan(cluster.loaded, cluster.hosts)
    assert not any(the_plan.touches(n) for n in PEERS)  # no file differs
    assert [m.line() for m in the_plan.moves] == [f"VIP {B}: proxy1 -> proxy2 (its preferred peer)"]
    assert the_plan.pending
    data = deploy.DeployReport(the_plan).to_dict()
    assert data["vip_moves"] == [{"vip": B, "from": "proxy1", "to": "proxy2"}]
    assert data["vip_moved"] == []


def test_a_deploy_with_no_file_change_still_moves_the_vip(tmp_path: Path) -> None:
    cluster = Cluster(inventory(tmp_path), {A: "proxy1", B: "proxy1"})
    the_plan = deploy.plan(cluster.loaded, cluster.hosts)
    report = deploy.apply(the_plan, cluster.hosts, timing=FAST, answers=lambda _a, _p: True)
    assert report.error is None
    assert report.to_dict()["vip_moved"] == [{"vip": B, "from": "proxy1", "to": "proxy2"}]
    assert report.holders == {A: ["proxy1"], B: ["proxy2"]}
    # Nothing was installed: the move is all this deploy did.
    assert not any(cluster.hosts[p].ran(r"mktemp -d /run/edgekit-stage") for p in PEERS)


def test_a_failed_move_fails_the_deploy(tmp_path: Path) -> None:
    cluster = Cluster(inventory(tmp_path), {A: "proxy1", B: "proxy1"}, stuck=True)
    the_plan = deploy.plan(cluster.loaded, cluster.hosts)
    report = deploy.apply(the_plan, cluster.hosts, timing=FAST, answers=lambda _a, _p: True)
    assert report.error and "did not move to proxy2" in report.error
    assert not report.to_dict()["ok"]


def test_a_vip_on_its_preferred_peer_leaves_nothing_pending(tmp_path: Path) -> None:
    cluster = Cluster(inventory(tmp_path), {A: "proxy1", B: "proxy2"})
    the_plan = deploy.plan(cluster.loaded, cluster.hosts)
    assert the_plan.moves == [] and not the_plan.pending


# --- status ---------------------------------------------------------------------------


def peer(name: str, vips: list[str], *, haproxy: bool = True) -> PeerStatus:
    st = PeerStatus(name, reachable=True, haproxy_up=haproxy, keepalived_up=True, vips=vips)
    st.vrrp = {
        "VI_51": "MASTER" if A in vips else "BACKUP",
        "VI_52": "MASTER" if B in vips else "BACKUP",
    }
    if not haproxy:
        st.vrrp = {i: "FAULT" for i in st.vrrp}
    return st


def test_status_warns_while_a_vip_is_off_its_healthy_preferred_peer(tmp_path: Path) -> None:
    loaded = inventory(tmp_path)
    peers = [peer("proxy1", [A, B]), peer("proxy2", [])]
    holders = {A: ["proxy1"], B: ["proxy1"]}
    found = warnings(loaded, peers, holders)
    assert found == [
        f"VIP {B} is on proxy1, not on its preferred peer proxy2 (edgekit deploy moves it there)"
    ]
    st = ClusterStatus(peers, holders, [], found)
    assert st.healthy  # it serves: a warning, not a failure (exit 0)
    assert st.verdict == f"healthy; warning: {found[0]}"
    assert st.to_dict()["warnings"] == found and st.to_dict()["healthy"] is True


def test_status_does_not_warn_when_the_preferred_peer_could_not_take_the_vip(
    tmp_path: Path,
) -> None:
    loaded = inventory(tmp_path)
    down = [peer("proxy1", [A, B]), peer("proxy2", [], haproxy=False)]
    assert warnings(loaded, down, {A: ["proxy1"], B: ["proxy1"]}) == []
    placed = [peer("proxy1", [A]), peer("proxy2", [B])]
    assert warnings(loaded, placed, {A: ["proxy1"], B: ["proxy2"]}) == []
    st = ClusterStatus(placed, {A: ["proxy1"], B: ["proxy2"]}, [])
    assert st.verdict == "healthy" and st.to_dict()["warnings"] == []


# --- what is rendered -----------------------------------------------------------------


def test_keepalived_conf_includes_a_placement_file_per_instance_on_every_peer_alike(
    tmp_path: Path,
) -> None:
    files = render_all(inventory(tmp_path))
    confs = {
        p: next(f for f in fs if f.path.endswith("keepalived.conf")) for p, fs in files.items()
    }
    assert confs["proxy1"].content == confs["proxy2"].content
    text = confs["proxy1"].content
    pattern = f"{PLACEMENT_DIR[:-1]}[{PLACEMENT_DIR[-1]}]"
    for vrid in (51, 52):
        body = text.split(f"vrrp_instance VI_{vrid} {{", 1)[1].split("\n}", 1)[0]
        lines = [ln.strip() for ln in body.splitlines()]
        # After nopreempt: a `preempt` in the file overrides it.
        assert lines.index(f"include {pattern}/VI_{vrid}.conf") > lines.index("nopreempt")
    dropin = next(
        f for f in files["proxy1"] if f.path.endswith("keepalived.service.d/edgekit.conf")
    )
    assert f"ExecStartPre=/bin/rm -rf {PLACEMENT_DIR}" in dropin.content


def test_with_preempt_nothing_is_included(tmp_path: Path) -> None:
    files = render_all(inventory(tmp_path, preempt=True))
    conf = next(f for f in files["proxy1"] if f.path.endswith("keepalived.conf"))
    assert "include" not in conf.content and "nopreempt" not in conf.content
