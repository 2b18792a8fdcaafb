"""The firewall: inventory defaults and validation, the rendered rulesets (proxies and the
nodes' NodePort fence), the admin-source check, commit-confirmed helpers and status.

No root and no network here; tests/e2e/test_firewall.py runs `nft -c` on everything
edgekit renders and exercises the firewall in the lab.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import ipaddress
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgekit import firewall, render
from edgekit.deploy import DeployPlan, FirewallAction, _firewall_actions, confirm
from edgekit.deploy.plan import plan_host
from edgekit.facts import (
    FirewallFacts,
    HostFacts,
    LiveFile,
    TableState,
    parse_facts,
    parse_firewall,
)
from edgekit.inventory import Loaded, load_inventory
from edgekit.inventory.load import InventoryError
from edgekit.status import PeerStatus, firewall_state, verdict
from tests.cli import run

DATA = Path(__file__).resolve().parents[1] / "data"
GOOD = sorted((DATA / "good").glob("*.yaml"))
IDS = [p.stem for p in GOOD]
STRONG = "Zq8-vLm3pRt7xW"

BASE: dict[str, Any] = {
    "cluster": "fw-edge",
    "vrrp": {"interface": "eth1"},
    "vips": [{"address": "10.10.0.100/24", "vrid": 51}],
    "peers": [
        {"name": "proxy1", "address": "10.10.0.11"},
        {"name": "proxy2", "address": "10.10.0.12"},
    ],
    "ssh": {"user": "debian", "port": 22},
    "backends": {
        "nodes": [
            {"name": "node1", "address": "10.10.0.21"},
            {"name": "node2", "address": "10.10.0.22", "port": 31443},
        ]
    },
    "services": [
        {"name": "http", "listen": 80, "backend": "nodes", "port": 30080},
        {"name": "https", "listen": 443, "backend": "nodes", "port": 30443},
        {"name": "kubernetes-api", "listen": 6443, "backend": "nodes", "port": 6443},
    ],
    "stats": {"port": 8404, "user": "admin", "password_env": "EDGEKIT_STATS_PASSWORD"},
}


@pytest.fixture(autouse=True)
def _secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", STRONG)
    monkeypatch.setenv("EDGEKIT_VRRP_PASS", "k3Vp9xQ2")
    monkeypatch.delenv(confirm.LOCKOUT_ENV, raising=False)


def load(tmp_path: Path, data: dict[str, Any], name: str = "edge.yaml") -> Loaded:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_inventory(path)


def errors(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, data)
    return info.value.lines


def with_changes(**sections: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(sections)
    return data


def narrowed_api(cidrs: list[str]) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["services"][2]["client_cidrs"] = cidrs
    return data


def ruleset(loaded: Loaded, peer: str | None = None) -> str:
    files = render.render_all(loaded)
    name = peer or next(iter(files))
    return next(f.content for f in files[name] if f.path == firewall.RULESET)


def input_rules(text: str) -> list[str]:
    """The rules of `chain input`, in order, without comments and blank lines."""
    body = text.split("chain input {", 1)[1].split("\n    }\n", 1)[0]
    return [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def set_elements(text: str, name: str) -> list[str]:
    match = re.search(rf"set {name} {{.*?elements = {{ (.*?) }}", text, re.S)
    assert match, name
    return [e.strip() for e in match.group(1).split(",")]


# --- the model: on by default, never "anywhere" by accident -------------------------------


def test_firewall_is_on_when_the_section_is_absent(tmp_path: Path) -> None:
    inv = load(tmp_path, BASE).inventory
    assert inv.firewall.enabled
    assert inv.firewall.admin_cidrs is None
    assert all(s.client_cidrs is None for s in inv.services)
    assert any(
        f.path == firewall.RULESET for f in render.render_peer(load(tmp_path, BASE), "proxy1")
    )


def test_admin_cidrs_default_to_the_vips_subnets_not_anywhere(tmp_path: Path) -> None:
    data = with_changes(
        vips=[{"address": "10.10.0.100/24", "vrid": 51}, {"address": "10.10.0.101/24", "vrid": 52}]
    )
    inv = load(tmp_path, data).inventory
    assert firewall.admin_cidrs(inv) == [ipaddress.ip_network("10.10.0.0/24")]
    assert ipaddress.ip_network("0.0.0.0/0") not in firewall.admin_cidrs(inv)
    rules = ruleset(load(tmp_path, data))
    assert set_elements(rules, "admin4") == ["10.10.0.0/24"]
    assert "0.0.0.0/0" not in rules


def test_anywhere_only_when_written(tmp_path: Path) -> None:
    loaded = load(tmp_path, with_changes(firewall={"admin_cidrs": ["0.0.0.0/0"]}))
    assert set_elements(ruleset(loaded), "admin4") == ["0.0.0.0/0"]


def test_admin_cidrs_are_deduplicated_and_mixed_families_render_both_sets(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        with_changes(
            firewall={
                "admin_cidrs": ["192.0.2.0/24", "192.0.2.7", "198.51.100.9/32", "2001:db8::/48"]
            }
        ),
    )
    text = ruleset(loaded)
    # nftables interval sets refuse overlapping elements: the /32 inside the /24 goes.
    assert set_elements(text, "admin4") == ["192.0.2.0/24", "198.51.100.9"]
    assert set_elements(text, "admin6") == ["2001:db8::/48"]
    rules = input_rules(text)
    assert "ip6 saddr @admin6 tcp dport { 22 } accept" in rules
    assert "ip6 saddr @admin6 tcp dport 8404 accept" in rules


def test_enabled_false_renders_no_firewall(tmp_path: Path) -> None:
    loaded = load(tmp_path, with_changes(firewall={"enabled": False}))
    for files in render.render_all(loaded).values():
        assert not {firewall.RULESET, firewall.UNIT_PATH} & {f.path for f in files}


# --- validation: one line per problem, with its key path ----------------------------------


@pytest.mark.parametrize(
    ("section", "path", "fragment"),
    [
        (
            {"firewall": {"admin_cidrs": ["10.10.0.1/24"]}},
            "firewall.admin_cidrs[0]",
            "host bits set: did you mean 10.10.0.0/24",
        ),
        (
            {"firewall": {"admin_cidrs": ["not-a-net"]}},
            "firewall.admin_cidrs[0]",
            "expected a network such as 10.10.0.0/24",
        ),
        ({"firewall": {"admin_cidrs": [10]}}, "firewall.admin_cidrs[0]", "expected a network"),
        (
            {"firewall": {"admin_cidrs": []}},
            "firewall.admin_cidrs",
            "an empty list would admit nobody to SSH",
        ),
        (
            {"firewall": {"admin_cidr": ["10.10.0.0/24"]}},
            "firewall.admin_cidr",
            "unknown key; did you mean 'admin_cidrs'?",
        ),
        ({"firewall": {"enabled": "yes please"}}, "firewall.enabled", "valid boolean"),
        (
            {"firewall": {"node_allow_cidrs": ["10.244.0.0/33"]}},
            "firewall.node_allow_cidrs[0]",
            "expected a network",
        ),
        (
            {"firewall": {"enabled": False, "admin_cidrs": ["10.10.0.0/24"]}},
            "firewall.admin_cidrs",
            "has no effect with firewall.enabled: false",
        ),
    ],
)
def test_firewall_section_problems_name_their_key(
    tmp_path: Path, section: dict[str, Any], path: str, fragment: str
) -> None:
    lines = errors(tmp_path, with_changes(**section))
    assert len(lines) == 1, lines
    assert f": {path}: " in lines[0] and fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("cidrs", "fragment"),
    [
        ([], "an empty list would admit nobody"),
        (["2001:db8::/32"], "the VIPs are IPv4"),
        (["10.0.0.0/8", "192.168.1.1/16"], "host bits set"),
    ],
)
def test_client_cidrs_problems_name_the_service(
    tmp_path: Path, cidrs: list[str], fragment: str
) -> None:
    lines = errors(tmp_path, narrowed_api(cidrs))
    assert len(lines) == 1, lines
    assert ": services[2].client_cidrs" in lines[0] and fragment in lines[0], lines[0]


def test_client_cidrs_without_a_firewall_are_an_error(tmp_path: Path) -> None:
    data = narrowed_api(["10.0.0.0/8"])
    data["firewall"] = {"enabled": False}
    lines = errors(tmp_path, data)
    assert len(lines) == 1 and ": services[2].client_cidrs: has no effect" in lines[0]


def test_a_service_on_the_ssh_port_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["services"][0]["listen"] = 22
    lines = errors(tmp_path, data)
    assert len(lines) == 1 and ": services[0].listen: same port as ssh.port" in lines[0]


# --- the proxies' ruleset ---------------------------------------------------------------


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_ruleset_is_byte_identical_on_every_peer_and_in_the_manifest(path: Path) -> None:
    loaded = load_inventory(path)
    files = render.render_all(loaded)
    texts = {peer: next(f for f in fs if f.path == firewall.RULESET) for peer, fs in files.items()}
    assert len({f.content for f in texts.values()}) == 1
    peers = render.manifest(loaded, files)["peers"]
    assert isinstance(peers, dict)
    for peer, entries in peers.items():
        entry = next(e for e in entries if e["path"] == firewall.RULESET)
        assert entry["sha256"] == texts[peer].sha256 and entry["mode"] == "0644"


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_ruleset_replaces_only_its_own_table_in_one_transaction(path: Path) -> None:
    text = ruleset(load_inventory(path))
    code = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert code[:3] == ["table inet edgekit", "delete table inet edgekit", "table inet edgekit {"]
    assert "flush ruleset" not in text
    tables = re.findall(r"^\s*(?:table|delete table|flush table)\s+(\S+\s+\S+)", text, re.M)
    assert set(tables) == {"inet edgekit"}


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_ruleset_admits_what_the_inventory_serves_and_drops_and_counts_the_rest(path: Path) -> None:
    loaded = load_inventory(path)
    inv = loaded.inventory
    text = ruleset(loaded)
    rules = input_rules(text)
    assert rules[0] == "type filter hook input priority filter; policy drop;"
    assert rules[1:4] == [
        'iif "lo" accept',
        "ct state established,related accept",
        'ct state invalid counter name "dropped" drop',
    ]
    assert rules[-1] == 'counter name "dropped" drop'
    assert "counter dropped {" in text
    assert sorted(set_elements(text, "peers4")) == sorted(str(p.address) for p in inv.peers)
    assert set_elements(text, "vips4") == [str(v.address.ip) for v in inv.vips]
    # VRRP by number (minimal hosts have no /etc/protocols) and only from the peers.
    vrrp = [r for r in rules if "112" in r]
    assert vrrp == ["ip saddr @peers4 ip protocol 112 accept"]
    ssh = " ".join(str(p) for p in firewall.ssh_ports(inv))
    assert f"ip saddr @admin4 tcp dport {{ {ssh.replace(' ', ', ')} }} accept" in rules
    assert f"ip saddr @admin4 tcp dport {inv.stats.port} accept" in rules
    for svc in inv.services:
        mine = [r for r in rules if r.endswith(f'comment "{svc.name}"')]
        assert mine == [f'ip daddr @vips4 tcp dport {svc.listen} accept comment "{svc.name}"']
    sticky = any(s.sticky for s in inv.services)
    peers_rule = f"ip saddr @peers4 tcp dport {inv.haproxy.peers_port} accept"
    assert (peers_rule in rules) == sticky
    # Nothing else opens a port: every accept names a source set, the VIPs, lo or ICMP.
    for rule in rules[4:-1]:
        assert re.search(r' accept( comment "[a-z0-9-]+")?$', rule), rule
        assert (
            "@peers4" in rule
            or "@admin" in rule
            or "@vips4" in rule
            or "icmp" in rule
            or rule.startswith(("ip6 saddr fe80::/10 udp dport 546", "ip protocol 2 "))
        ), rule


def test_icmp_essentials_are_admitted() -> None:
    text = ruleset(load_inventory(DATA / "good" / "issue-example.yaml"))
    rules = input_rules(text)
    icmp = next(r for r in rules if r.startswith("ip protocol icmp"))
    for kind in ("echo-request", "destination-unreachable", "time-exceeded"):
        assert kind in icmp
    icmp6 = next(r for r in rules if "icmpv6 type" in r)
    for kind in ("packet-too-big", "nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-advert"):
        assert kind in icmp6


def test_multicast_vrrp_also_admits_igmp() -> None:
    multicast = input_rules(ruleset(load_inventory(DATA / "good" / "multicast.yaml")))
    unicast = input_rules(ruleset(load_inventory(DATA / "good" / "issue-example.yaml")))
    assert "ip protocol 2 accept" in multicast and "ip protocol 2 accept" not in unicast


def test_a_narrowed_service_admits_only_its_client_cidrs(tmp_path: Path) -> None:
    loaded = load(tmp_path, narrowed_api(["192.0.2.0/24", "10.10.0.1"]))
    rules = input_rules(ruleset(loaded))
    api = [r for r in rules if 'comment "kubernetes-api"' in r]
    assert api == [
        "ip saddr { 10.10.0.1, 192.0.2.0/24 } ip daddr @vips4 tcp dport 6443 "
        'accept comment "kubernetes-api"'
    ]
    assert 'ip daddr @vips4 tcp dport 80 accept comment "http"' in rules


def test_client_cidrs_of_anywhere_render_without_a_source_match(tmp_path: Path) -> None:
    rules = input_rules(ruleset(load(tmp_path, narrowed_api(["10.0.0.0/8", "0.0.0.0/0"]))))
    assert 'ip daddr @vips4 tcp dport 6443 accept comment "kubernetes-api"' in rules


def test_peer_ssh_ports_are_admitted_from_admin_cidrs(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["peers"][1]["ssh_port"] = 2222
    rules = input_rules(ruleset(load(tmp_path, data)))
    assert "ip saddr @admin4 tcp dport { 22, 2222 } accept" in rules


def test_ruleset_header_hash_ignores_backends_but_follows_services(tmp_path: Path) -> None:
    base = ruleset(load(tmp_path, BASE, "a.yaml"))
    moved = copy.deepcopy(BASE)
    moved["backends"]["nodes"][0]["address"] = "10.10.0.29"
    assert ruleset(load(tmp_path, moved, "b.yaml")) == base  # no firewall reload
    assert ruleset(load(tmp_path, narrowed_api(["10.0.0.0/8"]), "c.yaml")) != base


def test_unit_loads_the_ruleset_at_boot_and_leaves_other_tables_alone(tmp_path: Path) -> None:
    files = render.render_peer(load(tmp_path, BASE), "proxy1")
    unit = next(f for f in files if f.path == firewall.UNIT_PATH)
    lines = unit.content.splitlines()
    assert f"ExecStart=/usr/sbin/nft -f {firewall.RULESET}" in lines
    assert f"ExecReload=/usr/sbin/nft -f {firewall.RULESET}" in lines
    assert "ExecStop=-/usr/sbin/nft delete table inet edgekit" in lines
    assert (
        "WantedBy=sysinit.target" in lines and "Before=network-pre.target shutdown.target" in lines
    )
    assert "After=nftables.service" in lines and "PartOf=nftables.service" in lines
    code = [ln for ln in lines if not ln.startswith("#")]
    assert not any("flush" in ln for ln in code)
    assert unit.mode == 0o644 and not unit.secret


# --- the nodes' NodePort fence ------------------------------------------------------------


def test_fence_admits_the_proxies_to_the_backend_ports_only(tmp_path: Path) -> None:
    loaded = load(tmp_path, BASE)
    fence, readme = render.render_nodes(loaded)
    assert fence.path == "/edgekit-nodeport-fence.nft" and readme.path == "/README.md"
    text = fence.content
    assert set_elements(text, "fenced_ports") == ["6443", "30080", "30443", "31443"]
    assert set_elements(text, "allowed4") == ["10.10.0.11", "10.10.0.12", "10.10.0.100"]
    assert "allowed6" not in text
    code = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert code[:3] == [
        "table inet edgekit_nodeport_fence",
        "delete table inet edgekit_nodeport_fence",
        "table inet edgekit_nodeport_fence {",
    ]
    # Before kube-proxy's DNAT (priority dstnat = -100) rewrites the NodePort.
    assert "type filter hook prerouting priority mangle; policy accept;" in code
    assert "tcp dport @fenced_ports fib daddr type local jump fence" in code
    fence_chain = code[code.index("chain fence {") + 1 :]
    assert fence_chain[:3] == [
        "ct state established,related accept",
        "ip saddr @allowed4 accept",
        'counter name "refused" drop',
    ]
    assert "flush ruleset" not in text


def test_fence_readme_warns_when_the_api_is_fenced_without_cluster_networks(tmp_path: Path) -> None:
    _, readme = render.render_nodes(load(tmp_path, BASE, "a.yaml"))
    assert "Port 6443 (the API) is fenced too" in readme.content and "(now empty)" in readme.content
    data = with_changes(firewall={"node_allow_cidrs": ["10.244.0.0/16", "fd00:10::/64"]})
    fence, readme = render.render_nodes(load(tmp_path, data, "b.yaml"))
    assert "(now: 10.244.0.0/16, fd00:10::/64)" in readme.content
    assert "10.244.0.0/16" in set_elements(fence.content, "allowed4")
    assert set_elements(fence.content, "allowed6") == ["fd00:10::/64"]
    assert "ip6 saddr @allowed6 accept" in fence.content
    no_api = copy.deepcopy(BASE)
    no_api["services"] = no_api["services"][:2]
    _, readme = render.render_nodes(load(tmp_path, no_api, "c.yaml"))
    assert "6443" not in readme.content


def test_render_writes_the_node_fence_and_lists_it_in_the_manifest(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(BASE))
    out = tmp_path / "out"
    proc = run("render", "-i", str(path), "-o", str(out), env={"EDGEKIT_STATS_PASSWORD": STRONG})
    assert proc.exit_code == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["peers"]) == {"proxy1", "proxy2"}
    nodes = manifest["nodes"]
    assert nodes["dir"] == "_nodes"
    for entry in nodes["files"]:
        written = out / "_nodes" / entry["path"].lstrip("/")
        assert hashlib.sha256(written.read_bytes()).hexdigest() == entry["sha256"]
    assert {e["path"] for e in nodes["files"]} == {"/edgekit-nodeport-fence.nft", "/README.md"}
    for peer in ("proxy1", "proxy2"):
        assert (out / peer / firewall.RULESET.lstrip("/")).is_file()


# --- the admin-source check (deploy refuses before any change) -----------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10.213.0.1 50022 10.213.0.11 22", ("10.213.0.1", 22)),
        ("::ffff:10.213.0.1 50022 ::ffff:10.213.0.11 2222", ("10.213.0.1", 2222)),
        ("2001:db8::5 50022 2001:db8::11 22", ("2001:db8::5", 22)),
        ("", None),
        ("10.213.0.1 50022 10.213.0.11", None),
        ("nonsense 1 2 x", None),
    ],
)
def test_ssh_connection_parsing(text: str, want: tuple[str, int] | None) -> None:
    assert firewall.parse_ssh_connection(text) == want


def test_admin_refusal_logic(tmp_path: Path) -> None:
    inv = load(tmp_path, BASE, "a.yaml").inventory
    assert firewall.admin_refusal(inv, "10.10.0.1", 22) is None
    outside = firewall.admin_refusal(inv, "192.0.2.1", 22)
    assert outside and "192.0.2.1" in outside and "default: the VIPs' subnets" in outside
    port = firewall.admin_refusal(inv, "10.10.0.1", 2200)
    assert port and "port 2200" in port
    narrowed = load(
        tmp_path, with_changes(firewall={"admin_cidrs": ["10.10.0.1/32"]}), "b.yaml"
    ).inventory
    assert firewall.admin_refusal(narrowed, "10.10.0.1", 22) is None
    refused = firewall.admin_refusal(narrowed, "10.10.0.2", 22)
    assert refused and "outside firewall.admin_cidrs 10.10.0.1/32" in refused


def test_allows_client_follows_client_cidrs(tmp_path: Path) -> None:
    inv = load(tmp_path, narrowed_api(["10.10.0.1/32"])).inventory
    http, _, api = inv.services
    assert firewall.allows_client(http, "203.0.113.9")
    assert firewall.allows_client(api, "10.10.0.1")
    assert not firewall.allows_client(api, "10.10.0.2")


# --- commit confirmed: the helpers the host runs ------------------------------------------


def test_test_lockout_drops_this_machine_before_established_connections(tmp_path: Path) -> None:
    files = render.render_peer(load(tmp_path, BASE), "proxy1")
    changed = confirm.with_test_lockout(files, "10.10.0.1")
    before = next(f for f in files if f.path == firewall.RULESET).content
    after = next(f for f in changed if f.path == firewall.RULESET).content
    rules = input_rules(after)
    assert rules[1].startswith("ip saddr 10.10.0.1 drop") and confirm.LOCKOUT_ENV in rules[1]
    assert rules[2:] == input_rules(before)[1:]
    others = [f for f in changed if f.path != firewall.RULESET]
    assert others == [f for f in files if f.path != firewall.RULESET]


def test_lockout_is_off_unless_the_test_variable_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not confirm.test_lockout_requested()
    monkeypatch.setenv(confirm.LOCKOUT_ENV, "1")
    assert confirm.test_lockout_requested()


def test_arm_script_saves_the_table_and_starts_a_timer_that_restores_everything() -> None:
    script = confirm.arm_script("echo restore-files-here", window=30)
    assert "nft list table inet edgekit >" in script
    assert "printf 'table inet edgekit\\ndelete table inet edgekit\\n'" in script
    assert "systemd-run --quiet --unit edgekit-fw-rollback" in script
    assert "--on-active=30s --timer-property=AccuracySec=100ms" in script
    assert "setsid sh -c 'sleep 30; exec /bin/sh" in script  # without systemd
    rollback = confirm.rollback_script("echo restore-files-here")
    order = [
        rollback.index(s)
        for s in (
            f"nft -f {confirm.PREVIOUS}",
            "echo restore-files-here",
            "systemctl daemon-reload",
            "firewall-rolled-back",
        )
    ]
    assert order == sorted(order)  # the table first: SSH comes back before anything else
    cancel = confirm.cancel_script()
    assert "systemctl stop edgekit-fw-rollback.timer" in cancel and "cancelled" in cancel


def test_arm_script_is_valid_shell() -> None:
    script = confirm.arm_script('set -u\nB=/x\n[ -d "$B" ] || exit 0\n')
    proc = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    for text in (
        confirm.cancel_script(),
        confirm.removal_command(),
        confirm.restore_table_command(),
    ):
        assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0


@pytest.mark.parametrize(
    ("fw", "want"),
    [
        (FirewallFacts(TableState.MATCH, "h", "active", "enabled"), False),
        (FirewallFacts(TableState.LOADED, "h", "active", "enabled"), False),  # not comparable: hash
        (FirewallFacts(TableState.LOADED, "other", "active", "enabled"), True),
        (FirewallFacts(TableState.DIFFERS, "h", "active", "enabled"), True),
        (FirewallFacts(TableState.UNLOADED, "", "active", "enabled"), True),
        (FirewallFacts(TableState.MATCH, "h", "inactive", "enabled"), True),
        (FirewallFacts(TableState.MATCH, "h", "active", "disabled"), True),
        (FirewallFacts(TableState.NO_NFT, "", "", ""), True),
    ],
)
def test_deploy_reloads_a_table_that_is_not_what_the_file_loads(
    fw: FirewallFacts, want: bool
) -> None:
    assert confirm.wants_load(fw, "h") is want


# --- facts and status ---------------------------------------------------------------------


def test_firewall_facts_parse() -> None:
    fw = parse_firewall(
        ["unit active enabled", "table match", "comment abc", "rolledback 2026-01-01T00:00:00Z"]
    )
    assert fw == FirewallFacts(TableState.MATCH, "abc", "active", "enabled", "2026-01-01T00:00:00Z")
    assert fw.present
    absent = parse_firewall(["unit inactive ", "table unloaded"])
    assert absent.unit_enabled == "" and not absent.present
    facts = parse_facts("@os\ndebian 12\n@firewall\nunit active enabled\ntable differs\n@end\n")
    assert facts.firewall.table == "differs"
    assert parse_facts("@firewall\ntable no-nft\n@end\n").firewall.table == "no-nft"


def test_gather_compares_the_loaded_table_only_when_the_ruleset_is_wanted() -> None:
    from edgekit.facts import gather_command

    with_file = gather_command([firewall.RULESET])
    assert "unshare --net" in with_file and "nft -s list table inet edgekit" in with_file
    assert "unshare --net" not in gather_command([])
    assert subprocess.run(["sh", "-n"], input=with_file, text=True).returncode == 0


@pytest.mark.parametrize(
    ("fw", "enabled", "state"),
    [
        (FirewallFacts(TableState.MATCH, "", "active", "enabled"), True, "loaded"),
        (
            FirewallFacts(TableState.DIFFERS, "", "active", "enabled"),
            True,
            "differs from /etc/edgekit/firewall.nft",
        ),
        (
            FirewallFacts(TableState.UNLOADED, "", "inactive", "enabled", "T1"),
            True,
            "not loaded (host rolled back at T1)",
        ),
        (
            FirewallFacts(TableState.MATCH, "", "active", "disabled"),
            True,
            "loaded, but edgekit-firewall.service is not enabled (lost at reboot)",
        ),
        (FirewallFacts(TableState.NO_NFT), True, "nft missing"),
        (FirewallFacts(TableState.UNLOADED), False, "off"),
        (
            FirewallFacts(TableState.MATCH, "", "active", "enabled"),
            False,
            "off (but the edgekit table is loaded)",
        ),
    ],
)
def test_status_says_whether_the_ruleset_is_loaded_and_matches(
    tmp_path: Path, fw: FirewallFacts, enabled: bool, state: str
) -> None:
    data = with_changes(firewall={"enabled": enabled})
    loaded = load(tmp_path, data)
    assert firewall_state(loaded, fw) == state
    peers = [
        PeerStatus(
            "proxy1",
            True,
            haproxy_up=True,
            keepalived_up=True,
            vrrp={"VI_51": "MASTER"},
            vips=["10.10.0.100"],
            firewall=state,
        ),
        PeerStatus(
            "proxy2",
            True,
            haproxy_up=True,
            keepalived_up=True,
            vrrp={"VI_51": "BACKUP"},
            firewall="loaded" if enabled else "off",
        ),
    ]
    _, problems = verdict(loaded, peers)
    if state in ("loaded", "off"):
        assert problems == []
    else:
        assert problems == [f"proxy1: firewall {state}"]


def test_status_trusts_the_table_hash_when_it_cannot_compare_rules(tmp_path: Path) -> None:
    loaded = load(tmp_path, BASE)
    good = render.firewall_hash(loaded.inventory)
    assert (
        firewall_state(loaded, FirewallFacts(TableState.LOADED, good, "active", "enabled"))
        == "loaded"
    )
    assert (
        firewall_state(loaded, FirewallFacts(TableState.LOADED, "0" * 64, "active", "enabled"))
        == "loaded from another inventory"
    )


# --- deploy's firewall plan: load what differs, remove what is switched off ---------------


def _live(files: list[Any], fw: FirewallFacts) -> HostFacts:
    facts = HostFacts(
        os_id="debian",
        packages={"haproxy": True, "keepalived": True},
        units={"haproxy": ("active", "enabled"), "keepalived": ("active", "enabled")},
    )
    facts.files = {f.path: LiveFile(f.path, f.content, f.mode, f.owner) for f in files}
    facts.firewall = fw
    return facts


def _plans(
    loaded: Loaded, fw: FirewallFacts, edit: str | None = None
) -> tuple[dict[str, FirewallAction], DeployPlan]:
    files = render.render_peer(loaded, "proxy1")
    live = [
        dataclasses.replace(f, content=f.content + "# edited\n") if f.path == edit else f
        for f in files
    ]
    facts = {"proxy1": _live(live, fw)}
    plans = {"proxy1": plan_host("proxy1", files, facts["proxy1"])}
    plan = DeployPlan(
        loaded,
        {"proxy1": files},
        facts,
        plans,
        _firewall_actions(loaded, plans, facts, lambda _m: None),
    )
    return plan.firewall, plan


def test_deploy_leaves_a_matching_firewall_alone(tmp_path: Path) -> None:
    actions, report = _plans(
        load(tmp_path, BASE), FirewallFacts(TableState.MATCH, "", "active", "enabled")
    )
    assert actions == {} and not report.pending


def test_deploy_loads_a_table_that_differs_although_the_file_is_unchanged(tmp_path: Path) -> None:
    actions, report = _plans(
        load(tmp_path, BASE), FirewallFacts(TableState.DIFFERS, "", "active", "enabled")
    )
    assert actions == {"proxy1": "load"} and report.pending
    assert report.hosts["proxy1"].start_units == [firewall.UNIT]
    assert report.hosts["proxy1"].changes == []


def test_deploy_loads_a_changed_ruleset(tmp_path: Path) -> None:
    actions, report = _plans(
        load(tmp_path, BASE),
        FirewallFacts(TableState.MATCH, "", "active", "enabled"),
        edit=firewall.RULESET,
    )
    assert actions == {"proxy1": "load"}
    assert report.hosts["proxy1"].paths() == [firewall.RULESET]


def test_deploy_removes_the_firewall_when_it_is_switched_off(tmp_path: Path) -> None:
    off = load(tmp_path, with_changes(firewall={"enabled": False}))
    actions, report = _plans(off, FirewallFacts(TableState.MATCH, "", "active", "enabled"))
    assert actions == {"proxy1": "remove"} and report.pending
    actions, report = _plans(off, FirewallFacts(TableState.UNLOADED, "", "inactive", ""))
    assert actions == {} and not report.pending
