"""The firewall for real: `nft -c` accepts everything edgekit renders, and in the lab the
proxies admit what they serve, refuse an outside client, keep the deploy from locking
itself out, survive a reboot and still pass every failover scenario.

The `nft -c` tests run in throwaway network namespaces (`ip netns exec NS nft ...`), so
the machine's own ruleset is never touched. The lab tests share the session's lab and run
in file order; an extra namespace on the lab bridge plays the client outside the narrowed
CIDRs. Every namespace created here is deleted again.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgekit import firewall, render
from edgekit.deploy import confirm
from edgekit.inventory import load_inventory
from edgekit.net import tcp_answers
from tests.conftest import need_program, need_root
from tests.e2e.cli import edgekit, one_line_error
from tests.e2e.inventories import default_scenarios

DATA = Path(__file__).resolve().parents[1] / "data"
GOOD = sorted((DATA / "good").glob("*.yaml"))
IDS = [p.stem for p in GOOD]
STRONG = "Zq8-vLm3pRt7xW"
MANAGED = (
    "/etc/haproxy/haproxy.cfg",
    "/etc/keepalived/keepalived.conf",
    firewall.RULESET,
    firewall.UNIT_PATH,
)


@pytest.fixture(autouse=True)
def _secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", STRONG)
    monkeypatch.setenv("EDGEKIT_VRRP_PASS", "k3Vp9xQ2")
    monkeypatch.delenv(confirm.LOCKOUT_ENV, raising=False)


def _run(argv: list[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)


def _netns_exists(name: str) -> bool:
    out = _run(["ip", "netns", "list"]).stdout
    return any(line.split()[:1] == [name] for line in out.splitlines())


@pytest.fixture
def scratch_ns() -> Iterator[str]:
    """An empty network namespace for nft; deleted afterwards."""
    need_root()
    need_program("ip", "nft")
    name = f"ektest-nft-{uuid.uuid4().hex[:8]}"
    assert _run(["ip", "netns", "add", name]).returncode == 0
    try:
        yield name
    finally:
        _run(["ip", "netns", "del", name])
        assert not _netns_exists(name), f"network namespace {name} was not deleted"


def nft(ns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return _run(["ip", "netns", "exec", ns, "nft", *args], input=stdin)


def nft_check(ns: str, text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"ruleset-{uuid.uuid4().hex[:6]}.nft"
    path.write_text(text)
    return nft(ns, "-c", "-f", str(path))


# --- nft -c rejects nothing edgekit renders ---------------------------------------------


@pytest.mark.binaries
@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_nft_accepts_every_rendered_proxy_ruleset(
    path: Path, scratch_ns: str, tmp_path: Path
) -> None:
    files = render.render_all(load_inventory(path))
    for peer, peer_files in files.items():
        text = next(f.content for f in peer_files if f.path == firewall.RULESET)
        result = nft_check(scratch_ns, text, tmp_path)
        assert result.returncode == 0, f"{peer}: {result.stderr}"
    assert nft(scratch_ns, "list", "ruleset").stdout.strip() == ""  # -c loaded nothing


@pytest.mark.binaries
@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_nft_accepts_every_rendered_node_fence(path: Path, scratch_ns: str, tmp_path: Path) -> None:
    fence = render.render_nodes(load_inventory(path))[0]
    result = nft_check(scratch_ns, fence.content, tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.binaries
def test_nft_check_rejects_a_broken_ruleset(scratch_ns: str, tmp_path: Path) -> None:
    loaded = load_inventory(DATA / "good" / "issue-example.yaml")
    text = next(
        f.content for f in render.render_peer(loaded, "proxy1") if f.path == firewall.RULESET
    )
    assert nft_check(scratch_ns, text, tmp_path).returncode == 0  # the same text, unbroken
    bad = nft_check(
        scratch_ns, text.replace("ip protocol 112 accept", "ip protocol 112 acept"), tmp_path
    )
    assert bad.returncode != 0 and "acept" in bad.stderr
    fence = render.render_nodes(loaded)[0].content
    bad = nft_check(
        scratch_ns, fence.replace("fib daddr type local", "fib daddr type locale"), tmp_path
    )
    assert bad.returncode != 0


@pytest.mark.binaries
def test_reloading_replaces_only_the_edgekit_table(scratch_ns: str, tmp_path: Path) -> None:
    loaded = load_inventory(DATA / "good" / "sticky.yaml")
    path = tmp_path / "firewall.nft"
    path.write_text(
        next(f.content for f in render.render_peer(loaded, "lb1") if f.path == firewall.RULESET)
    )
    other = (
        "table inet other {\n  chain c {\n    type filter hook input priority 10;\n"
        "    tcp dport 7 accept\n  }\n}\n"
    )
    assert nft(scratch_ns, "-f", "-", stdin=other).returncode == 0
    assert nft(scratch_ns, "-f", str(path)).returncode == 0
    first = nft(scratch_ns, "-s", "list", "table", "inet", "edgekit").stdout
    # A hand-added rule goes with the next load; the other table stays as it was.
    assert (
        nft(
            scratch_ns, "add", "rule", "inet", "edgekit", "input", "tcp", "dport", "9", "accept"
        ).returncode
        == 0
    )
    assert nft(scratch_ns, "-f", str(path)).returncode == 0
    assert nft(scratch_ns, "-s", "list", "table", "inet", "edgekit").stdout == first
    assert "dport 7 accept" in nft(scratch_ns, "list", "table", "inet", "other").stdout
    # The fence next to it, loaded twice, does not disturb either.
    fence = tmp_path / "fence.nft"
    fence.write_text(render.render_nodes(loaded)[0].content)
    for _ in range(2):
        assert nft(scratch_ns, "-f", str(fence)).returncode == 0
    tables = nft(scratch_ns, "list", "tables").stdout.split("\n")
    assert sorted(t.strip() for t in tables if t.strip()) == [
        "table inet edgekit",
        "table inet edgekit_nodeport_fence",
        "table inet other",
    ]


# --- in the lab ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(lab: Any) -> dict[str, Any]:
    return yaml.safe_load(Path(lab.inventory).read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("firewall")


def write_inventory(workdir: Path, data: dict[str, Any], name: str) -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def narrowed(lab: Any, base: dict[str, Any], workdir: Path) -> Path:
    """SSH, stats and the API only from this machine (the lab bridge's .1)."""
    data = copy.deepcopy(base)
    data["firewall"] = {"admin_cidrs": [f"{lab.gateway}/32"]}
    api = next(s for s in data["services"] if s["listen"] == 6443)
    api["client_cidrs"] = [f"{lab.gateway}/32"]
    return write_inventory(workdir, data, "narrowed.yaml")


@dataclass(frozen=True)
class Outsider:
    netns: str
    address: str

    def connects(self, host: str, port: int, timeout: float = 2.0) -> bool:
        code = (
            "import socket,sys\ntry:\n socket.create_connection((sys.argv[1], "
            "int(sys.argv[2])), timeout=float(sys.argv[3])).close(); print('ok')\n"
            "except OSError as e: print('refused', e)"
        )
        out = _run(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                sys.executable,
                "-c",
                code,
                host,
                str(port),
                str(timeout),
            ],
            timeout=timeout + 30,
        ).stdout
        return out.startswith("ok")

    def http_get(self, url: str) -> str:
        code = (
            "import sys,urllib.request\n"
            "print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"
        )
        result = _run(["ip", "netns", "exec", self.netns, sys.executable, "-c", code, url])
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


@pytest.fixture(scope="module")
def outsider(lab: Any) -> Iterator[Outsider]:
    """A client on the lab bridge at .250: inside the lab subnet, outside the narrowed
    /32s. Its namespace (and with it both veth ends) is deleted afterwards."""
    import ipaddress

    net = ipaddress.ip_network(lab.subnet)
    address = str(net.network_address + 250)
    ns, veth = f"ektest-fw-{uuid.uuid4().hex[:6]}", f"ekfw{uuid.uuid4().hex[:6]}"
    steps = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
        ["ip", "link", "set", veth, "master", lab.bridge, "up"],
        ["ip", "-n", ns, "addr", "add", f"{address}/{net.prefixlen}", "dev", "eth0"],
        ["ip", "-n", ns, "link", "set", "eth0", "up"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
    ]
    try:
        for step in steps:
            result = _run(step)
            assert result.returncode == 0, (step, result.stderr)
        yield Outsider(ns, address)
    finally:
        _run(["ip", "netns", "del", ns])
        assert not _netns_exists(ns), f"network namespace {ns} was not deleted"
        assert _run(["ip", "link", "show", veth]).returncode != 0, f"{veth} left behind"


def connects(host: str, port: int, timeout: float = 2.0) -> bool:
    return tcp_answers(host, port, timeout)


def proxy_ns(lab: Any, name: str) -> str:
    return next(p.netns for p in lab.peers if p.name == name)


def snapshot(lab: Any, lab_ssh: Any) -> dict[str, tuple[str, str]]:
    """Per proxy: the managed files' hashes and the loaded ruleset (without counters)."""
    out = {}
    for p in lab.peers:
        files = lab_ssh(p.name, "sudo sha256sum " + " ".join(MANAGED) + " 2>&1 || true").stdout
        rules = _run(["ip", "netns", "exec", p.netns, "nft", "-s", "list", "ruleset"]).stdout
        out[p.name] = (files, rules)
    return out


def status(inventory: Path) -> dict[str, Any]:
    return json.loads(edgekit("status", "-i", str(inventory), "--json").stdout)


def dropped(lab: Any, name: str) -> int:
    text = _run(
        [
            "ip",
            "netns",
            "exec",
            proxy_ns(lab, name),
            "nft",
            "list",
            "counter",
            "inet",
            "edgekit",
            "dropped",
        ]
    ).stdout
    match = re.search(r"\bpackets (\d+) bytes", text)
    assert match, text
    return int(match.group(1))


@pytest.mark.lab
def test_deploy_loads_the_default_firewall_on_every_peer(lab: Any, lab_ssh: Any) -> None:
    result = edgekit("deploy", "-i", str(lab.inventory), "--yes", "--json")
    assert result.returncode == 0, result.stderr
    body = urllib.request.urlopen(f"http://{lab.vip}/", timeout=3).read().decode()
    assert body.strip().startswith("node")
    data = status(Path(lab.inventory))
    assert data["healthy"], data["problems"]
    assert [p["firewall"] for p in data["peers"]] == ["loaded"] * len(lab.peers)
    for p in lab.peers:
        assert lab_ssh(p.name, f"systemctl is-enabled {firewall.UNIT}").stdout.strip() == "enabled"
        listing = _run(["ip", "netns", "exec", p.netns, "nft", "list", "table", "inet", "edgekit"])
        assert listing.returncode == 0 and "policy drop" in listing.stdout


@pytest.mark.lab
def test_a_client_inside_the_default_admin_cidrs_reaches_ssh_and_stats(
    lab: Any, outsider: Outsider
) -> None:
    # The control for the refusals below: the same client, the default firewall.
    peer = lab.peers[0].address
    assert outsider.connects(peer, 22) and outsider.connects(peer, lab.stats_port)
    assert outsider.connects(lab.vip, 6443)
    assert outsider.http_get(f"http://{lab.vip}/").startswith("node")


@pytest.mark.lab
def test_deploy_from_outside_admin_cidrs_is_refused_before_any_host_changes(
    lab: Any, lab_ssh: Any, base: dict[str, Any], workdir: Path, outsider: Outsider
) -> None:
    before = snapshot(lab, lab_ssh)
    data = copy.deepcopy(base)
    data["firewall"] = {"admin_cidrs": [f"{outsider.address}/32"]}
    data["services"][0]["timeout"] = "2m"  # a change that would otherwise be deployed
    inv = write_inventory(workdir, data, "outside-admin.yaml")
    result = edgekit("deploy", "-i", str(inv), "--yes")
    assert result.returncode == 1
    line = one_line_error(result)
    assert "refusing to deploy the firewall" in line and lab.gateway in line
    assert "nothing was changed" in line
    assert ": applying" not in result.stderr
    assert snapshot(lab, lab_ssh) == before


@pytest.mark.lab
def test_outside_client_is_refused_by_narrowed_service_ssh_and_stats(
    lab: Any, lab_ssh: Any, narrowed: Path, outsider: Outsider
) -> None:
    result = edgekit("deploy", "-i", str(narrowed), "--yes", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"][f"kubernetes-api@{lab.vip}:6443"] is True
    # This machine (.1) is inside every narrowed CIDR.
    assert connects(lab.vip, 6443)
    assert urllib.request.urlopen(f"http://{lab.vip}/", timeout=3).read().decode().strip()
    for p in lab.peers:
        assert connects(p.address, 22) and connects(p.address, lab.stats_port)
        assert lab_ssh(p.name, "true").returncode == 0
    before = {p.name: dropped(lab, p.name) for p in lab.peers}
    # The outsider: the open service still answers; the narrowed ones do not.
    assert outsider.http_get(f"http://{lab.vip}/").startswith("node")
    assert outsider.connects(lab.vip, 443)
    assert not outsider.connects(lab.vip, 6443)
    for p in lab.peers:
        assert not outsider.connects(p.address, 22)
        assert not outsider.connects(p.address, lab.stats_port)
    after = {p.name: dropped(lab, p.name) for p in lab.peers}
    assert all(after[n] > before[n] for n in before), (before, after)  # dropped and counted
    data = status(narrowed)
    assert data["healthy"], data["problems"]


@pytest.mark.lab
def test_status_reports_a_hand_edited_table_and_deploy_loads_it_again(
    lab: Any, narrowed: Path
) -> None:
    ns = proxy_ns(lab, "proxy2")
    added = _run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "nft",
            "add",
            "rule",
            "inet",
            "edgekit",
            "input",
            "tcp",
            "dport",
            "2323",
            "accept",
        ]
    )
    assert added.returncode == 0, added.stderr
    data = status(narrowed)
    assert not data["healthy"]
    assert f"proxy2: firewall differs from {firewall.RULESET}" in data["problems"]
    result = edgekit("deploy", "-i", str(narrowed), "--yes")
    assert result.returncode == 0, result.stderr
    assert "proxy2: loading the firewall" in result.stderr
    assert "proxy1: loading the firewall" not in result.stderr
    listing = _run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "edgekit"])
    assert "2323" not in listing.stdout
    assert status(narrowed)["healthy"]


@pytest.mark.lab
def test_a_ruleset_that_cuts_the_deploys_ssh_is_rolled_back_by_the_host(
    lab: Any, lab_ssh: Any, narrowed: Path
) -> None:
    before = snapshot(lab, lab_ssh)
    started = time.monotonic()
    result = edgekit(
        "deploy", "-i", str(narrowed), "--yes", env={confirm.LOCKOUT_ENV: "1"}, timeout=240
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    line = one_line_error(result)
    assert "the new firewall cut this machine's SSH" in line
    assert "restored its previous firewall and files by itself" in line
    assert "TEST ONLY" in result.stderr
    assert result.stderr.count(": applying") == 1  # the rollout stopped at that host
    # The window is 30 s; the host restored itself, and deploy confirmed it afterwards.
    assert confirm.WINDOW_S <= elapsed < confirm.WINDOW_S + 60, elapsed
    assert snapshot(lab, lab_ssh) == before
    for p in lab.peers:
        assert lab_ssh(p.name, "true").returncode == 0
    assert status(narrowed)["healthy"]


def _on_host(lab_ssh: Any, host: str, script: str, shim: bool) -> str:
    """Run a script as root on a lab proxy; with `shim`, systemd-run fails there."""
    encoded = base64.b64encode(script.encode()).decode()
    path = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
    prefix = (
        "mkdir -p /tmp/ektest-shim && printf '#!/bin/sh\\nexit 1\\n' > "
        "/tmp/ektest-shim/systemd-run && chmod +x /tmp/ektest-shim/systemd-run && "
        if shim
        else ""
    )
    if shim:
        path = "PATH=/tmp/ektest-shim:/usr/sbin:/usr/bin:/sbin:/bin"
    result = lab_ssh(host, f"{prefix}echo {encoded} | base64 -d | sudo env {path} sh")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.lab
@pytest.mark.parametrize("shim", [False, True], ids=["systemd-run", "setsid-fallback"])
def test_rollback_timer_fires_after_the_window_and_can_be_cancelled(
    lab: Any, lab_ssh: Any, shim: bool
) -> None:
    # No files to restore ("true"), and the table it restores is the one loaded now: the
    # host ends up as it was, with the marker the rollback leaves.
    host, ns = lab.peers[0].name, lab.peers[0].netns
    table = _run(["ip", "netns", "exec", ns, "nft", "-s", "list", "table", "inet", "edgekit"])
    armed = _on_host(lab_ssh, host, confirm.arm_script("true", window=2), shim)
    assert armed.startswith("armed pid" if shim else "armed systemd-run"), armed
    time.sleep(4)  # the SSH session that armed it is long gone
    marker = lab_ssh(host, f"sudo cat {confirm.ROLLED_BACK_MARKER}")
    assert marker.returncode == 0 and re.match(r"\d{4}-\d\d-\d\dT", marker.stdout)
    after = _run(["ip", "netns", "exec", ns, "nft", "-s", "list", "table", "inet", "edgekit"])
    assert after.stdout == table.stdout
    # Armed again and cancelled within the window: it never runs.
    armed = _on_host(lab_ssh, host, confirm.arm_script("true", window=3), shim)
    assert _on_host(lab_ssh, host, confirm.cancel_script(), shim) == "cancelled"
    time.sleep(4)
    assert lab_ssh(host, f"sudo test -e {confirm.ROLLED_BACK_MARKER}").returncode != 0
    if shim:
        pid = armed.split()[-1]
        assert lab_ssh(host, f"test -e /proc/{pid}").returncode != 0
        lab_ssh(host, "rm -rf /tmp/ektest-shim")


@pytest.mark.lab
def test_the_firewall_is_loaded_again_at_boot(lab: Any, lab_ssh: Any, narrowed: Path) -> None:
    from edgekit.lab import local

    ns = proxy_ns(lab, "proxy2")
    local.kill_host("proxy2")
    try:
        # The lab keeps the network namespace across the "reboot": empty it, so only the
        # host's own boot can bring the table back.
        gone = _run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "edgekit"])
        assert gone.returncode == 0, gone.stderr
        assert (
            _run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "edgekit"]).returncode
            != 0
        )
    finally:
        local.start_host("proxy2")
    listing = _run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "edgekit"])
    assert listing.returncode == 0, "edgekit-firewall.service did not load it at boot"
    deadline = time.monotonic() + 60
    while True:
        data = status(narrowed)
        if data["healthy"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert data["healthy"], data["problems"]
    assert [p["firewall"] for p in data["peers"]] == ["loaded"] * len(lab.peers)


@pytest.mark.lab
def test_enabled_false_removes_the_edgekit_firewall_and_nothing_else(
    lab: Any, lab_ssh: Any, base: dict[str, Any], workdir: Path
) -> None:
    for p in lab.peers:  # someone else's table, which must survive
        assert (
            _run(
                ["ip", "netns", "exec", p.netns, "nft", "add", "table", "inet", "theirs"]
            ).returncode
            == 0
        )
    data = copy.deepcopy(base)
    data["firewall"] = {"enabled": False}
    off = write_inventory(workdir, data, "firewall-off.yaml")
    result = edgekit("deploy", "-i", str(off), "--yes")
    assert result.returncode == 0, result.stderr
    assert "removing the edgekit firewall" in result.stderr
    for p in lab.peers:
        tables = _run(["ip", "netns", "exec", p.netns, "nft", "list", "tables"]).stdout
        assert tables.split("\n")[:1] == ["table inet theirs"] and "edgekit" not in tables
        gone = lab_ssh(p.name, f"test ! -e {firewall.RULESET} && test ! -e {firewall.UNIT_PATH}")
        assert gone.returncode == 0
        _run(["ip", "netns", "exec", p.netns, "nft", "delete", "table", "inet", "theirs"])
    data = status(off)
    assert data["healthy"]
    assert [p["firewall"] for p in data["peers"]] == ["off"] * len(lab.peers)
    again = edgekit("deploy", "-i", str(off), "--yes")
    assert again.returncode == 0 and "no changes" in again.stderr


@pytest.mark.lab
def test_every_failover_scenario_passes_with_the_firewall_on(lab: Any) -> None:
    inv = Path(lab.inventory)  # the lab's own inventory: host-down uses the lab's power
    result = edgekit("deploy", "-i", str(inv), "--yes")
    assert result.returncode == 0, result.stderr
    assert [p["firewall"] for p in status(inv)["peers"]] == ["loaded"] * len(lab.peers)
    result = edgekit("failover-test", "-i", str(inv), "--json", timeout=600)
    data = json.loads(result.stdout)
    names = [s["name"] for s in data["scenarios"]]
    assert names == default_scenarios()
    for s in data["scenarios"]:
        assert s["passed"], {
            k: s[k]
            for k in (
                "name",
                "outage_s",
                "vip_move_s",
                "holder",
                "split_brain_s",
                "recovered",
                "error",
            )
        }
        assert not s["lasting_split_brain"]
    assert data["passed"] and result.returncode == 0
    after = status(inv)
    assert after["healthy"], after["problems"]
    assert [p["firewall"] for p in after["peers"]] == ["loaded"] * len(lab.peers)
