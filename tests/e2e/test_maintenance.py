"""End to end in the local lab: planned maintenance with zero failed requests (issue 14).

Two VIPs, the lab's own preferring proxy1 and a second preferring proxy2. While a drain,
undrain, reboot or upgrade runs, every service on every VIP gets a fresh connection
every 20 ms (50 a second each), and every peer reports ten times a second which VIPs it
holds: no request may fail, no VIP may be held by nobody at a sampled instant, and none
by two peers for longer than one advert interval. The tests run in file order; at the
end the lab's own inventory is deployed again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgekit.failover.measure import Probe, Sample, holder_timeline, of_vip, split_brain
from edgekit.failover.probes import OwnershipWatcher, Prober, Streams, tally
from edgekit.failover.run import probe_targets
from edgekit.hosts import close_all, peer_hosts
from edgekit.inventory import load_inventory
from tests.e2e.cli import edgekit, holders, one_line_error, status
from tests.e2e.inventories import two_vips

pytestmark = pytest.mark.lab

INTERVAL = 0.02  # 50 probes a second on every service of every VIP
ADVERT_S = 0.25  # the lab inventory's advert_int (edgekit's default)
PEERS = ["proxy1", "proxy2"]


@pytest.fixture(scope="module")
def two(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = two_vips(lab, tmp_path_factory.mktemp("maintenance") / "edge.yaml", "proxy2")
    result = edgekit("deploy", "-i", str(path), "--yes")
    assert result.returncode == 0, result.stderr
    yield path
    for peer in PEERS:  # whatever a failed test left
        edgekit("undrain", peer, "-i", str(path))
    edgekit("deploy", "-i", str(lab.inventory), "--yes")  # back to the lab's one VIP


def drained(inventory: Path) -> dict[str, bool]:
    return {p["name"]: p["drained"] for p in status(inventory)[1]["peers"]}


@contextmanager
def watched(inventory: Path, streams: bool = False) -> Iterator[dict[str, Any]]:
    """Probe every service on every VIP and watch who holds them during the block."""
    loaded = load_inventory(inventory)
    vips = [str(v.address.ip) for v in loaded.inventory.vips]
    hosts = peer_hosts(loaded)
    # The watcher's SSH handshakes and the streams' connections first: on this machine's
    # two cores they would otherwise compete with the first probes (0.3 s timeout).
    watcher = OwnershipWatcher(hosts, vips).start()
    time.sleep(1.5)
    kept = [Streams(v, [8.0] * 20, downloads=[8.0]).start() for v in vips] if streams else []
    time.sleep(0.5)
    prober = Prober(probe_targets(loaded), interval=INTERVAL).start()
    out: dict[str, Any] = {"vips": vips}
    try:
        time.sleep(1.0)
        yield out
        time.sleep(1.0)
    finally:
        out["probes"] = prober.stop()
        out["samples"] = watcher.stop()
        out["streams"] = [tally(s.stop()) for s in kept]
        close_all(hosts)


def nobody_sampled(samples: list[Sample], vip: str) -> list[float]:
    """Sampled instants (10 Hz on each peer, unsynchronised) at which no peer held `vip`:
    a peer's sample says not held, and every other peer's samples just before and just
    after that instant say not held either (between two of its samples a peer's state is
    unknown, so a takeover between them is not a gap)."""
    by_peer = {p: sorted((s for s in of_vip(samples, vip) if s.peer == p), key=lambda s: s.t)
               for p in PEERS}  # fmt: skip
    gaps = []
    for peer, own in by_peer.items():
        for s in own:
            if s.holds:
                continue
            others_free = True
            for other, theirs in by_peer.items():
                if other == peer:
                    continue
                before = [x for x in theirs if x.t <= s.t][-1:]
                after = [x for x in theirs if x.t >= s.t][:1]
                if not before or not after or before[0].holds or after[0].holds:
                    others_free = False
            if others_free:
                gaps.append(s.t)
    return sorted(gaps)


def assert_zero_failed(seen: dict[str, Any], what: str) -> dict[str, Any]:
    probes: list[Probe] = seen["probes"]
    samples: list[Sample] = seen["samples"]
    figures: dict[str, Any] = {"what": what}
    for vip in seen["vips"]:
        mine = of_vip(probes, vip)
        duration = mine[-1].t - mine[0].t
        timeline = holder_timeline(of_vip(samples, vip), PEERS)
        services = {p.target for p in mine}
        per_service = len(mine) / len(services) / duration
        figures[vip] = {
            "probes": len(mine),
            "failed": sum(not p.ok for p in mine),
            "rate_per_service": round(per_service, 1),
            "two_holders_s": round(split_brain(timeline), 3),
            "nobody_samples": len(nobody_sampled(samples, vip)),
        }
        for p in mine:
            if not p.ok:  # what the peers reported around it
                near = [
                    (round(x.t - p.t, 2), x.peer, x.holds)
                    for x in of_vip(samples, vip)
                    if abs(x.t - p.t) < 0.5
                ]
                print("failed probe", p, sorted(near))
                changes = [
                    (round(t - p.t, 2), sorted(h))
                    for (t, h), (_, before) in zip(timeline[1:], timeline, strict=False)
                    if h != before
                ]
                print("holder changes (relative):", changes)
        assert per_service >= 45, figures  # 50 scheduled; a loaded machine drifts a little
        assert [p for p in mine if not p.ok] == [], figures
        assert nobody_sampled(samples, vip) == [], figures
        assert split_brain(timeline) <= ADVERT_S, figures
    if seen["streams"]:
        figures["streams"] = seen["streams"]
    print(json.dumps(figures))
    return figures


def handover_left(lab_ssh: Any, peer: str) -> list[str]:
    """What of a VIP handover is still on `peer`: the new holder's nft table, the old
    holder's local routes and arp_ignore, the placement files, the expiry timer."""
    left = []
    if lab_ssh(peer, "sudo nft list table ip edgekit_handover").returncode == 0:
        left.append("nft table edgekit_handover")
    routes = lab_ssh(peer, "ip route show table local").stdout
    left += [f"route {ln}" for ln in routes.splitlines() if "metric 1025" in ln]
    if lab_ssh(peer, "cat /proc/sys/net/ipv4/conf/eth1/arp_ignore").stdout.strip() != "0":
        left.append("arp_ignore on eth1")
    for path in ("/run/edgekit/handover", "/run/edgekit/handover.expire", "/run/edgekit/placement"):
        if lab_ssh(peer, f"test -e {path}").returncode == 0:
            left.append(path)
    rules = lab_ssh(peer, "ip rule show").stdout.splitlines()
    if len(rules) != 3:  # the kernel's own: local, main, default
        left += [f"ip rule {r}" for r in rules]
    timer = lab_ssh(peer, "systemctl is-active edgekit-handover-expire.timer").stdout.strip()
    if timer == "active":
        left.append("the expiry timer")
    return left


def test_drain_and_undrain_of_the_holder_fail_no_request(two: Path, lab: Any) -> None:
    first, second = (str(v.address.ip) for v in load_inventory(two).inventory.vips)
    assert holders(two) == {first: ["proxy1"], second: ["proxy2"]}
    with watched(two, streams=True) as seen:
        result = edgekit("drain", "proxy1", "-i", str(two), "--grace", "10", "--json")
    print(result.stderr)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["drained"] and report["moved"] == [
        {"vip": first, "from": "proxy1", "to": "proxy2"}
    ]
    figures = assert_zero_failed(seen, "drain proxy1")
    # 20 connections per VIP, each sending a byte every 100 ms for 8 s, and an 8 s slow
    # download, opened before the drain and ended within its grace: those through proxy1
    # kept being served by it (proxy2 passed their packets on), none was cut.
    assert figures["streams"] == [{"ok": 21, "fin": 0, "rst": 0, "error": 0}] * 2, figures
    code, data = status(two)
    assert code == 0 and data["vip_holders"] == {first: ["proxy2"], second: ["proxy2"]}
    assert drained(two) == {"proxy1": True, "proxy2": False}
    assert "proxy1 is drained" in data["verdict"]
    table = edgekit("status", "-i", str(two))
    assert re.search(r"^proxy1 .* DRAINED ", table.stdout, re.M), table.stdout

    with watched(two) as seen:
        result = edgekit("undrain", "proxy1", "-i", str(two))
    print(result.stderr)
    assert result.returncode == 0, result.stderr
    assert_zero_failed(seen, "undrain proxy1")
    assert holders(two) == {first: ["proxy1"], second: ["proxy2"]}
    assert drained(two) == {"proxy1": False, "proxy2": False}


def test_nothing_of_a_handover_is_left_after_a_drain_or_a_killed_one(
    two: Path, lab: Any, lab_ssh: Any
) -> None:
    first, second = (str(v.address.ip) for v in load_inventory(two).inventory.vips)
    assert edgekit("drain", "proxy1", "-i", str(two), "--grace", "1").returncode == 0
    assert {p: handover_left(lab_ssh, p) for p in PEERS} == {"proxy1": [], "proxy2": []}
    assert edgekit("undrain", "proxy1", "-i", str(two)).returncode == 0
    assert {p: handover_left(lab_ssh, p) for p in PEERS} == {"proxy1": [], "proxy2": []}

    # kill -9 in the grace window: the hosts undo the handover by themselves, at most a
    # few seconds after the window would have ended (the timer is armed again when the
    # VIP has moved: the 5 s grace, the close and a 5 s margin).
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekit", "drain", "proxy1", "-i", str(two),
         "--grace", "5", "--timeout", "5"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "EDGEKIT_DEBUG": "0"},
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if "proxy1: serves the connections it has" in line:
            break
    deadline = time.monotonic() + 10  # the move takes about 1.5 s; the window is 5 s
    while time.monotonic() < deadline and holders(two)[first] != ["proxy2"]:
        time.sleep(0.2)
    moved_at = time.monotonic()
    proc.kill()  # inside the window: the handover is in place on both peers
    proc.wait(timeout=30)
    assert "the expiry timer" in handover_left(lab_ssh, "proxy1")  # it was in the window
    assert "nft table edgekit_handover" in handover_left(lab_ssh, "proxy2")
    # The window, the close, the margin; then the timer's accuracy (1 s), the restore
    # and this loop's own pace (each look is a dozen SSH commands: about 3 s).
    deadline = moved_at + 5 + 0.5 + 5 + 8
    while time.monotonic() < deadline and any(handover_left(lab_ssh, p) for p in PEERS):
        time.sleep(0.5)
    gone_after = time.monotonic() - moved_at
    print(f"handover gone {gone_after:.1f}s after the VIP moved (window 5 s)")
    assert {p: handover_left(lab_ssh, p) for p in PEERS} == {"proxy1": [], "proxy2": []}
    assert holders(two) == {first: ["proxy2"], second: ["proxy2"]}
    assert drained(two)["proxy1"]  # the drain had done its part: a whole state
    assert edgekit("undrain", "proxy1", "-i", str(two)).returncode == 0
    assert holders(two) == {first: ["proxy1"], second: ["proxy2"]}


def test_connections_inside_the_grace_are_served_and_the_rest_end_with_a_fin(
    two: Path, lab: Any
) -> None:
    """failover-test's drain-established: per VIP holder, 10 connections (each sends a
    byte every 100 ms) and a slow download that end inside the 8 s grace, and as many
    that outlive it."""
    result = edgekit("failover-test", "-i", str(two), "-s", "drain-established", "--json")
    print(result.stderr)
    data = json.loads(result.stdout)
    runs = data["scenarios"]
    assert [r["holder"] for r in runs] == PEERS, runs  # each VIP's holder drained once
    for r in runs:
        print(json.dumps({"holder": r["holder"], "established": r["established"]}))
        assert r["passed"] and r["failed_probes"] == 0, r
        # Served to the end by the drained peer, though the VIP had moved.
        assert r["established"]["within"] == {"ok": 11, "fin": 0, "rst": 0, "error": 0}
        # Closed by its haproxy at the end of the window (while the new holder still
        # passed it their packets): a FIN, not the new holder's reset.
        assert r["established"]["beyond"] == {"ok": 0, "fin": 11, "rst": 0, "error": 0}
    assert result.returncode == 0 and data["passed"]


def test_the_handover_works_with_the_firewall_off_too(two: Path, lab: Any, lab_ssh: Any) -> None:
    """The same drain-established run with edgekit's firewall removed (the other tests
    run with it on, the default)."""
    data = yaml.safe_load(two.read_text())
    data["firewall"] = {"enabled": False}
    off = two.with_name("firewall-off.yaml")
    off.write_text(two.read_text().splitlines()[0] + "\n" + yaml.safe_dump(data, sort_keys=False))
    try:
        assert edgekit("deploy", "-i", str(off), "--yes").returncode == 0
        assert lab_ssh("proxy1", "sudo nft list table inet edgekit").returncode != 0
        result = edgekit("failover-test", "-i", str(off), "-s", "drain-established", "--json")
        print(result.stderr)
        runs = json.loads(result.stdout)["scenarios"]
        for r in runs:
            print(json.dumps({"firewall": "off", "holder": r["holder"], **r["established"]}))
            assert r["passed"] and r["failed_probes"] == 0, r
            assert r["established"]["within"]["ok"] == 11, r["established"]
            assert r["established"]["beyond"]["rst"] == 0, r["established"]
        assert result.returncode == 0
        assert {p: handover_left(lab_ssh, p) for p in PEERS} == {"proxy1": [], "proxy2": []}
    finally:
        assert edgekit("deploy", "-i", str(two), "--yes").returncode == 0  # firewall back


def test_a_drained_peer_stays_drained_across_a_deploy_and_a_keepalived_restart(
    two: Path, lab: Any, lab_ssh: Any
) -> None:
    first, second = (str(v.address.ip) for v in load_inventory(two).inventory.vips)
    assert edgekit("drain", "proxy2", "-i", str(two), "--grace", "0").returncode == 0
    try:
        assert holders(two) == {first: ["proxy1"], second: ["proxy1"]}
        # A deploy with nothing to change does not move the VIP back to its drained
        # preferred peer, and says nothing is pending.
        dry = edgekit("deploy", "-i", str(two), "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        result = edgekit("deploy", "-i", str(two), "--yes")
        assert result.returncode == 0 and "moved" not in result.stderr, result.stderr
        # keepalived reads the mark again when it starts.
        assert lab_ssh("proxy2", "sudo systemctl restart keepalived").returncode == 0
        time.sleep(3)
        assert holders(two) == {first: ["proxy1"], second: ["proxy1"]}
        assert drained(two)["proxy2"]
        # The last healthy undrained peer is not drained without --force.
        refused = edgekit("drain", "proxy1", "-i", str(two))
        assert refused.returncode == 1
        assert "refusing to drain proxy1" in one_line_error(refused)
        assert holders(two) == {first: ["proxy1"], second: ["proxy1"]}
    finally:
        assert edgekit("undrain", "proxy2", "-i", str(two)).returncode == 0
    assert holders(two) == {first: ["proxy1"], second: ["proxy2"]}


def test_bad_drains_exit_with_one_line(two: Path, lab: Any) -> None:
    from edgekit.lab import local

    unknown = edgekit("drain", "proxy9", "-i", str(two))
    assert unknown.returncode == 2
    assert "no peer named 'proxy9'" in one_line_error(unknown)
    local.kill_host("proxy2")
    try:
        down = edgekit("drain", "proxy2", "-i", str(two))
        assert down.returncode == 1
        assert one_line_error(down).startswith("edgekit: proxy2: unreachable, not drained")
    finally:
        local.start_host("proxy2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not status(two)[1]["healthy"]:
        time.sleep(1)
    assert status(two)[1]["healthy"]
    result = edgekit("deploy", "-i", str(two), "--yes")  # placement: VIPs back home
    assert result.returncode == 0, result.stderr


def test_ctrl_c_during_a_drain_leaves_the_peer_wholly_drained_or_not(two: Path, lab: Any) -> None:
    first, second = (str(v.address.ip) for v in load_inventory(two).inventory.vips)
    assert holders(two) == {first: ["proxy1"], second: ["proxy2"]}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekit", "drain", "proxy1", "-i", str(two)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EDGEKIT_DEBUG": "0"},
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # interrupt right after the mark, before the VIP moved
        lines.append(line)
        if "drained mark set" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, "".join(lines) + rest
    said = [ln for ln in rest.splitlines() if "interrupted" in ln]
    assert len(said) == 1, rest
    now = drained(two)["proxy1"]
    held = holders(two)
    if "is drained" in said[0]:
        assert now and held[first] == ["proxy2"], (said, held)
    else:
        assert "is not drained" in said[0] and not now and held[first] == ["proxy1"], said
    edgekit("undrain", "proxy1", "-i", str(two))
    assert holders(two) == {first: ["proxy1"], second: ["proxy2"]}


def test_reboot_of_each_peer_in_turn_fails_no_request(two: Path, lab: Any) -> None:
    first, second = (str(v.address.ip) for v in load_inventory(two).inventory.vips)
    for peer in PEERS:
        with watched(two) as seen:
            result = edgekit("reboot", peer, "-i", str(two), "--grace", "2")
        print(result.stderr)
        assert result.returncode == 0, result.stderr
        assert f"{peer}: back after" in result.stderr
        assert_zero_failed(seen, f"reboot {peer}")
        assert holders(two) == {first: ["proxy1"], second: ["proxy2"]}
        assert not any(drained(two).values())


# --- upgrade: a real package change from a local apt repository -----------------------

REPO = "/srv/edgekit-test-repo"
SUFFIX = "+edgekit1"


def rebuilt_haproxy(work: Path) -> tuple[Path, str]:
    """Debian's haproxy package (from the image's package cache) rebuilt with a higher
    version: an upgrade that really replaces the binary and restarts the service."""
    from edgekit.image import default_cache_dir

    debs = sorted((default_cache_dir() / "debs").glob("haproxy_*.deb"))
    assert debs, "the image build caches the haproxy package it installed"
    tree = work / "tree"
    subprocess.run(["dpkg-deb", "-R", str(debs[-1]), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    text = control.read_text()
    version = re.search(r"^Version: (\S+)$", text, re.M)
    assert version
    new = version.group(1) + SUFFIX
    control.write_text(text.replace(f"Version: {version.group(1)}", f"Version: {new}"))
    out = work / "repo" / f"haproxy_{new.split(':')[-1]}_amd64.deb"
    out.parent.mkdir()
    subprocess.run(["dpkg-deb", "-b", "-Zxz", str(tree), str(out)], check=True, capture_output=True)
    return out, new


def packages_index(deb: Path) -> str:
    import hashlib

    fields = subprocess.run(
        ["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True
    ).stdout.rstrip("\n")
    data = deb.read_bytes()
    return (
        f"{fields}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
        f"SHA256: {hashlib.sha256(data).hexdigest()}\n\n"
    )


@pytest.fixture(scope="module")
def local_repo(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Each proxy's apt sources point at a repository on its own disk that holds the
    rebuilt haproxy (the lab has no route out); put back afterwards."""
    from edgekit.lab import containers

    deb, version = rebuilt_haproxy(tmp_path_factory.mktemp("deb"))
    index = packages_index(deb)
    saved = {}
    for host in lab.peers:
        root = containers.root_dir(lab, host)
        repo = root / REPO.lstrip("/")
        repo.mkdir(parents=True, exist_ok=True)
        shutil.copy(deb, repo / deb.name)
        (repo / "Packages").write_text(index)
        sources = root / "etc/apt/sources.list"
        saved[host.name] = sources.read_text()
        sources.write_text(f"deb [trusted=yes] file:{REPO} ./\n")
    yield version
    for host in lab.peers:
        root = containers.root_dir(lab, host)
        (root / "etc/apt/sources.list").write_text(saved[host.name])
        shutil.rmtree(root / REPO.lstrip("/"), ignore_errors=True)


def test_a_rolling_upgrade_of_both_peers_fails_no_request(
    two: Path, lab: Any, lab_ssh: Any, local_repo: str
) -> None:
    first, second = (str(v.address.ip) for v in load_inventory(two).inventory.vips)
    dry = edgekit("upgrade", "-i", str(two), "--packages", "haproxy", "--dry-run", "--json")
    assert dry.returncode == 3, dry.stderr
    planned = json.loads(dry.stdout)["planned"]
    assert {n: [u["package"] for u in ups] for n, ups in planned.items()} == {
        "proxy1": ["haproxy"],
        "proxy2": ["haproxy"],
    }
    assert all(ups[0]["to"] == local_repo for ups in planned.values())

    with watched(two) as seen:
        result = edgekit("upgrade", "-i", str(two), "--packages", "haproxy", "--grace", "2")
    print(result.stderr)
    assert result.returncode == 0, result.stderr
    assert_zero_failed(seen, "upgrade proxy1, proxy2")
    order = re.findall(r"^(proxy\d): upgrading$", result.stderr, re.M)
    assert sorted(order) == PEERS
    for peer in PEERS:
        version = lab_ssh(peer, "dpkg-query -W -f '${Version}' haproxy")
        assert version.stdout.strip() == local_repo, version
    assert holders(two) == {first: ["proxy1"], second: ["proxy2"]}
    assert not any(drained(two).values())
    again = edgekit("upgrade", "-i", str(two), "--packages", "haproxy", "--dry-run")
    assert again.returncode == 0, again.stderr


def test_an_upgrade_that_fails_stops_and_leaves_its_peer_drained(
    two: Path, lab: Any, local_repo: str
) -> None:
    """proxy2's repository offers a newer haproxy whose file is not what its index says:
    the download fails after the drain. The rollout stops there, proxy2 stays drained."""
    from edgekit.lab import containers

    first, second = (str(v.address.ip) for v in load_inventory(two).inventory.vips)
    proxy2 = next(h for h in lab.peers if h.name == "proxy2")
    repo = containers.root_dir(lab, proxy2) / REPO.lstrip("/")
    index = (repo / "Packages").read_text()
    kept = index
    broken = re.sub(r"^Filename: .*$", "Filename: ./broken.deb", index, flags=re.M)
    broken = broken.replace(f"Version: {local_repo}", f"Version: {local_repo}.1")
    (repo / "broken.deb").write_bytes(b"not a package\n")
    (repo / "Packages").write_text(index + broken)
    try:
        result = edgekit("upgrade", "-i", str(two), "--grace", "0", "--packages", "haproxy")
        print(result.stderr)
        assert result.returncode == 1
        line = one_line_error(result)
        assert line.startswith("edgekit: proxy2: apt-get upgrade failed") and line.endswith(
            "proxy2 is left drained"
        ), line
        assert "proxy1: upgrading" not in result.stderr  # nothing for proxy1 to do
        assert drained(two) == {"proxy1": False, "proxy2": True}
        assert holders(two) == {first: ["proxy1"], second: ["proxy1"]}
    finally:
        (repo / "Packages").write_text(kept)
        (repo / "broken.deb").unlink()
        assert edgekit("undrain", "proxy2", "-i", str(two)).returncode == 0
    assert holders(two) == {first: ["proxy1"], second: ["proxy2"]}
