"""End to end in the local lab: deploy puts each VIP on its preferred peer (issue 12,
point 5), make-before-break, and nopreempt still keeps a recovered peer from taking a
VIP back by itself.

Two VIPs, the lab's own and a second with its own VRID. While a deploy moves one, both
get a fresh HTTP connection every 40 ms (25 a second each, 0.3 s timeout), and another
every 40 ms that is held open 0.1 s before its request (so some connection is always open
on the old holder at the move), and every peer reports ten times a second which VIPs it
holds: no request may fail, and no VIP may be seen on two peers. The tests run in file
order; at the end the lab's own inventory is deployed again (one VIP).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from edgekit.failover.measure import Probe, Sample, holder_timeline, of_vip, split_brain
from edgekit.failover.probes import OwnershipWatcher, Prober, Target
from edgekit.hosts import close_all, peer_hosts
from edgekit.inventory import load_inventory
from tests.e2e.cli import edgekit, holders, status
from tests.e2e.inventories import two_vips

pytestmark = pytest.mark.lab

INTERVAL = 0.04  # between probes of one VIP: 25 a second


@pytest.fixture(scope="module")
def vips(lab: Any) -> tuple[str, str]:
    return lab.vip, str(ipaddress.IPv4Address(lab.vip) + 1)


@pytest.fixture(scope="module")
def together(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both VIPs prefer proxy1."""
    return two_vips(lab, tmp_path_factory.mktemp("placement") / "together.yaml", "proxy1")


@pytest.fixture(scope="module")
def spread(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The first VIP prefers proxy1, the second proxy2 (active-active)."""
    yield two_vips(lab, tmp_path_factory.mktemp("placement") / "spread.yaml", "proxy2")
    edgekit("deploy", "-i", str(lab.inventory), "--yes")  # back to the lab's one VIP


def wait_for(inventory: Path, want: dict[str, list[str]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and holders(inventory) != want:
        time.sleep(0.5)
    assert holders(inventory) == want


def two_holders_seen(samples: list[Sample], peers: list[str]) -> list[tuple[float, str, str]]:
    """Moments a peer reported holding the VIP while another peer reported holding it
    just before and just after (its samples 0.1 s apart): two holders, not the order in
    which two peers' samples arrive at a move."""
    seen = []
    by_peer = {p: sorted((s for s in samples if s.peer == p), key=lambda s: s.t) for p in peers}
    for peer, own in by_peer.items():
        for other, theirs in by_peer.items():
            if other == peer:
                continue
            spans = [
                (a.t, b.t)
                for a, b in zip(theirs, theirs[1:], strict=False)
                if a.holds and b.holds and b.t - a.t < 0.5
            ]
            for s in own:
                if s.holds and any(a <= s.t <= b for a, b in spans):
                    seen.append((s.t, peer, other))
    return seen


class HeldProber:
    """Every `interval` a connection that waits `hold` seconds before it sends its request:
    one is always open, so a move that resets the connections the old holder has (their
    next packets reach the new holder, which knows nothing of them) fails some."""

    def __init__(self, vip: str, interval: float = INTERVAL, hold: float = 0.1) -> None:
        self.vip, self.interval, self.hold = vip, interval, hold
        self.results: list[Probe] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop = threading.Thread(target=self._run, daemon=True)

    def _one(self, t: float) -> None:
        try:
            with socket.create_connection((self.vip, 80), timeout=1.0) as s:
                time.sleep(self.hold)
                s.sendall(f"GET / HTTP/1.0\r\nHost: {self.vip}\r\n\r\n".encode())
                ok = s.recv(64).startswith(b"HTTP/1.0 2")
        except OSError:
            ok = False
        self.results.append(Probe(t, ok, "held", self.vip))

    def _run(self) -> None:
        while not self._stop.is_set():
            thread = threading.Thread(target=self._one, args=(time.time(),), daemon=True)
            thread.start()
            self._threads.append(thread)
            self._stop.wait(self.interval)

    def start(self) -> HeldProber:
        self._loop.start()
        return self

    def stop(self) -> list[Probe]:
        self._stop.set()
        self._loop.join()
        for thread in self._threads:
            thread.join()
        return sorted(self.results, key=lambda p: p.t)


@contextmanager
def watched(inventory: Path, vips: tuple[str, str]) -> Iterator[dict[str, list[Any]]]:
    """Probe both VIPs and watch who holds them for the duration of the block."""
    loaded = load_inventory(inventory)
    hosts = peer_hosts(loaded)
    watcher = OwnershipWatcher(hosts, list(vips)).start()
    prober = Prober([Target("http", v, 80, http=True) for v in vips], interval=INTERVAL).start()
    held = [HeldProber(v).start() for v in vips]
    out: dict[str, list[Any]] = {}
    try:
        time.sleep(1.0)
        yield out
        time.sleep(1.0)
    finally:
        out["probes"] = prober.stop()
        out["held"] = [p for h in held for p in h.stop()]
        out["samples"] = watcher.stop()
        close_all(hosts)


def assert_no_failed_request_and_one_holder(
    seen: dict[str, list[Any]], vips: tuple[str, str], moved: str, to: str
) -> None:
    probes: list[Probe] = seen["probes"]
    samples: list[Sample] = seen["samples"]
    peers = ["proxy1", "proxy2"]
    for vip in vips:
        mine = of_vip(probes, vip)
        duration = mine[-1].t - mine[0].t
        timeline = holder_timeline(of_vip(samples, vip), peers)
        figures = {
            "vip": vip,
            "probes": len(mine),
            "failed": sum(not p.ok for p in mine),
            "rate": round(len(mine) / duration, 1),
            "timeline_overlap_s": round(split_brain(timeline), 3),
        }
        print(json.dumps(figures))
        for p in mine:
            if not p.ok:  # what the peers reported around it
                near = [
                    (round(x.t - p.t, 2), x.peer, x.holds)
                    for x in of_vip(samples, vip)
                    if abs(x.t - p.t) < 0.5
                ]
                print("failed probe", p.t, sorted(near))
        assert len(mine) / duration >= 20, figures
        assert [p for p in mine if not p.ok] == [], figures
        assert two_holders_seen(of_vip(samples, vip), peers) == [], figures
        kept = of_vip(seen["held"], vip)
        print(
            json.dumps({"vip": vip, "held_open": len(kept), "failed": sum(not p.ok for p in kept)})
        )
        assert len(kept) >= 20 and [p for p in kept if not p.ok] == []
    # The move happened while we watched: the VIP went from the other peer to `to`.
    timeline = holder_timeline(of_vip(samples, moved), peers)
    seq = [h for _, h in timeline if h]
    assert seq[0] != frozenset({to}) and seq[-1] == frozenset({to}), seq[:3]


def test_deploy_moves_each_vip_to_its_preferred_peer_without_a_failed_request(
    lab: Any, lab_ssh: Any, together: Path, spread: Path, vips: tuple[str, str]
) -> None:
    first, second = vips
    result = edgekit("deploy", "-i", str(together), "--yes")
    assert result.returncode == 0, result.stderr
    assert holders(together) == {first: ["proxy1"], second: ["proxy1"]}

    # A changed preference: keepalived.conf changes on both peers (priorities), then
    # deploy moves the second VIP to proxy2.
    with watched(spread, vips) as seen:
        result = edgekit("deploy", "-i", str(spread), "--yes", "--json")
    print(result.stderr)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["vip_holders"] == {first: ["proxy1"], second: ["proxy2"]}
    assert report["vip_moved"] == [{"vip": second, "from": "proxy1", "to": "proxy2"}]
    assert_no_failed_request_and_one_holder(seen, vips, second, "proxy2")
    code, data = status(spread)
    assert code == 0 and data["verdict"] == "healthy" and data["warnings"] == []
    # Nothing left that would let proxy2 preempt.
    assert lab_ssh("proxy2", "test ! -e /run/edgekit/placement").returncode == 0


def settle(inventory: Path, seconds: float = 5) -> tuple[int, dict[str, Any]]:
    """Wait until status is healthy, then `seconds` more (20 adverts at 0.25 s): time for
    a peer allowed to preempt to have done so."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not status(inventory)[1]["healthy"]:
        time.sleep(0.5)
    time.sleep(seconds)
    return status(inventory)


def test_after_a_move_the_running_keepalived_no_longer_preempts(
    lab: Any, lab_ssh: Any, spread: Path, vips: tuple[str, str]
) -> None:
    """The reload that ended the move put nopreempt back: haproxy down on proxy2 (its
    instances FAULT, keepalived keeps running) moves the second VIP to proxy1, and once
    haproxy is back, proxy2 does not take it back."""
    first, second = vips
    wait_for(spread, {first: ["proxy1"], second: ["proxy2"]})
    assert lab_ssh("proxy2", "sudo systemctl stop haproxy").returncode == 0
    try:
        wait_for(spread, {first: ["proxy1"], second: ["proxy1"]})
    finally:
        assert lab_ssh("proxy2", "sudo systemctl start haproxy").returncode == 0
    code, data = settle(spread)
    assert data["vip_holders"] == {first: ["proxy1"], second: ["proxy1"]}, data
    with watched(spread, vips) as seen:
        result = edgekit("deploy", "-i", str(spread), "--yes")
    print(result.stderr)
    assert result.returncode == 0, result.stderr
    assert_no_failed_request_and_one_holder(seen, vips, second, "proxy2")


def test_a_recovered_peer_keeps_off_its_vip_until_the_next_deploy_moves_it_back(
    lab: Any, lab_ssh: Any, spread: Path, vips: tuple[str, str]
) -> None:
    first, second = vips
    wait_for(spread, {first: ["proxy1"], second: ["proxy2"]})
    assert lab_ssh("proxy2", "sudo systemctl stop keepalived").returncode == 0
    try:
        wait_for(spread, {first: ["proxy1"], second: ["proxy1"]})
    finally:
        assert lab_ssh("proxy2", "sudo systemctl start keepalived").returncode == 0
    # proxy2 is back and healthy, with the higher priority for the second VIP: nopreempt
    # keeps it from taking the VIP (20 adverts later, still on proxy1).
    code, data = settle(spread)
    assert data["vip_holders"] == {first: ["proxy1"], second: ["proxy1"]}
    # status: healthy (exit 0), but it says so.
    assert code == 0 and data["healthy"], data
    warning = f"VIP {second} is on proxy1, not on its preferred peer proxy2"
    assert [w for w in data["warnings"] if w.startswith(warning)] == data["warnings"] != []
    assert warning in data["verdict"]

    dry = edgekit("deploy", "-i", str(spread), "--dry-run")
    assert dry.returncode == 3, dry.stderr
    assert f"VIP {second}: proxy1 -> proxy2" in dry.stdout

    # No file differs; the deploy only moves the VIP back.
    with watched(spread, vips) as seen:
        result = edgekit("deploy", "-i", str(spread), "--yes")
    print(result.stderr)
    assert result.returncode == 0, result.stderr
    assert f"VIP {second}: moved from proxy1 to proxy2" in result.stderr
    assert "systemctl reload haproxy" not in result.stderr
    assert_no_failed_request_and_one_holder(seen, vips, second, "proxy2")
    code, data = status(spread)
    assert code == 0 and data["warnings"] == []
    assert data["vip_holders"] == {first: ["proxy1"], second: ["proxy2"]}

    again = edgekit("deploy", "-i", str(spread), "--yes")
    assert again.returncode == 0 and "moved" not in again.stderr
    assert edgekit("deploy", "-i", str(spread), "--dry-run").returncode == 0
