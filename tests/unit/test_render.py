"""Rendering: identical shared files on every peer, deterministic output, safe configs.

Every good inventory under tests/data/good is rendered and its files checked as text;
tests/e2e/test_real_binaries.py checks the same files with the real programs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgekit import firewall, render
from edgekit.inventory import Loaded, load_inventory
from edgekit.render import RenderedFile
from tests.cli import Result, run

DATA = Path(__file__).resolve().parents[1] / "data"
GOOD = sorted((DATA / "good").glob("*.yaml"))
IDS = [p.stem for p in GOOD]
STRONG = "Zq8-vLm3pRt7xW"
VRRP_PASS = "k3Vp9xQ2"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
DEFAULT_HAPROXY = "/etc/default/haproxy"
PER_PEER = {DEFAULT_HAPROXY, "/etc/default/keepalived"}


@pytest.fixture(autouse=True)
def _secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", STRONG)
    monkeypatch.setenv("EDGEKIT_VRRP_PASS", VRRP_PASS)


def load(path: Path) -> Loaded:
    return load_inventory(path)


def by_path(files: list[RenderedFile]) -> dict[str, RenderedFile]:
    return {f.path: f for f in files}


def rendered(path: Path) -> tuple[Loaded, dict[str, dict[str, RenderedFile]]]:
    loaded = load(path)
    return loaded, {peer: by_path(fs) for peer, fs in render.render_all(loaded).items()}


def stats_password(loaded: Loaded) -> str:
    return loaded.secrets.stats_password


# --- parsers for the rendered text ----------------------------------------------------------


def resolve(conf: str, peer: str) -> list[str]:
    """keepalived's config-id filter: keep plain lines, `@NAME` lines for NAME == peer and
    `@^NAME` lines for NAME != peer (prefix removed)."""
    out = []
    for line in conf.splitlines():
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        match = re.match(r"@(\^?)([^\s]+)\s+(.*)$", stripped)
        if not match:
            out.append(line)
            continue
        negate, name, rest = match.groups()
        if (name == peer) != bool(negate):
            out.append(indent + rest)
    return out


def test_resolver_applies_config_id_lines() -> None:
    conf = "a\n  @p1 x 1\n  @p2 x 2\n  @^p1 y 1\n  @^p2 y 2\n"
    assert resolve(conf, "p1") == ["a", "  x 1", "  y 2"]
    assert resolve(conf, "p2") == ["a", "  x 2", "  y 1"]


def blocks(lines: list[str], keyword: str) -> dict[str, list[str]]:
    """Top-level keepalived blocks `keyword NAME {` ... `}`: name -> stripped body lines."""
    found: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        words = lines[i].split()
        if words[:1] == [keyword] and lines[i].rstrip().endswith("{"):
            name = words[1] if len(words) > 2 else ""
            depth, body = 1, []
            i += 1
            while depth:
                text = lines[i].strip()
                depth += text.count("{") - text.count("}")
                if depth:
                    body.append(text)
                i += 1
            found[name] = body
        else:
            i += 1
    return found


def inner(body: list[str], keyword: str) -> list[str]:
    """The lines of a nested `keyword {` ... `}` block inside a block body."""
    start = body.index(f"{keyword} {{")
    end = body.index("}", start)
    return body[start + 1 : end]


def sections(cfg: str) -> dict[str, list[str]]:
    """haproxy.cfg sections ('global', 'frontend http', ...) -> stripped body lines."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in cfg.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            if line.startswith("."):  # .if/.endif conditional blocks
                current = None
                continue
            current = found.setdefault(line.strip(), [])
        elif current is not None:
            current.append(line.strip())
    return found


def test_section_parser_reads_bodies() -> None:
    cfg = "# c\n.if x\n    .alert y\n.endif\nglobal\n    a 1\n\nfrontend f\n    bind b\n"
    assert sections(cfg) == {"global": ["a 1"], "frontend f": ["bind b"]}


# --- identical and deterministic -----------------------------------------------------------


def test_there_are_enough_good_inventories() -> None:
    assert len(GOOD) >= 6


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_shared_files_are_byte_identical_across_peers(path: Path) -> None:
    loaded, files = rendered(path)
    peers = list(files)
    assert len(peers) == len(loaded.inventory.peers) >= 2
    first = files[peers[0]]
    assert HAPROXY_CFG in first and KEEPALIVED_CONF in first
    for peer in peers[1:]:
        assert set(files[peer]) == set(first)
        for file_path, f in first.items():
            if file_path not in PER_PEER:
                assert files[peer][file_path].content == f.content, (peer, file_path)
                assert files[peer][file_path].sha256 == f.sha256


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_per_peer_files_carry_each_peers_own_values(path: Path) -> None:
    loaded, files = rendered(path)
    for peer in loaded.inventory.peers:
        env = files[peer.name][DEFAULT_HAPROXY].content
        assert f"EDGEKIT_PEER_NAME={peer.name}\n" in env
        assert f"EDGEKIT_PEER_ADDR={peer.address}\n" in env
        assert f'EDGEKIT_STATS_PASSWORD="{stats_password(loaded)}"\n' in env
        kd = files[peer.name]["/etc/default/keepalived"].content
        assert f'DAEMON_ARGS="--config-id {peer.name}"' in kd


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_output_is_stable_across_runs(path: Path) -> None:
    a, b = load(path), load(path)
    first, second = render.render_all(a), render.render_all(b)
    assert first == second
    assert render.manifest(a, first) == render.manifest(b, second)


def _reverse_mappings(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _reverse_mappings(v) for k, v in reversed(list(node.items()))}
    if isinstance(node, list):
        return [_reverse_mappings(v) for v in node]
    return node


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_output_is_stable_across_mapping_order(path: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    reordered = _reverse_mappings(data)
    assert list(reordered) != list(data)
    if (path.parent / "secrets").is_dir():
        shutil.copytree(path.parent / "secrets", tmp_path / "secrets")
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump(reordered, sort_keys=False))
    original, moved = load(path), load(copy)
    assert original.source_sha256 != moved.source_sha256  # the text did change
    assert render.inventory_hash(original.inventory) == render.inventory_hash(moved.inventory)
    assert render.render_all(original) == render.render_all(moved)


HEADER_HASH = re.compile(r"sha256:([0-9a-f]{64})")


def header_hash(content: str, lines: int = 3) -> str:
    match = HEADER_HASH.search("\n".join(content.splitlines()[:lines]))
    assert match, content[:300]
    return match.group(1)


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_each_header_carries_the_hash_of_its_own_file(path: Path) -> None:
    """sha256 of the file with that hash (and the VRRP password) left out: it changes only
    when the file does, and never gives away a secret."""
    loaded, files = rendered(path)
    nodes = by_path(render.render_nodes(loaded))
    fence = nodes[f"/{firewall.FENCE_FILE}"]
    for peer_files in [*files.values(), {fence.path: fence}]:
        for name, f in peer_files.items():
            if name not in (HAPROXY_CFG, KEEPALIVED_CONF, firewall.RULESET, fence.path):
                continue
            digest = header_hash(f.content)
            bare = f.content.replace(digest, "")
            if loaded.secrets.vrrp_auth:
                bare = bare.replace(f'"{loaded.secrets.vrrp_auth}"', '""')
            assert hashlib.sha256(bare.encode()).hexdigest() == digest, name
    ruleset = next(iter(files.values()))[firewall.RULESET].content
    digest = header_hash(ruleset)
    assert f'comment "edgekit inventory sha256:{digest}"' in ruleset
    # deploy and status compare the loaded table's comment with this.
    assert render.firewall_hash(loaded.inventory) == digest
    manifest = render.manifest(loaded, render.render_all(loaded))
    assert manifest["inventory_sha256"] == render.inventory_hash(loaded.inventory)


def test_keepalived_header_does_not_hash_the_vrrp_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = DATA / "good" / "vrrp2-auth.yaml"
    old = rendered(path)[1]["proxy1"][KEEPALIVED_CONF].content
    monkeypatch.setenv("EDGEKIT_VRRP_PASS", "n3wPass9")
    new = rendered(path)[1]["proxy1"][KEEPALIVED_CONF].content
    assert old != new and header_hash(old) == header_hash(new)


def test_inventory_hash_changes_with_the_inventory(tmp_path: Path) -> None:
    path = DATA / "good" / "issue-example.yaml"
    changed = tmp_path / path.name
    changed.write_text(path.read_text().replace("port: 30080", "port: 30081"))
    assert changed.read_text() != path.read_text()
    before, after = load(path), load(changed)
    assert render.inventory_hash(before.inventory) != render.inventory_hash(after.inventory)
    old, new = render.render_all(before)["proxy1"], render.render_all(after)["proxy1"]
    assert by_path(old)[HAPROXY_CFG].content != by_path(new)[HAPROXY_CFG].content
    # A backend port is not keepalived's business: its file (and its hash) stay the same.
    assert by_path(old)[KEEPALIVED_CONF].content == by_path(new)[KEEPALIVED_CONF].content


def test_keepalived_conf_changes_when_a_vip_changes(tmp_path: Path) -> None:
    path = DATA / "good" / "issue-example.yaml"
    changed = tmp_path / path.name
    changed.write_text(path.read_text().replace("vrid: 51", "vrid: 52"))
    before, after = load(path), load(changed)
    old, new = render.render_all(before)["proxy1"], render.render_all(after)["proxy1"]
    old_header = by_path(old)[KEEPALIVED_CONF].content.splitlines()[1]
    new_header = by_path(new)[KEEPALIVED_CONF].content.splitlines()[1]
    assert old_header != new_header


def test_rendered_text_has_no_timestamps() -> None:
    for path in GOOD:
        for fs in render.render_all(load(path)).values():
            for f in fs:
                assert not re.search(r"\b20\d\d-\d\d-\d\d\b|\b\d\d:\d\d:\d\d\b", f.content), f.path


# --- manifest and secrets ------------------------------------------------------------------


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_manifest_lists_every_file_with_matching_sha256(path: Path) -> None:
    loaded = load(path)
    files = render.render_all(loaded)
    manifest = render.manifest(loaded, files)
    assert manifest["cluster"] == loaded.inventory.cluster
    peers = manifest["peers"]
    assert isinstance(peers, dict) and set(peers) == set(files)
    for peer, fs in files.items():
        entries = {e["path"]: e for e in peers[peer]}
        assert set(entries) == {f.path for f in fs}
        for f in fs:
            entry = entries[f.path]
            assert {"path", "mode", "owner", "sha256", "service"} <= set(entry)
            if f.secret:  # no hash to test password guesses against
                assert entry["sha256"] is None and entry["secret"] is True
            else:
                assert entry["sha256"] == hashlib.sha256(f.content.encode()).hexdigest()
            assert int(entry["mode"], 8) == f.mode
            assert entry["owner"] == "root:root"
            assert entry["service"] in {"haproxy", "keepalived", "systemd", "sysctl", "nftables"}
    json.dumps(manifest)  # serialisable


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_secret_files_are_private(path: Path) -> None:
    _, files = rendered(path)
    for peer_files in files.values():
        assert peer_files[DEFAULT_HAPROXY].secret
        assert peer_files[DEFAULT_HAPROXY].mode == 0o600
        for f in peer_files.values():
            if f.secret:
                assert f.mode & 0o077 in (0, 0o040), (f.path, oct(f.mode))  # 0600 or 0640
            assert not f.mode & 0o002, f.path  # nothing world-writable


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_stats_password_appears_only_in_the_private_env_file(path: Path) -> None:
    loaded, files = rendered(path)
    password = stats_password(loaded)
    for peer_files in files.values():
        holders = [f.path for f in peer_files.values() if password in f.content]
        assert holders == [DEFAULT_HAPROXY]
    manifest = render.manifest(loaded, render.render_all(loaded))
    assert password not in json.dumps(manifest)


def test_vrrp_auth_pass_makes_keepalived_conf_private() -> None:
    _, files = rendered(DATA / "good" / "vrrp2-auth.yaml")
    for peer_files in files.values():
        conf = peer_files[KEEPALIVED_CONF]
        assert VRRP_PASS in conf.content
        assert conf.secret and conf.mode == 0o600
        others = [f.path for f in peer_files.values() if VRRP_PASS in f.content]
        assert others == [KEEPALIVED_CONF]


# --- haproxy.cfg ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_every_server_line_has_a_health_check(path: Path) -> None:
    loaded, files = rendered(path)
    cfg = next(iter(files.values()))[HAPROXY_CFG].content
    servers = [ln.split() for ln in cfg.splitlines() if ln.strip().startswith("server ")]
    inv = loaded.inventory
    # The services' servers, and edgekit's exporter behind the stats page.
    assert len(servers) == sum(len(inv.backends[s.backend]) for s in inv.services) + 1
    assert sections(cfg)["backend edgekit_exporter"][-1].split()[:2] == ["server", "exporter"]
    for words in servers:
        assert "check" in words, words


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_stats_never_binds_a_vip(path: Path) -> None:
    loaded, files = rendered(path)
    inv = loaded.inventory
    secs = sections(next(iter(files.values()))[HAPROXY_CFG].content)
    binds = [ln for ln in secs["frontend stats"] if ln.startswith("bind ")]
    assert binds == [
        f'bind "${{EDGEKIT_PEER_ADDR}}:{inv.stats.port}"',
        f"bind 127.0.0.1:{inv.stats.port}",
    ]
    for vip in inv.vips:
        assert not any(str(vip.address.ip) in b for b in binds)
    body = "\n".join(secs["frontend stats"])
    assert "http_auth(edgekit_stats)" in body
    assert "prometheus-exporter" in body
    assert f"stats uri {inv.stats.uri}" in body


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_services_bind_every_vip_in_tcp_mode(path: Path) -> None:
    loaded, files = rendered(path)
    inv = loaded.inventory
    secs = sections(next(iter(files.values()))[HAPROXY_CFG].content)
    assert "mode tcp" in secs["defaults"]
    for svc in inv.services:
        binds = [ln for ln in secs[f"frontend {svc.name}"] if ln.startswith("bind ")]
        assert binds == [f"bind {vip.address.ip}:{svc.listen}" for vip in inv.vips]
        assert f"default_backend {svc.name}" in secs[f"frontend {svc.name}"]
        assert f"balance {svc.balance}" in secs[f"backend {svc.name}"]


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_haproxy_refuses_to_start_without_its_environment(path: Path) -> None:
    _, files = rendered(path)
    cfg = next(iter(files.values()))[HAPROXY_CFG].content
    for var in ("EDGEKIT_PEER_NAME", "EDGEKIT_PEER_ADDR", "EDGEKIT_STATS_PASSWORD"):
        assert re.search(rf"^\.if !defined\({var}\)\n\s+\.alert ", cfg, re.M), var


def test_api_service_gets_long_timeouts() -> None:
    _, files = rendered(DATA / "good" / "issue-example.yaml")
    secs = sections(files["proxy1"][HAPROXY_CFG].content)
    assert "timeout client 1h" in secs["frontend kubernetes-api"]
    assert {"timeout server 1h", "timeout tunnel 1h"} <= set(secs["backend kubernetes-api"])
    assert "timeout tunnel 1h" not in secs["backend http"]


def test_sticky_services_replicate_their_stick_table_between_peers() -> None:
    loaded, files = rendered(DATA / "good" / "sticky.yaml")
    inv = loaded.inventory
    secs = sections(files["lb1"][HAPROXY_CFG].content)
    assert 'localpeer "${EDGEKIT_PEER_NAME}"' in secs["global"]
    assert secs["peers edgekit"] == [
        f"peer {p.name} {p.address}:{inv.haproxy.peers_port}" for p in inv.peers
    ]
    for svc in inv.services:
        body = secs[f"backend {svc.name}"]
        sticky = [ln for ln in body if ln.startswith("stick")]
        if svc.sticky:
            assert sticky == [
                "stick-table type ip size 200k expire 30m peers edgekit",
                "stick on src",
            ]
        else:
            assert sticky == []


def test_non_sticky_inventory_has_no_peers_section() -> None:
    _, files = rendered(DATA / "good" / "issue-example.yaml")
    cfg = files["proxy1"][HAPROXY_CFG].content
    assert "localpeer" not in cfg and "\npeers " not in cfg


def test_proxy_protocol_v2_is_sent_to_every_server() -> None:
    loaded, files = rendered(DATA / "good" / "proxy-protocol.yaml")
    secs = sections(files["proxy1"][HAPROXY_CFG].content)
    for svc in loaded.inventory.services:
        servers = [ln.split() for ln in secs[f"backend {svc.name}"] if ln.startswith("server ")]
        assert servers
        for words in servers:
            assert "send-proxy-v2" in words and "check-send-proxy" in words
    # and a per-server port overrides the service port
    assert any(ln.startswith("server ing2 172.16.6.12:31443 ") for ln in secs["backend https"])


def test_http_and_https_health_checks_use_path_and_status() -> None:
    _, files = rendered(DATA / "good" / "health-checks.yaml")
    secs = sections(files["proxy1"][HAPROXY_CFG].content)
    http = secs["backend http"]
    assert "option httpchk" in http
    assert "http-check send meth GET uri /healthz hdr Host ingress.example.org" in http
    assert "http-check expect status 204" in http
    assert all("inter 1s fall 2 rise 3" in ln for ln in http if ln.startswith("server "))
    assert all("check-ssl" not in ln for ln in http)
    api = secs["backend kubernetes-api"]
    assert "http-check send meth GET uri /readyz" in api
    assert "http-check expect status 200" in api
    assert all("check-ssl verify none" in ln for ln in api if ln.startswith("server "))
    assert not any("httpchk" in ln for ln in secs["backend tcp-only"])
    assert "option log-health-checks" in secs["backend tcp-only"]
    assert "stats uri /haproxy_stats" in secs["frontend stats"]


# --- keepalived.conf -----------------------------------------------------------------------


def _keepalived(path: Path) -> tuple[Loaded, str]:
    loaded, files = rendered(path)
    return loaded, next(iter(files.values()))[KEEPALIVED_CONF].content


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_resolved_keepalived_conf_is_complete_for_every_peer(path: Path) -> None:
    loaded, conf = _keepalived(path)
    inv = loaded.inventory
    priorities: dict[int, dict[str, int]] = {}
    for peer in inv.peers:
        lines = resolve(conf, peer.name)
        assert not any(ln.lstrip().startswith("@") for ln in lines)
        assert f"router_id {peer.name}" in blocks(lines, "global_defs")[""]
        instances = blocks(lines, "vrrp_instance")
        assert set(instances) == {f"VI_{v.vrid}" for v in inv.vips}
        for vip in inv.vips:
            body = instances[f"VI_{vip.vrid}"]
            want_if = peer.interface or vip.interface or inv.vrrp.interface
            assert [ln for ln in body if ln.startswith("interface ")] == [f"interface {want_if}"]
            prio = [ln for ln in body if ln.startswith("priority ")]
            assert len(prio) == 1
            value = int(prio[0].split()[1])
            assert 1 <= value <= 254
            priorities.setdefault(vip.vrid, {})[peer.name] = value
            assert f"virtual_router_id {vip.vrid}" in body
            assert f"version {inv.vrrp.version}" in body
            assert inner(body, "virtual_ipaddress") == [str(vip.address)]
    for vrid, by_peer in priorities.items():
        assert len(set(by_peer.values())) == len(inv.peers), (vrid, by_peer)  # no ties
        vip = next(v for v in inv.vips if v.vrid == vrid)
        if vip.preferred:
            assert max(by_peer, key=by_peer.__getitem__) == vip.preferred


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_own_address_is_never_in_own_unicast_peer_list(path: Path) -> None:
    loaded, conf = _keepalived(path)
    inv = loaded.inventory
    for peer in inv.peers:
        lines = resolve(conf, peer.name)
        for body in blocks(lines, "vrrp_instance").values():
            if not inv.vrrp.unicast:
                assert not any(ln.startswith(("unicast_peer", "unicast_src_ip")) for ln in body)
                continue
            listed = inner(body, "unicast_peer")
            assert str(peer.address) not in listed
            assert sorted(listed) == sorted(str(p.address) for p in inv.peers if p != peer)
            assert f"unicast_src_ip {peer.address}" in body


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_unicast_mode_faults_without_peers(path: Path) -> None:
    loaded, conf = _keepalived(path)
    for body in blocks(resolve(conf, loaded.inventory.peers[0].name), "vrrp_instance").values():
        assert ("unicast_fault_no_peer" in body) == loaded.inventory.vrrp.unicast


def test_multicast_inventory_renders_no_unicast_lines() -> None:
    loaded, conf = _keepalived(DATA / "good" / "multicast.yaml")
    assert not loaded.inventory.vrrp.unicast
    assert "unicast" not in conf


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_every_instance_starts_as_backup(path: Path) -> None:
    loaded, conf = _keepalived(path)
    for peer in loaded.inventory.peers:
        instances = blocks(resolve(conf, peer.name), "vrrp_instance")
        assert instances
        for body in instances.values():
            assert [ln for ln in body if ln.startswith("state ")] == ["state BACKUP"]
            assert ("nopreempt" in body) == (not loaded.inventory.vrrp.preempt)


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_haproxy_track_script_faults_instead_of_nudging_priority(path: Path) -> None:
    loaded, conf = _keepalived(path)
    lines = resolve(conf, loaded.inventory.peers[0].name)
    script = blocks(lines, "vrrp_script")["chk_haproxy"]
    assert not any(ln.startswith("weight") for ln in script)  # no weight: FAULT
    assert "interval 1" in script and "fall 1" in script  # detected within a second
    assert f'script "{render.CHECK_SCRIPT}"' in script
    for body in blocks(lines, "vrrp_instance").values():
        assert inner(body, "track_script") == ["chk_haproxy"]
        assert not any("weight" in ln for ln in body)


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_global_defs_enable_script_security_and_realtime_priority(path: Path) -> None:
    _, conf = _keepalived(path)
    gdefs = blocks(resolve(conf, "nobody"), "global_defs")[""]
    assert "enable_script_security" in gdefs
    assert "max_auto_priority" in gdefs
    assert any(ln.startswith("vrrp_garp_master_refresh ") for ln in gdefs)


def test_check_script_avoids_pidof() -> None:
    _, files = rendered(GOOD[0])
    script = next(iter(files.values()))[render.CHECK_SCRIPT]
    assert script.mode == 0o755 and script.content.startswith("#!/bin/sh\n")
    code = [ln for ln in script.content.splitlines() if ln and not ln.startswith("#")]
    assert code and not any("pidof" in ln for ln in code)  # killall5 on Debian


def test_per_peer_interface_override() -> None:
    _, conf = _keepalived(DATA / "good" / "interface-override.yaml")
    one = blocks(resolve(conf, "proxy1"), "vrrp_instance")["VI_70"]
    two = blocks(resolve(conf, "proxy2"), "vrrp_instance")["VI_70"]
    assert "interface eth1" in one and "interface ens4" in two


def test_active_active_vips_prefer_different_peers() -> None:
    _, conf = _keepalived(DATA / "good" / "active-active.yaml")
    best = {}
    for vrid in (30, 31):
        prio = {}
        for peer in ("proxy1", "proxy2"):
            body = blocks(resolve(conf, peer), "vrrp_instance")[f"VI_{vrid}"]
            prio[peer] = int(next(ln for ln in body if ln.startswith("priority ")).split()[1])
        best[vrid] = max(prio, key=prio.__getitem__)
    assert best == {30: "proxy1", 31: "proxy2"}


def test_vrrp_version_2_with_auth() -> None:
    _, conf = _keepalived(DATA / "good" / "vrrp2-auth.yaml")
    body = blocks(resolve(conf, "proxy1"), "vrrp_instance")["VI_60"]
    assert "version 2" in body and "advert_int 1" in body
    assert inner(body, "authentication") == ["auth_type PASS", f'auth_pass "{VRRP_PASS}"']


def test_maxconn_and_timeouts_come_from_the_inventory() -> None:
    _, files = rendered(DATA / "good" / "three-peers.yaml")
    secs = sections(files["proxy1"][HAPROXY_CFG].content)
    assert "maxconn 50000" in secs["global"]
    assert "timeout client 2m" in secs["defaults"]
    _, files = rendered(DATA / "good" / "issue-example.yaml")
    assert not any(
        ln.startswith("maxconn") for ln in sections(files["proxy1"][HAPROXY_CFG].content)["global"]
    )


def test_sub_second_advert_uses_version_3() -> None:
    loaded, conf = _keepalived(DATA / "good" / "three-peers.yaml")
    body = blocks(resolve(conf, "proxy3"), "vrrp_instance")["VI_20"]
    assert "advert_int 0.5" in body and "version 3" in body


# --- the other files -----------------------------------------------------------------------


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_systemd_dropin_restarts_keepalived_after_a_crash(path: Path) -> None:
    _, files = rendered(path)
    dropin = next(iter(files.values()))["/etc/systemd/system/keepalived.service.d/edgekit.conf"]
    lines = [ln.strip() for ln in dropin.content.splitlines()]
    assert lines[lines.index("[Service]") + 1 :].count("Restart=on-failure") == 1
    assert dropin.service == "systemd"


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_haproxy_stop_reaches_keepalived_through_the_file_it_tracks(path: Path) -> None:
    _, files = rendered(path)
    peer_files = next(iter(files.values()))
    dropin = peer_files["/etc/systemd/system/haproxy.service.d/edgekit.conf"].content
    stop = re.search(r"^ExecStopPost=.*echo 1 > (\S+?)'?$", dropin, re.M)
    start = re.search(r"^ExecStartPost=.*echo 0 > (\S+?)'?$", dropin, re.M)
    assert stop and start and stop.group(1) == start.group(1)
    assert "mv " not in dropin  # a rename would end keepalived's watch of the file
    # keepalived may start first at boot; a track file whose directory is missing is
    # dropped from its config, so its unit makes the directory.
    keepalived_dropin = peer_files["/etc/systemd/system/keepalived.service.d/edgekit.conf"]
    directory = stop.group(1).rsplit("/", 1)[0]
    assert f"ExecStartPre=/bin/mkdir -p {directory}" in keepalived_dropin.content
    conf = peer_files["/etc/keepalived/keepalived.conf"].content.splitlines()
    track = blocks(conf, "track_file")["haproxy_down"]
    assert f'file "{stop.group(1)}"' in track and "weight 0" in track
    for body in blocks(conf, "vrrp_instance").values():
        assert inner(body, "track_file") == ["haproxy_down", "edgekit_drained"]


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_a_drained_mark_drops_every_instance_to_the_floor_and_survives_reboots(
    path: Path,
) -> None:
    _, files = rendered(path)
    for peer_files in files.values():
        conf = peer_files["/etc/keepalived/keepalived.conf"].content.splitlines()
        track = blocks(conf, "track_file")["edgekit_drained"]
        # -253: any priority minus it is below 1, so keepalived holds it at 1, the floor;
        # -254 or less would mean FAULT (break-before-make), which a drain must not be.
        assert f'file "{render.DRAIN_FILE}"' in track and "weight -253" in track
        assert "init_file 0" in track  # created at 0, never overwritten at start
        assert render.DRAIN_FILE.startswith("/var/lib/")  # not /run: kept across reboots
        assert all(
            p >= 2 for prio in render.priorities(load(path).inventory) for p in prio.values()
        )
        for body in blocks(conf, "vrrp_instance").values():
            assert "edgekit_drained" in inner(body, "track_file")
        dropin = peer_files["/etc/systemd/system/keepalived.service.d/edgekit.conf"].content
        assert f"ExecStartPre=/bin/mkdir -p {render.DRAIN_DIR}" in dropin


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_sysctl_allows_binding_a_vip_not_yet_held(path: Path) -> None:
    _, files = rendered(path)
    sysctl = next(iter(files.values()))["/etc/sysctl.d/60-edgekit.conf"]
    assert re.search(r"^net\.ipv4\.ip_nonlocal_bind\s*=\s*1$", sysctl.content, re.M)
    assert sysctl.service == "sysctl"


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_every_file_ends_with_a_newline(path: Path) -> None:
    _, files = rendered(path)
    for peer_files in files.values():
        for f in peer_files.values():
            assert f.content.endswith("\n") and not f.content.endswith("\n\n\n"), f.path


# --- writing the tree ----------------------------------------------------------------------


def _cli(*args: str) -> Result:
    return run(*args, env={"EDGEKIT_STATS_PASSWORD": STRONG, "EDGEKIT_VRRP_PASS": VRRP_PASS})


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_render_command_writes_the_tree_the_manifest_describes(path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _cli("render", "-i", str(path), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    password = stats_password(load(path))
    assert password not in (out / "manifest.json").read_text()
    written = {p for p in out.rglob("*") if p.is_file()} - {out / "manifest.json"}
    listed = set()
    trees = [(peer, entries) for peer, entries in manifest["peers"].items()]
    trees.append((manifest["nodes"]["dir"], manifest["nodes"]["files"]))  # the node fence
    trees.append((manifest["monitoring"]["dir"], manifest["monitoring"]["files"]))
    for peer, entries in trees:
        for entry in entries:
            target = out / peer / entry["path"].lstrip("/")
            listed.add(target)
            assert stat.S_IMODE(target.stat().st_mode) == int(entry["mode"], 8), target
            if not entry["secret"]:
                assert hashlib.sha256(target.read_bytes()).hexdigest() == entry["sha256"]
    assert written == listed


def test_write_tree_replaces_a_loose_secret_file_with_a_private_one(tmp_path: Path) -> None:
    loaded = load(GOOD[0])
    peer = loaded.inventory.peers[0].name
    target = tmp_path / peer / DEFAULT_HAPROXY.lstrip("/")
    target.parent.mkdir(parents=True)
    target.write_text("old\n")
    target.chmod(0o644)
    render.write_tree(loaded, tmp_path)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stats_password(loaded) in target.read_text()


# --- issue 11: host names, open files, and mapping rendered lines back -------------------


def _load_text(tmp_path: Path, text: str) -> Loaded:
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return load_inventory(path)


def _issue_text(**replace: str) -> str:
    text = (DATA / "good" / "issue-example.yaml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_host_name_servers_start_disabled_rather_than_stop_haproxy(tmp_path: Path) -> None:
    loaded = _load_text(
        tmp_path, _issue_text(**{"address: 10.10.0.126": "address: controller1.cluster.internal"})
    )
    cfg = render.render_all(loaded)["proxy1"]
    text = by_path(cfg)[HAPROXY_CFG].content
    servers = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("server ")]
    named = [s for s in servers if "controller1.cluster.internal" in s]
    assert named and all(s.endswith("init-addr last,libc,none") for s in named)
    assert all("init-addr" not in s for s in servers if s not in named)


def test_a_fixed_maxconn_raises_haproxys_open_files_limit() -> None:
    from edgekit.inventory.checks import nofile_needed

    loaded, files = rendered(DATA / "good" / "three-peers.yaml")
    dropin = files["proxy1"]["/etc/systemd/system/haproxy.service.d/edgekit.conf"].content
    needed = nofile_needed(loaded.inventory)
    assert needed is not None and needed > 2 * 50000
    assert re.findall(r"^LimitNOFILE=(\d+)$", dropin, re.M) == [str(needed)]
    _, files = rendered(DATA / "good" / "issue-example.yaml")  # no maxconn: haproxy derives it
    dropin = files["proxy1"]["/etc/systemd/system/haproxy.service.d/edgekit.conf"].content
    assert "LimitNOFILE" not in dropin


def test_every_haproxy_option_line_maps_back_to_its_key(tmp_path: Path) -> None:
    text = _issue_text(
        **{
            "    timeout: 1h\n": "    timeout: 1h\n    haproxy_options:\n"
            "      - option tcp-check\n      - timeout queue 30s\n      - option tcp-check\n"
        }
    )
    loaded = _load_text(tmp_path, text)
    inv = loaded.inventory
    cfg = by_path(render.render_all(loaded)["proxy1"])[HAPROXY_CFG].content
    sources = render.haproxy_sources(inv, cfg)
    lines = cfg.splitlines()
    want = {
        "services[2].haproxy_options[0]": "option tcp-check",
        "services[2].haproxy_options[1]": "timeout queue 30s",
        "services[2].haproxy_options[2]": "option tcp-check",
    }
    for key, line in want.items():
        [n] = [n for n, k in sources.items() if k == key]
        assert lines[n - 1].strip() == line
    server = [n for n, k in sources.items() if k == "backends.controllers[1]"]
    assert len(server) == 3  # one server line per service
    assert all("corea-controller1" in lines[n - 1] for n in server)
    binds = [lines[n - 1].strip() for n, k in sources.items() if k == "services[1].listen"]
    assert binds == ["bind 10.10.0.100:443"]
    assert {k for k in sources.values() if k.startswith("haproxy.")} >= {
        "haproxy.connect_timeout",
        "haproxy.client_timeout",
        "haproxy.server_timeout",
    }
    for n, key in sources.items():  # every key named is a key of the file
        assert loaded.locate(key, "x").line is not None, (n, key)


def test_keepalived_lines_map_back_to_their_keys(tmp_path: Path) -> None:
    loaded = load(DATA / "good" / "interface-override.yaml")
    conf = by_path(render.render_all(loaded)["proxy1"])[KEEPALIVED_CONF].content
    sources = render.keepalived_sources(loaded.inventory, conf)
    lines = conf.splitlines()
    for n, key in sources.items():
        line = lines[n - 1].strip()
        if key.endswith(".interface"):
            assert "interface" in line
        if key.endswith(".vrid"):
            assert line.startswith("virtual_router_id")
    interfaces = {k for k in sources.values() if k.endswith("interface")}
    assert "peers[1].interface" in interfaces  # proxy2's own NIC, not vrrp.interface
    loaded = load(DATA / "good" / "vrrp2-auth.yaml")
    conf = by_path(render.render_all(loaded)["proxy1"])[KEEPALIVED_CONF].content
    sources = render.keepalived_sources(loaded.inventory, conf)
    [auth] = [n for n, k in sources.items() if k.startswith("vrrp.auth_pass")]
    assert conf.splitlines()[auth - 1].strip().startswith("auth_pass ")


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_peer_interfaces_are_those_keepalived_conf_names(path: Path) -> None:
    loaded, files = rendered(path)
    for peer in loaded.inventory.peers:
        conf = resolve(files[peer.name][KEEPALIVED_CONF].content, peer.name)
        named = {ln.split()[1] for ln in conf if ln.strip().startswith("interface ")}
        assert named == set(render.peer_interfaces(loaded.inventory, peer))


def test_an_option_that_starts_like_a_server_line_maps_to_the_option(tmp_path: Path) -> None:
    text = _issue_text(
        **{"    timeout: 1h\n": "    timeout: 1h\n    haproxy_options:\n      - server half\n"}
    )
    loaded = _load_text(tmp_path, text)
    cfg = by_path(render.render_all(loaded)["proxy1"])[HAPROXY_CFG].content
    sources = render.haproxy_sources(loaded.inventory, cfg)
    [n] = [n for n, line in enumerate(cfg.splitlines(), 1) if line.strip() == "server half"]
    assert sources[n] == "services[2].haproxy_options[0]"
