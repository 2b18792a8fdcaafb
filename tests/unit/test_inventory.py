"""The inventory: every validation rule, its one-line message, and the CLI around it.

The broken corpus (tests/data/broken/*.yaml) holds one fault per file; line 1 says
what the single error line must contain:

    # expect[@LINE]: KEY.PATH: FRAGMENT

KEY.PATH is `-` where no key applies (YAML syntax). @LINE, when given, is the line
the message must name.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgekit import render
from edgekit.errors import EdgekitError, InputError, printable
from edgekit.inventory import limits, load_inventory, parse_peers_flag
from edgekit.inventory.load import InventoryError
from tests.cli import Result, run

DATA = Path(__file__).resolve().parents[1] / "data"
BROKEN = sorted((DATA / "broken").glob("*.yaml"))
GOOD = sorted((DATA / "good").glob("*.yaml"))
STRONG = "Zq8-vLm3pRt7xW"  # the stats password tests put in the environment
VRRP_PASS = "k3Vp9xQ2"
UNSET = "EDGEKIT_TEST_UNSET_PASSWORD"  # never set: the "env unset" case
EXPECT_RE = re.compile(r"^# expect(?:@(\d+))?: (.+?): (.+)$")
# edgekit: FILE[:LINE]: KEY.PATH: MESSAGE[ (got VALUE)]
LINE_RE = re.compile(
    r"^edgekit: (?P<file>[^:]+?)(?::(?P<line>\d+))?: (?P<path>[^:]+): (?P<msg>.+)$"
)

ISSUE_EXAMPLE: dict[str, Any] = {
    "cluster": "boston-edge",
    "vrrp": {"interface": "eth1", "advert_int": 1, "version": 3, "unicast": True, "preempt": False},
    "vips": [{"address": "10.10.0.100/24", "vrid": 51}],
    "peers": [
        {"name": "proxy1", "address": "10.10.0.11"},
        {"name": "proxy2", "address": "10.10.0.12"},
    ],
    "ssh": {"user": "debian", "port": 22, "identity_file": "~/.ssh/id_ed25519"},
    "backends": {
        "controllers": [
            {"name": "corea-controller0", "address": "10.10.0.125"},
            {"name": "corea-controller1", "address": "10.10.0.126"},
            {"name": "corea-controller2", "address": "10.10.0.127"},
        ]
    },
    "services": [
        {"name": "http", "listen": 80, "backend": "controllers", "port": 30080},
        {"name": "https", "listen": 443, "backend": "controllers", "port": 30443},
        {
            "name": "kubernetes-api",
            "listen": 6443,
            "backend": "controllers",
            "port": 6443,
            "timeout": "1h",
            "health": {"type": "https", "path": "/healthz"},
        },
    ],
    "stats": {"port": 8404, "user": "admin", "password_env": "EDGEKIT_STATS_PASSWORD"},
}


@pytest.fixture(autouse=True)
def _secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", STRONG)
    monkeypatch.setenv("EDGEKIT_VRRP_PASS", VRRP_PASS)
    monkeypatch.delenv(UNSET, raising=False)
    monkeypatch.delenv("EDGEKIT_DEBUG", raising=False)


# A PATH without haproxy and keepalived, for CLI tests about something else: the
# real-binary checks are skipped (and said to be).
NO_BINARIES = {"PATH": "/nonexistent"}


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: str | None = None
) -> Result:
    """The CLI, in-process (tests/cli.py), optionally from another working directory."""
    before = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return run(*args, env=env, stdin=stdin)
    finally:
        os.chdir(before)


def inventory(**changes: Any) -> dict[str, Any]:
    """The issue's example with top-level keys replaced."""
    data = copy.deepcopy(ISSUE_EXAMPLE)
    data.update(copy.deepcopy(changes))
    return data


def write(tmp_path: Path, data: Any, name: str = "edge.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def errors(tmp_path: Path, data: Any, **kwargs: Any) -> list[str]:
    """The error lines load_inventory raises for `data` (fails the test if it loads)."""
    path = write(tmp_path, data)
    with pytest.raises(InventoryError) as info:
        load_inventory(path, **kwargs)
    assert str(info.value).splitlines() == info.value.lines
    return info.value.lines


def only_error(tmp_path: Path, data: Any, **kwargs: Any) -> str:
    lines = errors(tmp_path, data, **kwargs)
    assert len(lines) == 1, lines
    return lines[0]


def assert_problem(line: str, path: str, fragment: str) -> None:
    assert f": {path}: " in line, line
    assert fragment in line, line


# --- the broken corpus ------------------------------------------------------------------

ROOT = DATA.parent.parent
# The classes of hostile or surprising input (issue 11), by file name prefix, and how many
# files each must hold at least.
CLASSES = {
    "opts-": 20,
    "secret-": 12,
    "addr-": 15,
    "port-": 8,
    "dur-": 12,
    "yaml-": 15,
    "iface-": 10,
    "ssh-": 8,
    "maxconn-": 5,
    "res-": 4,
    "ctrl-": 4,
    # Follow-ups of an audit of issue 11: options that read a file of the proxy's disk,
    # env() and the stats password.
    "opts-file-": 15,
    "opts-env-fetch-": 5,
    "env-": 2,
}
# Nothing but printable text, one line: no terminal escape, no second line.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e]")


def _expectation(path: Path) -> tuple[int | None, str, str]:
    match = EXPECT_RE.match(path.read_text().splitlines()[0])
    assert match, f"{path.name}: line 1 must be '# expect[@LINE]: KEY.PATH: FRAGMENT'"
    line, key, fragment = match.groups()
    return (int(line) if line else None), key, fragment


def test_broken_corpus_is_large_and_annotated() -> None:
    assert len(BROKEN) >= 25 + 60
    for path in BROKEN:
        _expectation(path)


@pytest.mark.parametrize("prefix,count", CLASSES.items())
def test_broken_corpus_covers_each_class(prefix: str, count: int) -> None:
    assert len([p for p in BROKEN if p.name.startswith(prefix)]) >= count


def _check_line(line: str, path: Path, rel: Path) -> None:
    line_no, key, fragment = _expectation(path)
    assert line.startswith(f"{rel}"), line
    if key != "-":
        assert f": {key}: " in line, line
    assert fragment in line, line
    if line_no is not None:
        assert line.startswith(f"{rel}:{line_no}: "), line
    assert not CONTROL.search(line), repr(line)
    assert "should match pattern" not in line, line  # a rule in words, not a regex


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_inventory_is_refused_with_one_clear_line(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    rel = path.relative_to(ROOT)
    with pytest.raises(InventoryError) as info:
        load_inventory(rel)
    assert info.value.exit_code == 2
    assert len(info.value.lines) == 1, info.value.lines
    assert len(info.value.details()) == 1
    _check_line(info.value.lines[0], path, rel)
    assert STRONG not in str(info.value)


# A sample of every class through the whole CLI (the rest run through the library above,
# which is what the CLI prints).
CLI_SAMPLE = [p for p in BROKEN if p.name.startswith(tuple(CLASSES))][::12]


@pytest.mark.parametrize("path", CLI_SAMPLE, ids=[p.stem for p in CLI_SAMPLE])
def test_broken_inventory_exits_2_with_one_line_on_stderr(path: Path) -> None:
    rel = path.relative_to(ROOT)
    proc = cli("validate", "-i", str(rel), cwd=ROOT)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgekit: ")
    _check_line(lines[0].removeprefix("edgekit: "), path, rel)
    assert not CONTROL.search(proc.stderr.removesuffix("\n"))


# The audit's classes, every file through the whole CLI (each is refused before any
# haproxy -c runs, so this stays fast).
AUDIT_CLASSES = (
    "opts-file-",
    "opts-section-hex-escape",
    "opts-escape-makes-",
    "opts-env-fetch-",
    "env-",
    "iface-vrrp-all",
    "iface-vrrp-default",
    "iface-vrrp-lo",
    "iface-peer-lo",
    "iface-vip-all",
    "dur-timeout-inf",
    "dur-timeout-nan",
    "dur-timeout-negative-",
    "dur-timeout-fraction-",
    "addr-vip-ietf-",
    "addr-vip-benchmarking",
    "addr-vip-6to4-",
    "addr-peer-benchmarking",
    "addr-peer-ietf-",
    "addr-peer-6to4-",
    "port-peers-port-default-",
    "port-stats-default-",
    "maxconn-over-the-limit",
    "maxconn-zero-hint",
    "addr-peer-ipv4-mapped",
    "addr-vip-ipv4-mapped",
    "addr-peer-ipv6",
    "addr-peer-trailing-space",
    "addr-peer-octet-256",
    "addr-vip-prefix-30",
    "addr-vip-prefix-29-no-peer",
    "addr-vip-other-segment",
    "unknown-key-no-close-match",
)
CLI_AUDIT = [p for p in BROKEN if p.name.startswith(AUDIT_CLASSES)]


@pytest.mark.parametrize("path", CLI_AUDIT, ids=[p.stem for p in CLI_AUDIT])
def test_audited_inventory_exits_2_with_one_line_on_stderr(path: Path) -> None:
    test_broken_inventory_exits_2_with_one_line_on_stderr(path)


def test_broken_corpus_never_echoes_a_secret_file() -> None:
    # Each secret file's content must stay out of the message. ("password" itself is
    # skipped: it is part of every key name that could be at fault.)
    checked = 0
    for path in BROKEN:
        match = re.search(r"^  (?:password_file|auth_pass_file): (\S+)$", path.read_text(), re.M)
        if not match or not (path.parent / match.group(1)).is_file():
            continue
        secret = (path.parent / match.group(1)).read_text().strip()
        if len(secret) < 3 or secret == "password":
            continue
        with pytest.raises(InventoryError) as info:
            load_inventory(path)
        message = str(info.value).split(": ", 2)[-1]
        assert secret not in message and printable(secret) not in message, message
        checked += 1
    assert checked >= 15


# --- Python-level rules ---------------------------------------------------------------------


def test_accepts_the_issue_example(tmp_path: Path) -> None:
    loaded = load_inventory(write(tmp_path, ISSUE_EXAMPLE))
    inv = loaded.inventory
    assert [p.name for p in inv.peers] == ["proxy1", "proxy2"]
    assert str(inv.vips[0].address) == "10.10.0.100/24"
    assert inv.services[2].health.type == "https"
    assert loaded.secrets.stats_password == STRONG
    assert len(loaded.source_sha256) == 64


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_accepts_every_good_inventory(path: Path) -> None:
    loaded = load_inventory(path)
    assert len(loaded.inventory.peers) >= 2


def test_vrrp_defaults_are_safe(tmp_path: Path) -> None:
    data = inventory()
    del data["vrrp"]
    vrrp = load_inventory(write(tmp_path, data)).inventory.vrrp
    assert (vrrp.unicast, vrrp.preempt, vrrp.version) == (True, False, 3)
    assert vrrp.advert_int < 1  # sub-second failover by default, which needs version 3


def test_reports_yaml_syntax_error_with_line_number(tmp_path: Path) -> None:
    text = (
        (DATA / "good" / "issue-example.yaml")
        .read_text()
        .replace("  - name: proxy2\n", "   - name: proxy2\n")
    )  # line 15, one space too deep
    line = only_error(tmp_path, text)
    assert line.startswith(f"{tmp_path / 'edge.yaml'}:15: YAML syntax error: "), line


def test_reports_yaml_tab_indentation_on_its_line(tmp_path: Path) -> None:
    line = only_error(tmp_path, "cluster: x\nvips:\n\t- a\n")
    assert line.startswith(f"{tmp_path / 'edge.yaml'}:3: YAML syntax error")


def test_rejects_a_repeated_yaml_key(tmp_path: Path) -> None:
    text = yaml.safe_dump(ISSUE_EXAMPLE, sort_keys=False)
    text = text.replace("cluster: boston-edge\n", "cluster: boston-edge\ncluster: other\n")
    line = only_error(tmp_path, text)
    assert line == (
        f"{tmp_path / 'edge.yaml'}:2: cluster: key repeated (first at line 1): keep one of them"
    )


def test_rejects_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_bytes(b"cluster: \xff\xfe\n")
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert info.value.lines == [f"{path}: (top level): not UTF-8 text (byte 9)"]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_rejects_an_empty_file(tmp_path: Path, text: str) -> None:
    assert_problem(only_error(tmp_path, text), "(top level)", "the file has no inventory")


@pytest.mark.parametrize("text,kind", [("- a\n- b\n", "list"), ("hello\n", "str"), ("42\n", "int")])
def test_rejects_a_top_level_that_is_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    line = only_error(tmp_path, text)
    assert_problem(line, "(top level)", f"must be a mapping of keys (got {kind})")


def test_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_inventory(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "where,typo,suggestion",
    [
        ("top", "servics", "services"),
        ("vrrp", "advert_intt", "advert_int"),
        ("peer", "adress", "address"),
        ("server", "wieght", "weight"),
        ("health", "expect_stauts", "expect_status"),
    ],
)
def test_rejects_unknown_key_with_did_you_mean(
    tmp_path: Path, where: str, typo: str, suggestion: str
) -> None:
    data = inventory()
    target, path = {
        "top": (data, typo),
        "vrrp": (data["vrrp"], f"vrrp.{typo}"),
        "peer": (data["peers"][1], f"peers[1].{typo}"),
        "server": (data["backends"]["controllers"][2], f"backends.controllers[2].{typo}"),
        "health": (data["services"][2]["health"], f"services[2].health.{typo}"),
    }[where]
    target[typo] = 1 if where != "top" else []
    lines = errors(tmp_path, data)
    assert any(f": {path}: unknown key; did you mean '{suggestion}'?" in ln for ln in lines), lines


def test_unknown_key_without_a_close_match_lists_the_keys_of_its_place(tmp_path: Path) -> None:
    line = only_error(tmp_path, inventory(zzzqqq=1))
    assert line.endswith(
        ": zzzqqq: unknown key; remove it (the keys here are cluster, vrrp, vips, peers, "
        "ssh, backends, services, stats, haproxy, firewall)"
    )
    data = inventory()
    data["backends"]["controllers"][0]["zzzqqq"] = "s3cr3t-value"
    line = only_error(tmp_path, data)
    assert line.endswith(
        ": backends.controllers[0].zzzqqq: unknown key; remove it (the keys here are "
        "name, address, port, weight, backup)"
    )
    assert "s3cr3t" not in line


@pytest.mark.parametrize(
    "change,path,fragment",
    [
        ({"cluster": 123}, "cluster", "valid string"),
        ({"vips": [{"address": "10.10.0.100/24", "vrid": "abc"}]}, "vips[0].vrid", "valid integer"),
        (
            {"vips": [{"address": "10.10.0.100/24", "vrid": True}]},
            "vips[0].vrid",
            "valid integer (got True)",
        ),
        ({"peers": "proxy1"}, "peers", "valid list"),
        ({"backends": ["a"]}, "backends", "valid dictionary"),
        ({"vrrp": {"unicast": "maybe"}}, "vrrp.unicast", "valid boolean"),
        ({"vrrp": {"advert_int": "fast"}}, "vrrp.advert_int", "valid number"),
        ({"vrrp": {"version": 4}}, "vrrp.version", "2 or 3"),
        ({"stats": "hunter"}, "stats", "valid dictionary"),
    ],
)
def test_rejects_wrong_types(
    tmp_path: Path, change: dict[str, Any], path: str, fragment: str
) -> None:
    assert_problem(only_error(tmp_path, inventory(**change)), path, fragment)


def test_rejects_boolean_as_port(tmp_path: Path) -> None:
    data = inventory()
    data["services"][0]["listen"] = True  # pydantic's lax mode would make it port 1
    assert_problem(only_error(tmp_path, data), "services[0].listen", "valid integer (got True)")


@pytest.mark.parametrize("key", ["peers", "vips"])
def test_rejects_integer_as_ip_address(tmp_path: Path, key: str) -> None:
    data = inventory()
    data[key][0]["address"] = 12  # would otherwise become 0.0.0.12
    assert_problem(only_error(tmp_path, data), f"{key}[0].address", "expected an IPv4 address")


@pytest.mark.parametrize("count", [0, 1])
def test_rejects_fewer_than_two_peers(tmp_path: Path, count: int) -> None:
    data = inventory()
    data["peers"] = data["peers"][:count]
    assert_problem(
        only_error(tmp_path, data),
        "peers",
        f"at least 2 peers are needed for failover (got {count})",
    )


def test_rejects_more_peers_than_priorities_allow(tmp_path: Path) -> None:
    peers = [{"name": f"p{i}", "address": f"10.10.0.{i + 20}"} for i in range(16)]
    assert_problem(only_error(tmp_path, inventory(peers=peers)), "peers", "at most 15 peers")
    load_inventory(write(tmp_path, inventory(peers=peers[:15])))


def test_rejects_duplicate_peer_name(tmp_path: Path) -> None:
    data = inventory()
    data["peers"][1]["name"] = "proxy1"
    assert_problem(
        only_error(tmp_path, data),
        "peers[1].name",
        "duplicate peer name (also peers[0]) (got 'proxy1')",
    )


def test_rejects_duplicate_peer_address(tmp_path: Path) -> None:
    data = inventory()
    data["peers"][1]["address"] = "10.10.0.11"
    assert_problem(
        only_error(tmp_path, data),
        "peers[1].address",
        "duplicate peer address (also peers[0]) (got '10.10.0.11')",
    )


@pytest.mark.parametrize("address", ["10.10.0.0/24", "10.10.0.255/24"])
def test_rejects_vip_that_is_the_network_or_broadcast_address(tmp_path: Path, address: str) -> None:
    line = only_error(tmp_path, inventory(vips=[{"address": address, "vrid": 51}]))
    assert_problem(line, "vips[0].address", "network or broadcast address of 10.10.0.0/24")


def test_rejects_vip_without_prefix(tmp_path: Path) -> None:
    line = only_error(tmp_path, inventory(vips=[{"address": "10.10.0.100", "vrid": 51}]))
    assert_problem(line, "vips[0].address", "needs its subnet prefix")


def test_rejects_vip_equal_to_a_peer_address(tmp_path: Path) -> None:
    line = only_error(tmp_path, inventory(vips=[{"address": "10.10.0.11/24", "vrid": 51}]))
    assert_problem(line, "vips[0].address", "the VIP equals peers[0].address")


def test_rejects_repeated_vip_address(tmp_path: Path) -> None:
    vips = [{"address": "10.10.0.100/24", "vrid": 51}, {"address": "10.10.0.100/24", "vrid": 52}]
    assert_problem(
        only_error(tmp_path, inventory(vips=vips)),
        "vips[1].address",
        "VIP address repeated (also vips[0])",
    )


def test_rejects_peer_outside_the_vip_subnet(tmp_path: Path) -> None:
    data = inventory()
    data["peers"][1]["address"] = "10.10.1.12"
    assert_problem(
        only_error(tmp_path, data),
        "peers[1].address",
        "peer is outside the subnet 10.10.0.0/24 of vips[0] (got '10.10.1.12')",
    )


@pytest.mark.parametrize("vrid", [0, 256, -1, 300])
def test_rejects_vrid_outside_1_to_255(tmp_path: Path, vrid: int) -> None:
    line = only_error(tmp_path, inventory(vips=[{"address": "10.10.0.100/24", "vrid": vrid}]))
    assert_problem(line, "vips[0].vrid", f"VRID must be within 1..255 (got {vrid})")


@pytest.mark.parametrize("vrid", [1, 255])
def test_accepts_vrid_at_the_edges(tmp_path: Path, vrid: int) -> None:
    load_inventory(write(tmp_path, inventory(vips=[{"address": "10.10.0.100/24", "vrid": vrid}])))


def test_rejects_repeated_vrid(tmp_path: Path) -> None:
    vips = [{"address": "10.10.0.100/24", "vrid": 51}, {"address": "10.10.0.101/24", "vrid": 51}]
    assert_problem(
        only_error(tmp_path, inventory(vips=vips)),
        "vips[1].vrid",
        "VRID repeated (also vips[0]) (got 51)",
    )


@pytest.mark.parametrize("advert_int", [0.5, 1.5])
def test_rejects_advert_int_that_version_2_cannot_carry(tmp_path: Path, advert_int: float) -> None:
    line = only_error(tmp_path, inventory(vrrp={"version": 2, "advert_int": advert_int}))
    assert_problem(line, "vrrp.advert_int", "VRRP version 2 needs a whole number of seconds")


@pytest.mark.parametrize("advert_int", [0.29, 0.57, 0.25, 0.01, 1, 2.5])
def test_accepts_centisecond_advert_int_with_version_3(tmp_path: Path, advert_int: float) -> None:
    # 0.29 * 100 == 28.999999999999996: an exact float compare wrongly rejected it.
    loaded = load_inventory(write(tmp_path, inventory(vrrp={"advert_int": advert_int})))
    assert loaded.inventory.vrrp.advert_int == advert_int


def test_rejects_advert_int_finer_than_centiseconds(tmp_path: Path) -> None:
    line = only_error(tmp_path, inventory(vrrp={"advert_int": 0.255}))
    assert_problem(line, "vrrp.advert_int", "centiseconds")


@pytest.mark.parametrize(
    "section,index,key,value,fragment",
    [
        ("services", 0, "listen", 0, "greater than or equal to 1"),
        ("services", 1, "listen", 65536, "less than or equal to 65535"),
        ("services", 2, "port", 0, "greater than or equal to 1"),
        ("services", 0, "port", 70000, "less than or equal to 65535"),
        ("stats", None, "port", 0, "greater than or equal to 1"),
        ("stats", None, "port", 65536, "less than or equal to 65535"),
        ("ssh", None, "port", 99999, "less than or equal to 65535"),
    ],
)
def test_rejects_port_outside_1_to_65535(
    tmp_path: Path, section: str, index: int | None, key: str, value: int, fragment: str
) -> None:
    data = inventory()
    target = data[section] if index is None else data[section][index]
    target[key] = value
    path = f"{section}.{key}" if index is None else f"{section}[{index}].{key}"
    assert_problem(only_error(tmp_path, data), path, f"{fragment} (got {value})")


def test_rejects_two_services_on_one_listen_port(tmp_path: Path) -> None:
    data = inventory()
    data["services"][2]["listen"] = 443
    assert_problem(
        only_error(tmp_path, data),
        "services[2].listen",
        "listen port already used by services[1] (got 443)",
    )


def test_rejects_service_on_the_stats_port(tmp_path: Path) -> None:
    data = inventory()
    data["services"][0]["listen"] = 8404
    assert_problem(only_error(tmp_path, data), "services[0].listen", "already used by stats.port")


def test_rejects_stick_table_peers_port_equal_to_stats_port(tmp_path: Path) -> None:
    data = inventory(haproxy={"peers_port": 8404})
    data["services"][0]["sticky"] = True
    line = only_error(tmp_path, data)
    assert_problem(line, "haproxy.peers_port", "same port as stats.port (got 8404)")


@pytest.mark.parametrize("port", [8404, 443])
def test_peers_port_is_free_to_share_without_a_sticky_service(tmp_path: Path, port: int) -> None:
    # No service is sticky: haproxy.cfg has no peers section, nothing binds the port.
    load_inventory(write(tmp_path, inventory(haproxy={"peers_port": port})))


def test_rejects_service_named_like_the_stats_frontend(tmp_path: Path) -> None:
    data = inventory()
    data["services"][0]["name"] = "stats"
    assert_problem(only_error(tmp_path, data), "services[0].name", "reserved")


def test_rejects_duplicate_service_name(tmp_path: Path) -> None:
    data = inventory()
    data["services"][1]["name"] = "http"
    assert_problem(only_error(tmp_path, data), "services[1].name", "duplicate service name")


def test_rejects_service_naming_a_missing_backend_with_did_you_mean(tmp_path: Path) -> None:
    data = inventory()
    data["services"][1]["backend"] = "controler"
    assert_problem(
        only_error(tmp_path, data),
        "services[1].backend",
        "no such backend; did you mean 'controllers'? (got 'controler')",
    )


def test_rejects_empty_backend(tmp_path: Path) -> None:
    data = inventory()
    data["backends"]["controllers"] = []
    assert_problem(only_error(tmp_path, data), "backends.controllers", "backend has no servers")


def test_rejects_duplicate_server_name(tmp_path: Path) -> None:
    data = inventory()
    data["backends"]["controllers"][2]["name"] = "corea-controller0"
    assert_problem(
        only_error(tmp_path, data), "backends.controllers[2].name", "duplicate server name"
    )


@pytest.mark.parametrize("address", ["10.10.0.125 backup", "10.10.0.125:99", "", "a b"])
def test_rejects_server_address_that_would_inject_haproxy_keywords(
    tmp_path: Path, address: str
) -> None:
    data = inventory()
    data["backends"]["controllers"][0]["address"] = address
    assert_problem(
        only_error(tmp_path, data), "backends.controllers[0].address", "IPv4 address or a host name"
    )


@pytest.mark.parametrize(
    "health,key",
    [
        ({"type": "http", "path": "/healthz#x"}, "path"),
        ({"type": "http", "path": "healthz"}, "path"),
        ({"type": "http", "host": "a b"}, "host"),
    ],
)
def test_rejects_health_values_that_break_haproxy_syntax(
    tmp_path: Path, health: dict[str, str], key: str
) -> None:
    data = inventory()
    data["services"][0]["health"] = health
    assert_problem(only_error(tmp_path, data), f"services[0].health.{key}", "must be")


def test_rejects_preferred_peer_that_does_not_exist(tmp_path: Path) -> None:
    line = only_error(
        tmp_path, inventory(vips=[{"address": "10.10.0.100/24", "vrid": 51, "preferred": "proxy3"}])
    )
    assert_problem(line, "vips[0].preferred", "no such peer; did you mean")


def test_rejects_missing_stats_password_env(tmp_path: Path) -> None:
    data = inventory(stats={"user": "admin", "password_env": UNSET})
    assert_problem(
        only_error(tmp_path, data),
        "stats.password_env",
        f"environment variable {UNSET} is not set or empty",
    )


def test_rejects_empty_stats_password_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", "")
    assert_problem(only_error(tmp_path, inventory()), "stats.password_env", "not set or empty")


def test_rejects_empty_stats_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n")
    data = inventory(stats={"user": "admin", "password_file": "pw"})
    assert_problem(only_error(tmp_path, data), "stats.password_file", "missing or empty")


def test_rejects_unreadable_stats_password_file(tmp_path: Path) -> None:
    data = inventory(stats={"user": "admin", "password_file": "missing.txt"})
    assert_problem(only_error(tmp_path, data), "stats.password_file", "cannot read")


def test_rejects_stats_password_file_that_is_not_text(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"\xff\xfe\x00secret")
    data = inventory(stats={"user": "admin", "password_file": "pw"})
    line = only_error(tmp_path, data)
    assert_problem(line, "stats.password_file", "is not UTF-8 text")
    assert "secret" not in line


def test_rejects_stats_without_any_password_source(tmp_path: Path) -> None:
    line = only_error(tmp_path, inventory(stats={"user": "admin"}))
    assert_problem(line, "stats.password_env", "set stats.password_env or stats.password_file")


def test_rejects_two_stats_password_sources(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(STRONG)
    data = inventory(
        stats={"user": "admin", "password_env": "EDGEKIT_STATS_PASSWORD", "password_file": "pw"}
    )
    assert_problem(only_error(tmp_path, data), "stats.password_file", "not both")


def test_reads_password_file_relative_to_the_inventory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pw").write_text(STRONG + "\n")
    data = inventory(stats={"user": "admin", "password_file": "sub/pw"})
    loaded = load_inventory(write(tmp_path, data))
    assert loaded.secrets.stats_password == STRONG


@pytest.mark.parametrize("user", ["opsadmin", "OpsAdmin"])
def test_rejects_password_equal_to_user_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user: str
) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", "opsadmin")
    data = inventory(stats={"user": user, "password_env": "EDGEKIT_STATS_PASSWORD"})
    assert_problem(
        only_error(tmp_path, data), "stats.password_env", "the stats password equals the user name"
    )


@pytest.mark.parametrize("password", ["admin", "password", "changeme", "ChangeMe", "haproxy"])
def test_rejects_common_default_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", password)
    data = inventory(stats={"user": "ops", "password_env": "EDGEKIT_STATS_PASSWORD"})
    assert_problem(only_error(tmp_path, data), "stats.password_env", "common default")


def test_rejects_short_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", "x7Kq2")
    assert_problem(only_error(tmp_path, inventory()), "stats.password_env", "shorter than 8")


@pytest.mark.parametrize("char", ['"', "'", "\\", "$", "`"])
def test_rejects_password_that_cannot_travel_through_haproxy_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, char: str
) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", f"Zq8vLm{char}3pRt7")
    assert_problem(only_error(tmp_path, inventory()), "stats.password_env", "may not contain")


def test_vrrp_auth_needs_version_2(tmp_path: Path) -> None:
    line = only_error(tmp_path, inventory(vrrp={"auth_pass_env": "EDGEKIT_VRRP_PASS"}))
    assert_problem(line, "vrrp.auth_pass_env", "VRRP version 3 has no authentication")


def test_vrrp_auth_pass_is_at_most_8_characters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEKIT_VRRP_PASS", "123456789")
    line = only_error(
        tmp_path,
        inventory(vrrp={"version": 2, "advert_int": 1, "auth_pass_env": "EDGEKIT_VRRP_PASS"}),
    )
    assert_problem(line, "vrrp.auth_pass_env", "1 to 8 printable characters")
    assert "123456789" not in line


def test_accepts_vrrp_version_2_with_auth(tmp_path: Path) -> None:
    loaded = load_inventory(
        write(
            tmp_path,
            inventory(vrrp={"version": 2, "advert_int": 1, "auth_pass_env": "EDGEKIT_VRRP_PASS"}),
        )
    )
    assert loaded.secrets.vrrp_auth == VRRP_PASS


def test_reports_every_problem_at_once(tmp_path: Path) -> None:
    data = inventory()
    data["peers"][1]["address"] = "10.10.0.11"
    data["vips"][0]["vrid"] = 0
    data["services"][1]["backend"] = "nope"
    lines = errors(tmp_path, data)
    assert len(lines) == 3
    assert {LINE_RE.match("edgekit: " + ln)["path"] for ln in lines} == {  # type: ignore[index]
        "peers[1].address",
        "vips[0].vrid",
        "services[1].backend",
    }


def test_error_lines_name_file_line_key_and_value(tmp_path: Path) -> None:
    data = inventory()
    data["peers"][1]["address"] = "10.10.0.11"
    line = "edgekit: " + only_error(tmp_path, data)
    match = LINE_RE.match(line)
    assert match, line
    assert match["file"] == str(tmp_path / "edge.yaml")
    assert match["path"] == "peers[1].address"
    assert match["msg"].endswith("(got '10.10.0.11'); write each peer's own address")


def test_line_numbers_point_at_the_faulty_key(tmp_path: Path) -> None:
    text = (DATA / "good" / "issue-example.yaml").read_text()
    text = text.replace("    address: 10.10.0.12", "    address: 10.10.0.11")
    text = text.replace("{name: https, listen: 443,", "{name: https, listen: 80,")
    lines = errors(tmp_path, text)
    src = text.splitlines()
    assert len(lines) == 2
    for line in lines:
        match = LINE_RE.match("edgekit: " + line)
        assert match and match["line"], line
        key = match["path"].rsplit(".", 1)[-1]
        assert key in src[int(match["line"]) - 1], (line, src[int(match["line"]) - 1])
    assert lines[0].startswith(f"{tmp_path / 'edge.yaml'}:16: peers[1].address")
    assert lines[1].startswith(f"{tmp_path / 'edge.yaml'}:28: services[1].listen")


@pytest.mark.parametrize("key", ["Services", "sеrvices", "servics"])
def test_a_misspelt_required_key_is_one_problem(tmp_path: Path, key: str) -> None:
    data = inventory()
    data[key] = data.pop("services")
    assert_problem(only_error(tmp_path, data), key, "unknown key; did you mean 'services'?")


def test_keys_with_brackets_do_not_crash_the_line_lookup(tmp_path: Path) -> None:
    line = only_error(tmp_path, inventory(**{"foo[bar]": 1}))
    assert ": foo[bar]: unknown key; remove it" in line


def test_recursive_yaml_alias_is_reported_not_crashed(tmp_path: Path) -> None:
    text = yaml.safe_dump(ISSUE_EXAMPLE, sort_keys=False).replace(
        "cluster: boston-edge", "cluster: &loop [*loop]"
    )
    assert_problem(only_error(tmp_path, text), "cluster", "valid string")


# --- --peers -------------------------------------------------------------------------------


def test_parse_peers_flag_reads_name_address_pairs() -> None:
    assert parse_peers_flag("proxy1=10.0.0.11, proxy2 = 10.0.0.12,") == [
        {"name": "proxy1", "address": "10.0.0.11"},
        {"name": "proxy2", "address": "10.0.0.12"},
    ]


def test_parse_peers_flag_names_bare_addresses_in_order() -> None:
    assert parse_peers_flag("10.0.0.11,10.0.0.12,10.0.0.13") == [
        {"name": "peer1", "address": "10.0.0.11"},
        {"name": "peer2", "address": "10.0.0.12"},
        {"name": "peer3", "address": "10.0.0.13"},
    ]


@pytest.mark.parametrize("text", ["", ",", " , "])
def test_parse_peers_flag_rejects_an_empty_list(text: str) -> None:
    with pytest.raises(InputError, match="--peers"):
        parse_peers_flag(text)


def test_peers_flag_replaces_the_inventory_peers(tmp_path: Path) -> None:
    loaded = load_inventory(
        write(tmp_path, ISSUE_EXAMPLE),
        peers=parse_peers_flag("a=10.10.0.21,b=10.10.0.22,c=10.10.0.23"),
    )
    assert [(p.name, str(p.address)) for p in loaded.inventory.peers] == [
        ("a", "10.10.0.21"),
        ("b", "10.10.0.22"),
        ("c", "10.10.0.23"),
    ]


def test_errors_in_flag_peers_blame_the_flag_not_a_file_line(tmp_path: Path) -> None:
    line = only_error(tmp_path, ISSUE_EXAMPLE, peers=parse_peers_flag("a=10.10.0.21,b=10.10.9.22"))
    assert line.startswith("--peers: peers[1].address: peer is outside the subnet"), line


# --- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["Sup3rS3cret-but'quoted", "hunter2", "opsadmin"])
def test_secrets_never_appear_in_error_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", secret)
    data = inventory(stats={"user": "opsadmin", "password_env": "EDGEKIT_STATS_PASSWORD"})
    data["vips"][0]["vrid"] = 0  # an unrelated problem reported in the same run
    lines = errors(tmp_path, data)
    assert len(lines) == 2
    assert all(secret not in ln for ln in lines), lines


def test_a_password_typed_into_password_env_is_not_echoed(tmp_path: Path) -> None:
    secret = "Tr0ub4dor&3 horse"
    line = only_error(tmp_path, inventory(stats={"user": "admin", "password_env": secret}))
    assert_problem(line, "stats.password_env", "must name an environment variable")
    assert "Tr0ub4dor" not in line


def test_a_password_written_into_the_inventory_is_not_echoed(tmp_path: Path) -> None:
    line = only_error(
        tmp_path,
        inventory(
            stats={
                "user": "admin",
                "password": "Hunter2Hunter2",
                "password_env": "EDGEKIT_STATS_PASSWORD",
            }
        ),
    )
    assert_problem(line, "stats.password", "unknown key")
    assert "Hunter2Hunter2" not in line


def test_loaded_inventory_repr_hides_secrets(tmp_path: Path) -> None:
    loaded = load_inventory(
        write(
            tmp_path,
            inventory(vrrp={"version": 2, "advert_int": 1, "auth_pass_env": "EDGEKIT_VRRP_PASS"}),
        )
    )
    assert STRONG not in repr(loaded) and VRRP_PASS not in repr(loaded)
    assert STRONG not in repr(loaded.secrets)


# --- the CLI -------------------------------------------------------------------------------


def test_validate_json_output_shape(tmp_path: Path) -> None:
    path = write(tmp_path, ISSUE_EXAMPLE)
    proc = cli("validate", "-i", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"inventory", "valid", "checks", "skipped", "warnings"}
    assert data["inventory"] == str(path) and data["valid"] is True
    ran = {c["program"] for c in data["checks"]}
    skipped = {s["program"] for s in data["skipped"]}
    assert {"haproxy -c" if p == "haproxy" else "keepalived -t" for p in ran} | skipped == {
        "haproxy -c",
        "keepalived -t",
    }
    assert ("haproxy" in ran) == bool(shutil.which("haproxy"))
    for check in data["checks"]:
        assert set(check) == {"program", "peer", "ok", "output"}
        assert check["ok"] is True
    for program in ran:
        assert sorted(c["peer"] for c in data["checks"] if c["program"] == program) == [
            "proxy1",
            "proxy2",
        ]
    for s in data["skipped"]:
        assert s["reason"] and f"{s['program']} did not run: {s['reason']}" in proc.stderr
    assert any("ssh.identity_file" in w for w in data["warnings"])  # not on this machine
    assert STRONG not in proc.stdout + proc.stderr


def test_render_json_output_holds_no_secret(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        inventory(vrrp={"version": 2, "advert_int": 1, "auth_pass_env": "EDGEKIT_VRRP_PASS"}),
    )
    proc = cli("render", "-i", str(path), "-o", str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data["peers"]) == {"proxy1", "proxy2"}
    assert STRONG not in proc.stdout + proc.stderr
    assert VRRP_PASS not in proc.stdout + proc.stderr


def test_validate_reports_problems_as_one_line_each_with_exit_code_2(tmp_path: Path) -> None:
    data = inventory()
    data["peers"][1]["address"] = "10.10.0.11"
    data["vips"][0]["vrid"] = 256
    path = write(tmp_path, data)
    proc = cli("validate", "-i", str(path))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and all(LINE_RE.match(ln) for ln in lines), lines


def test_validate_json_error_is_one_object_on_stdout(tmp_path: Path) -> None:
    data = inventory()
    data["peers"][1]["address"] = "10.10.0.11"
    data["vips"][0]["vrid"] = 256
    path = write(tmp_path, data)
    proc = cli("validate", "-i", str(path), "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout) == {
        "ok": False,
        "errors": [
            {
                "file": str(path),
                "line": 15,
                "path": "peers[1].address",
                "message": "duplicate peer address (also peers[0]) (got '10.10.0.11'); "
                "write each peer's own address",
            },
            {
                "file": str(path),
                "line": 10,
                "path": "vips[0].vrid",
                "message": "VRID must be within 1..255 (got 256); write e.g. 51",
            },
        ],
    }
    assert len(proc.stderr.splitlines()) == 2  # the one-line form stays on stderr


def test_validate_of_a_missing_file_is_bad_input(tmp_path: Path) -> None:
    proc = cli("validate", "-i", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"edgekit: {tmp_path / 'nope.yaml'}: no such file (hint: edgekit init writes an example)"
    ]


def test_init_writes_an_example_that_validates(tmp_path: Path) -> None:
    proc = cli("init", "edge.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "edge.yaml").read_text()
    assert text.startswith("#") and "password_env" in text
    assert cli("validate", "-i", "edge.yaml", cwd=tmp_path, env=NO_BINARIES).returncode == 0


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "edge.yaml"
    target.write_text("mine\n")
    proc = cli("init", str(target))
    assert proc.returncode == 2
    assert target.read_text() == "mine\n"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "already exists; not overwriting" in lines[0]
    assert "Traceback" not in proc.stderr


def test_unknown_option_is_bad_input_without_traceback(tmp_path: Path) -> None:
    proc = cli("validate", "-i", str(write(tmp_path, ISSUE_EXAMPLE)), "--no-such-option")
    assert "Traceback" not in proc.stderr
    assert "--no-such-option" in proc.stderr
    assert proc.returncode == 2


# --- issue 11: hostile and surprising input -----------------------------------------------


def _with_options(*lines: str) -> dict[str, Any]:
    data = inventory()
    data["services"][2]["haproxy_options"] = list(lines)
    return data


@pytest.mark.parametrize(
    "line",
    [
        "option tcp-check",
        "tcp-check connect",
        "timeout queue 30s",
        "http-request set-header X-Forwarded-Proto https",
        "acl api path_reg ^/api$",
        "http-request deny if { path_beg /admin }",
        "default-server inter 3s fall 2",
        "http-request set-header X-Cost '$5'",
        'http-request set-header X-Price "$5 only"',
        "option backend-stats-like-name",  # a keyword that only starts like one
        "listener-free line",
        "server extra 10.10.0.130:443 ssl verify required ca-file @system-ca",
        "filter trace name x",
        "log 10.10.0.200:514 local0",
        "http-request set-header X-Env production",
        'http-request set-var(txn.ok) req.hdr(authorization),jwt_verify("HS256","k3y")',
        "server extra 10.10.0.130:8080 check",
    ],
)
def test_accepts_backend_lines_in_haproxy_options(tmp_path: Path, line: str) -> None:
    inv = load_inventory(write(tmp_path, _with_options(line))).inventory
    assert inv.services[2].haproxy_options == [line]


@pytest.mark.parametrize(
    "line,fragment",
    [
        ("listen x", "opens a new haproxy section"),
        ("Frontend x", "opens a new haproxy section"),
        ("  userlist u", "opens a new haproxy section"),
        ("\\listen x", "opens a new haproxy section"),
        (".endif", "conditional"),
        ('http-request set-header X "${HOME}"', "environment variable"),
        ("stats uri /hidden", "stats page"),
        ("option tcplog\x00", "NUL"),
        ("option\x1b[31m", "control character"),
        ("a " * 64, "more than 63 words"),
        ("\\x6cisten x", "'listen' opens a new haproxy section"),
        ("tcp-check send a\\x0ab", "makes a line break"),
        ("acl x src -f /etc/shadow", "'-f' reads a file of the proxy's disk"),
        ("acl x src '-f' /etc/shadow", "list the patterns in the line itself"),
        ("tcp-request content set-var(txn.x) src,map_ip(/etc/shadow)", "'map_ip(...)' reads"),
        ("filter spoe engine x config /etc/passwd", "'filter spoe ... config' reads"),
        ("server x 10.0.0.1:443 ssl crt /etc/shadow", "'crt' reads a file"),
        ("server x 10.0.0.1:443 ssl ca-file /etc/shadow", "ca-file @system-ca"),
        ("http-request deny content-type text/plain file /etc/shadow", "'file' reads"),
        ("errorfiles mine", "'errorfiles' reads"),
        ("lua-load /etc/shadow", "no Lua"),
        ("server sock unix@/run/x.sock", "a socket on the proxy itself"),
        ("tcp-check send-lf %[env(EDGEKIT_STATS_PASSWORD)]", "the env() fetch"),
        ("server x 10.0.0.1:443 ssl sni env(EDGEKIT_STATS_PASSWORD)", "the env() fetch"),
        ("tcp-request content set-var(sess.x) Env(HOME)", "the env() fetch"),
    ],
)
def test_refuses_haproxy_options_that_leave_the_backend(
    tmp_path: Path, line: str, fragment: str
) -> None:
    line_out = only_error(tmp_path, _with_options("option tcp-check", line))
    assert_problem(line_out, "services[2].haproxy_options[1]", fragment)
    assert "\x1b" not in line_out and "\x00" not in line_out


def test_haproxy_words_are_read_as_haproxy_reads_them() -> None:
    from edgekit.inventory.fields import haproxy_words

    assert haproxy_words("a \"b c\" 'd $e' f\\ g \\x41\\t") == ["a", "b c", "d $e", "f g", "A\t"]
    assert haproxy_words('l\\isten x  ""') == ["listen", "x", ""]


@pytest.mark.parametrize("key", ["path", "uri"])
def test_url_paths_hold_no_haproxy_expression(tmp_path: Path, key: str) -> None:
    data = inventory()
    if key == "path":
        data["services"][0]["health"] = {"type": "http", "path": "/h/%[env(X)]"}
        where = "services[0].health.path"
    else:
        data["stats"]["uri"] = "/stats/env(EDGEKIT_STATS_PASSWORD)"
        where = "stats.uri"
    assert_problem(only_error(tmp_path, data), where, "cannot hold a haproxy expression")


@pytest.mark.parametrize("secret", ["k3Vp9xQ2", "a'b;c%d", "x", "ABC-_.+=", "12345678", "p@ss:w/d"])
def test_accepts_vrrp_secrets_keepalived_can_carry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("EDGEKIT_VRRP_PASS", secret)
    data = inventory(vrrp={"version": 2, "advert_int": 1, "auth_pass_env": "EDGEKIT_VRRP_PASS"})
    assert load_inventory(write(tmp_path, data)).secrets.vrrp_auth == secret


@pytest.mark.parametrize("secret", ["ab}c", "{abc", "#abc", "ab!c", 'a"b', "a\\b", "a b", "ä"])
def test_refuses_vrrp_secrets_keepalived_reads_as_syntax(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("EDGEKIT_VRRP_PASS", secret)
    data = inventory(vrrp={"version": 2, "advert_int": 1, "auth_pass_env": "EDGEKIT_VRRP_PASS"})
    line = only_error(tmp_path, data)
    assert ": vrrp.auth_pass_env: " in line
    assert secret not in line.split(": ", 2)[-1]


@pytest.mark.parametrize(
    "name", ["eth0", "eth0.100", "br-lan", "enp0s31f6", "wlan0", "bond0_1", "a", "x" * 15, "v@1"]
)
def test_accepts_interface_names_the_kernel_accepts(tmp_path: Path, name: str) -> None:
    data = inventory(vrrp={"interface": name})
    assert load_inventory(write(tmp_path, data)).inventory.vrrp.interface == name


@pytest.mark.parametrize(
    "name,fragment",
    [("all", "the kernel refuses 'all'"), ("default", "refuses 'default'"), ("lo", "loopback")],
)
def test_refuses_interface_names_vrrp_cannot_use(tmp_path: Path, name: str, fragment: str) -> None:
    line = only_error(tmp_path, inventory(vrrp={"interface": name}))
    assert_problem(line, "vrrp.interface", fragment)
    assert "e.g. eth1" in line


@pytest.mark.parametrize(
    "value", ["1ms", "500ms", "2s", "1m", "1h", "24d", "2147483647ms", "1000us", "596h"]
)
def test_accepts_durations_haproxy_accepts(tmp_path: Path, value: str) -> None:
    data = inventory(haproxy={"client_timeout": value})
    data["services"][0]["check"] = {"inter": value}
    inv = load_inventory(write(tmp_path, data)).inventory
    assert inv.haproxy.client_timeout == value and inv.services[0].check.inter == value


@pytest.mark.parametrize(
    "value", ["2147483648ms", "597h", "25d", "999us", "0d", 0, 30, -5, 2147483648]
)
def test_refuses_durations_haproxy_would_misread_or_refuse(tmp_path: Path, value: object) -> None:
    line = only_error(tmp_path, inventory(haproxy={"server_timeout": value}))
    assert ": haproxy.server_timeout: " in line
    assert re.search(r"maximum|at least 1ms|zero|bare number|negative", line), line


@pytest.mark.parametrize(
    "value,hint",
    [
        (float("inf"), "a duration needs a number and a unit, e.g. 30s"),
        (float("nan"), "a duration needs a number and a unit, e.g. 30s"),
        (1.5, "e.g. 1500ms for 1.5 seconds"),
        (30, "e.g. 30s or 30ms"),
    ],
)
def test_a_bare_number_is_answered_with_a_duration_haproxy_takes(
    tmp_path: Path, value: float, hint: str
) -> None:
    line = only_error(tmp_path, inventory(haproxy={"server_timeout": value}))
    assert_problem(line, "haproxy.server_timeout", hint)
    assert "infs" not in line and "nanms" not in line


@pytest.mark.parametrize("user", ["debian", "root", "deploy-bot", "first.last", "svc_1", "ad$"])
def test_accepts_ordinary_ssh_users(tmp_path: Path, user: str) -> None:
    data = inventory(ssh={"user": user})
    assert load_inventory(write(tmp_path, data)).inventory.ssh.user == user


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "edge1.example.net", "edge1", "fd00::11"])
def test_accepts_ssh_hosts(tmp_path: Path, host: str) -> None:
    data = inventory()
    data["peers"][0].update(ssh_host=host, ssh_port=2222)
    assert load_inventory(write(tmp_path, data)).inventory.peers[0].ssh_host == host


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.1.1", "backend.internal", "10.0.0.1"])
def test_accepts_servers_a_proxy_can_reach(tmp_path: Path, address: str) -> None:
    data = inventory()
    data["backends"]["controllers"][0]["address"] = address
    load_inventory(write(tmp_path, data))


@pytest.mark.parametrize("prefix", [8, 16, 29])
def test_accepts_vip_prefixes_from_8_to_29(tmp_path: Path, prefix: int) -> None:
    # 10.10.0.96/29: hosts .97 to .102, room for the VIP and the two peers.
    data = inventory(vips=[{"address": f"10.10.0.100/{prefix}", "vrid": 51}])
    data["peers"][0]["address"] = "10.10.0.98"
    data["peers"][1]["address"] = "10.10.0.99"
    data["firewall"] = {"admin_cidrs": ["10.10.0.0/24"]}
    load_inventory(write(tmp_path, data))


def test_a_30_vip_is_one_problem_naming_the_prefix(tmp_path: Path) -> None:
    # The audit's case: 10.10.0.13/30 holds .13 and .14; peer .11 is outside, .12 is its
    # network address. One line for the prefix, not one per peer.
    data = inventory(vips=[{"address": "10.10.0.13/30", "vrid": 51}])
    line = only_error(tmp_path, data)
    assert_problem(line, "vips[0].address", "the prefix /30 holds 2 host addresses, too few")
    assert "the VIP and 2 peers" in line and line.endswith("write the segment's prefix, e.g. /24")
    # A /29 holds 6 hosts: not the VIP and 6 peers.
    data["vips"][0]["address"] = "10.10.0.100/29"
    data["peers"] = [{"name": f"p{i}", "address": f"10.10.0.{97 + i}"} for i in range(6)]
    assert_problem(only_error(tmp_path, data), "vips[0].address", "too few for the VIP and 6")


def test_a_vip_whose_subnet_holds_no_peer_is_one_problem(tmp_path: Path) -> None:
    data = inventory(vips=[{"address": "10.10.0.200/28", "vrid": 51}])  # .192 to .207
    line = only_error(tmp_path, data)
    assert_problem(line, "vips[0].address", "the prefix /28 is too narrow: 10.10.0.192/28")
    assert "(10.10.0.11, 10.10.0.12)" in line and "e.g. 10.10.0.200/24" in line
    data = inventory(vips=[{"address": "10.20.0.100/24", "vrid": 51}])
    line = only_error(tmp_path, data)
    assert_problem(line, "vips[0].address", "subnet 10.20.0.0/24 holds none of the peers")
    assert line.endswith("write a free address of the peers' segment, with its prefix")


def _segment(prefix: str) -> dict[str, Any]:
    """The issue's example moved, VIP and peers, to PREFIX.0/24 (PREFIX: three octets)."""
    data = inventory(vips=[{"address": f"{prefix}.100/24", "vrid": 51}])
    data["peers"][0]["address"] = f"{prefix}.11"
    data["peers"][1]["address"] = f"{prefix}.12"
    return data


@pytest.mark.parametrize("prefix", ["100.64.0", "100.127.255", "8.8.8", "172.16.5", "192.168.1"])
def test_accepts_shared_address_space_and_public_segments(tmp_path: Path, prefix: str) -> None:
    load_inventory(write(tmp_path, _segment(prefix)))


@pytest.mark.parametrize(
    "prefix,fragment",
    [
        ("192.0.0", "IETF protocol assignments"),
        ("198.18.0", "benchmarking"),
        ("198.19.7", "benchmarking"),
        ("192.88.99", "6to4"),
    ],
)
def test_refuses_reserved_segments_for_vips_and_peers(
    tmp_path: Path, prefix: str, fragment: str
) -> None:
    lines = errors(tmp_path, _segment(prefix))
    assert [ln.split(": ")[1] for ln in lines] == [
        "peers[0].address",
        "peers[1].address",
        "vips[0].address",
    ]
    assert all(fragment in ln for ln in lines), lines


def test_a_32_vip_is_one_problem_not_one_per_peer(tmp_path: Path) -> None:
    vips = [{"address": "10.10.0.100/32", "vrid": 51}, {"address": "10.10.0.101/31", "vrid": 52}]
    lines = errors(tmp_path, inventory(vips=vips))
    assert [ln.split(": ")[1] for ln in lines] == ["vips[0].address", "vips[1].address"]
    assert "the prefix /32" in lines[0] and "the prefix /31" in lines[1]


def test_a_peer_outside_two_vips_subnets_is_one_problem(tmp_path: Path) -> None:
    vips = [{"address": "10.10.0.100/24", "vrid": 51}, {"address": "10.10.0.101/24", "vrid": 52}]
    data = inventory(vips=vips)
    data["peers"][1]["address"] = "10.20.0.12"
    assert_problem(only_error(tmp_path, data), "peers[1].address", "outside the subnet")


@pytest.mark.parametrize("where,key", [("ssh.port", "ssh"), ("peers[0].ssh_port", "peer")])
def test_refuses_a_peers_port_on_an_ssh_port_when_sticky(
    tmp_path: Path, where: str, key: str
) -> None:
    data = inventory(haproxy={"peers_port": 2222})
    data["services"][0]["sticky"] = True
    if key == "ssh":
        data["ssh"]["port"] = 2222
    else:
        data["peers"][0]["ssh_port"] = 2222
    assert_problem(only_error(tmp_path, data), "haproxy.peers_port", f"same port as {where}")
    data["services"][0]["sticky"] = False
    load_inventory(write(tmp_path, data))  # not sticky: no peers section binds it


# --- YAML 1.1 and the loader's bounds --------------------------------------------------------


@pytest.mark.parametrize(
    "text,value",
    [
        ("unicast: True", True),
        ("unicast: FALSE", False),
        ("garp_refresh: 0", 0),
        ("garp_refresh: +5", 5),
        ("advert_int: 1.0", 1.0),
        ("advert_int: .5", 0.5),
    ],
)
def test_accepts_plain_yaml_numbers_and_booleans(tmp_path: Path, text: str, value: object) -> None:
    source = yaml.safe_dump(inventory(vrrp={"interface": "eth1"}), sort_keys=False)
    source = source.replace("  interface: eth1\n", f"  interface: eth1\n  {text}\n", 1)
    inv = load_inventory(write(tmp_path, source)).inventory
    assert getattr(inv.vrrp, text.split(":")[0]) == value


def test_quoted_numbers_are_text_not_octal(tmp_path: Path) -> None:
    data = inventory()
    text = yaml.safe_dump(data, sort_keys=False).replace("listen: 443", "listen: '0443'")
    assert_problem(only_error(tmp_path, text), "services[1].listen", "valid integer (got '0443')")


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (`.nan` is a value the corpus holds)."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_the_fast_reader_gives_what_pyyaml_gives() -> None:
    from edgekit.inventory import source

    paths = [*GOOD, *(p for p in BROKEN if "*" not in p.read_text(errors="replace"))]
    compared = 0
    for path in paths:
        text = path.read_text(errors="replace")
        try:
            node = yaml.compose(text, Loader=yaml.CSafeLoader)
            expected = yaml.load(text, Loader=yaml.CSafeLoader)
        except (yaml.YAMLError, ValueError):  # ValueError: !!int 0x
            continue
        if node is None or not isinstance(node, yaml.MappingNode):
            continue
        _, problems = source._walk(node, "x")
        if problems or "<<" in text or "!" in text:
            continue
        assert _same(source._plain_data(node), expected), path.name
        compared += 1
    assert compared > 100


def _bomb(levels: int) -> str:
    lines = ["b0: &b0 [lol]"]
    for i in range(1, levels + 1):
        lines.append(f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 10) + "]")
    return yaml.safe_dump(ISSUE_EXAMPLE, sort_keys=False) + "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [6, 9, 30])
def test_an_alias_bomb_is_refused_in_milliseconds_with_bounded_memory(
    tmp_path: Path, levels: int
) -> None:
    path = write(tmp_path, _bomb(levels))
    assert path.stat().st_size < 4000
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert info.value.lines == [info.value.lines[0]] and "alias bomb" in info.value.lines[0]
    assert elapsed < 0.5, elapsed
    assert peak < 20 * 1024 * 1024, peak


def test_aliases_that_expand_modestly_are_read(tmp_path: Path) -> None:
    text = yaml.safe_dump(ISSUE_EXAMPLE, sort_keys=False)
    text = text.replace(
        "services:\n",
        "services:\n- &web {name: web, listen: 8080, backend: controllers, port: 30081}\n",
    )
    text += "firewall:\n  admin_cidrs: &ops [10.10.0.0/24]\n  node_allow_cidrs: *ops\n"
    inv = load_inventory(write(tmp_path, text)).inventory
    assert [str(n) for n in inv.firewall.node_allow_cidrs] == ["10.10.0.0/24"]
    assert inv.services[0].name == "web"


def test_merge_keys_are_read_and_errors_behind_them_found(tmp_path: Path) -> None:
    text = yaml.safe_dump(ISSUE_EXAMPLE, sort_keys=False)
    text = text.replace(
        "- name: http\n",
        "- &base {name: web, backend: controllers, port: 30080, listen: 8080}\n"
        "- <<: *base\n  name: web2\n  listen: 8081\n- name: http\n",
        1,
    )
    inv = load_inventory(write(tmp_path, text)).inventory
    assert [(s.name, s.listen, s.port) for s in inv.services[:2]] == [
        ("web", 8080, 30080),
        ("web2", 8081, 30080),
    ]
    broken = text.replace("  listen: 8081\n", "  listen: 0443\n")
    assert_problem(only_error(tmp_path, broken), "services[1].listen", "octal")


def test_nesting_too_deep_for_the_pure_python_parser_is_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgekit.inventory import source

    monkeypatch.setattr(source, "_Loader", yaml.SafeLoader)  # no libyaml: recursion
    text = "cluster: " + "[" * 600 + "]" * 600 + "\n"
    lines = errors(tmp_path, text)
    assert len(lines) == 1 and "nested more than 32 levels" in lines[0], lines


def test_a_file_over_10_mb_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("# padding\n" * (limits.MAX_FILE_BYTES // 10 + 1))
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert info.value.lines == [
        f"{path}: (top level): the file is larger than 10485760 bytes; "
        "an inventory is a few KB: is this the right file?"
    ]


def test_5000_servers_load_in_well_under_two_seconds(tmp_path: Path) -> None:
    data = inventory(firewall={"admin_cidrs": ["10.10.0.0/24"]})
    data["backends"] = {"controllers": [{"name": "s", "address": "10.10.0.9"}]}
    servers = "".join(
        f"  - {{name: s{i}, address: 10.11.{i // 256}.{i % 256}, port: 30080}}\n"
        for i in range(5000)
    )
    text = yaml.safe_dump(data, sort_keys=False)
    text = text.replace("  - name: s\n    address: 10.10.0.9\n", servers)
    path = write(tmp_path, text)
    start = time.perf_counter()
    loaded = load_inventory(path)
    elapsed = time.perf_counter() - start
    assert len(loaded.inventory.backends["controllers"]) == 5000
    assert elapsed < 1.5, elapsed  # bench/validate records the whole command's figure


# --- output ------------------------------------------------------------------------------------


def test_more_than_10_problems_show_10_and_how_many_more(tmp_path: Path) -> None:
    data = inventory(**{f"nosuchkey{i}": i for i in range(15)})
    path = write(tmp_path, data)
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 11
    assert all(": unknown key" in ln for ln in lines[:10])
    assert lines[10] == f"{path}: and 5 more problems (fix these and validate again)"
    assert len(info.value.details()) == 11 and info.value.details()[10]["message"] == "and 5 more"


@pytest.mark.parametrize("key", ["\x1b[2Jx", "a\nb", "a\rb", "\u202eevil", "\x9b31m"])
def test_control_characters_in_keys_never_reach_the_terminal(tmp_path: Path, key: str) -> None:
    proc = cli("validate", "-i", str(write(tmp_path, inventory(**{key: 1}))))
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "unknown key" in lines[0], proc.stderr
    assert not CONTROL.search(proc.stderr.removesuffix("\n")), repr(proc.stderr)
    assert printable(key) in lines[0]


def test_a_file_name_with_an_escape_is_shown_escaped(tmp_path: Path) -> None:
    proc = cli("validate", "-i", str(tmp_path / "e\x1b[31m.yaml"))
    assert proc.returncode == 2
    assert "\x1b" not in proc.stderr and "\\x1b[31m.yaml: no such file" in proc.stderr


def test_json_details_name_file_line_and_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        yaml.safe_dump(ISSUE_EXAMPLE, sort_keys=False).replace("listen: 443", "listen: 0443"),
    )
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    [detail] = info.value.details()
    assert detail["file"] == str(path) and detail["path"] == "services[1].listen"
    assert (
        isinstance(detail["line"], int)
        and "0443" in path.read_text().splitlines()[detail["line"] - 1]
    )
    assert "octal" in str(detail["message"])


# --- warnings ----------------------------------------------------------------------------------


def _warnings(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    return load_inventory(write(tmp_path, data)).warnings


def test_the_issue_example_warns_only_about_missing_ssh_files(tmp_path: Path) -> None:
    warnings = _warnings(tmp_path, ISSUE_EXAMPLE)
    assert [w.split(": ")[1] for w in warnings] == ["ssh.identity_file"]


def test_warns_about_admin_cidrs_that_admit_anyone(tmp_path: Path) -> None:
    warnings = _warnings(tmp_path, inventory(firewall={"admin_cidrs": ["10.0.0.0/8", "0.0.0.0/0"]}))
    assert any(
        ": firewall.admin_cidrs[1]: admits SSH and the stats page from anywhere" in w
        for w in warnings
    ), warnings


@pytest.mark.parametrize(
    "nets,family",
    [
        (["0.0.0.0/1", "128.0.0.0/1"], "IPv4 address (0.0.0.0/0)"),
        (["128.0.0.0/1", "10.0.0.0/8", "0.0.0.0/2", "64.0.0.0/2"], "IPv4 address (0.0.0.0/0)"),
        (["::/1", "8000::/1", "10.0.0.0/8"], "IPv6 address (::/0)"),
    ],
)
def test_warns_about_admin_cidrs_that_together_admit_anyone(
    tmp_path: Path, nets: list[str], family: str
) -> None:
    warnings = _warnings(tmp_path, inventory(firewall={"admin_cidrs": nets}))
    together = [w for w in warnings if ": firewall.admin_cidrs: " in w]
    assert len(together) == 1, warnings
    assert (
        "admits SSH and the stats page from anywhere: together these networks cover "
        in (together[0])
    )
    assert family in together[0] and "list the operators' networks instead" in together[0]


def test_no_warning_for_admin_cidrs_that_leave_some_addresses_out(tmp_path: Path) -> None:
    nets = ["0.0.0.0/1", "128.0.0.0/2", "10.10.0.0/24"]
    warnings = _warnings(tmp_path, inventory(firewall={"admin_cidrs": nets}))
    assert not any(": firewall.admin_cidrs" in w for w in warnings), warnings


@pytest.mark.parametrize(
    "nets,path",
    [
        (["10.20.0.0/16", "0.0.0.0/0"], "firewall.node_allow_cidrs[1]"),
        (["0.0.0.0/1", "128.0.0.0/1"], "firewall.node_allow_cidrs"),
    ],
)
def test_warns_about_node_allow_cidrs_that_admit_anyone(
    tmp_path: Path, nets: list[str], path: str
) -> None:
    data = inventory(firewall={"admin_cidrs": ["10.10.0.0/24"], "node_allow_cidrs": nets})
    warnings = [w for w in _warnings(tmp_path, data) if ": firewall.node_allow" in w]
    assert (
        len(warnings) == 1 and f": {path}: lets anyone reach the nodes' NodePorts" in (warnings[0])
    ), warnings
    assert "list the cluster's node and pod networks instead" in warnings[0]
    assert not [w for w in _warnings(tmp_path, inventory()) if ": firewall." in w]


def test_warns_when_a_wide_vip_prefix_widens_the_default_admin_set(tmp_path: Path) -> None:
    data = inventory(vips=[{"address": "10.10.0.100/16", "vrid": 51}])
    assert any(
        ": vips[0].address: " in w and "all of 10.10.0.0/16 (65536 addresses)" in w
        for w in _warnings(tmp_path, data)
    )
    data["firewall"] = {"admin_cidrs": ["10.10.0.0/24"]}
    assert not any("vips[0]" in w for w in _warnings(tmp_path, data))


def test_warns_about_a_backend_no_service_uses(tmp_path: Path) -> None:
    data = inventory()
    data["backends"]["spare"] = [{"name": "s1", "address": "10.10.0.140"}]
    assert any(
        ": backends.spare: no service uses this backend" in w for w in _warnings(tmp_path, data)
    )


@pytest.mark.parametrize(
    "key,value", [("path", "/ready"), ("expect_status", 204), ("host", "api.local")]
)
def test_warns_about_http_settings_on_a_tcp_check(tmp_path: Path, key: str, value: object) -> None:
    data = inventory()
    data["services"][0]["health"] = {"type": "tcp", key: value}
    assert any(
        f": services[0].health.{key}: ignored: the health check is a TCP connect" in w
        for w in _warnings(tmp_path, data)
    )


def test_warns_about_proxy_protocol_to_the_api_server(tmp_path: Path) -> None:
    data = inventory()
    data["services"][2]["proxy_protocol"] = "v2"
    data["services"][0]["proxy_protocol"] = "v2"
    warnings = [w for w in _warnings(tmp_path, data) if "proxy_protocol" in w]
    assert len(warnings) == 1 and ": services[2].proxy_protocol: kube-apiserver" in warnings[0]


def test_host_name_servers_are_accepted_with_one_warning(tmp_path: Path) -> None:
    data = inventory()
    for i, server in enumerate(data["backends"]["controllers"]):
        server["address"] = f"controller{i}.cluster.internal"
    warnings = [w for w in _warnings(tmp_path, data) if "host name" in w]
    assert len(warnings) == 1
    assert ": backends.controllers[0].address: a host name (and 2 more servers)" in warnings[0]
    assert "init-addr last,libc,none" in warnings[0]


def test_validate_prints_warnings_on_stderr(tmp_path: Path) -> None:
    data = inventory(firewall={"admin_cidrs": ["0.0.0.0/0"]})
    proc = cli("validate", "-i", str(write(tmp_path, data)))
    assert proc.returncode == 0, proc.stderr
    assert "edgekit: warning: " in proc.stderr and "from anywhere" in proc.stderr
    assert proc.stdout == ""


# --- maxconn -------------------------------------------------------------------------------------


def test_maxconn_refusal_names_what_the_host_allows(tmp_path: Path) -> None:
    from edgekit.inventory import maxconn_refusal
    from edgekit.inventory.checks import nofile_needed

    inv = load_inventory(write(tmp_path, inventory(haproxy={"maxconn": 100_000}))).inventory
    needed = nofile_needed(inv)
    assert needed is not None and needed > 200_000
    assert maxconn_refusal(inv, needed) is None
    refusal = maxconn_refusal(inv, 65_536)
    assert refusal is not None
    assert f"haproxy.maxconn 100000 needs {needed} open files" in refusal
    assert "at most 65536 (fs.nr_open)" in refusal
    lowest = int(re.search(r"lower haproxy.maxconn to (\d+)", refusal)[1])  # type: ignore[index]
    fitted = inv.model_copy(update={"haproxy": inv.haproxy.model_copy(update={"maxconn": lowest})})
    assert maxconn_refusal(fitted, 65_536) is None
    unset = load_inventory(write(tmp_path, inventory())).inventory
    assert maxconn_refusal(unset, 1024) is None  # haproxy derives it from its limit


def test_maxconn_beyond_what_linux_lets_a_process_open_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "NR_OPEN", 100_000)
    line = only_error(tmp_path, inventory(haproxy={"maxconn": 60_000}))
    assert_problem(line, "haproxy.maxconn", "more than Linux lets one process open")
    assert "write at most 4" in line  # (100000 - the reserve) / 2


# --- commands and exit codes ------------------------------------------------------------------


def test_validate_reads_standard_input(tmp_path: Path) -> None:
    text = yaml.safe_dump(ISSUE_EXAMPLE, sort_keys=False)
    proc = cli("validate", "-i", "-", stdin=text, cwd=tmp_path, env=NO_BINARIES)
    assert proc.returncode == 0, proc.stderr
    assert "<stdin>: valid" in proc.stderr
    bad = cli("validate", "-i", "-", stdin=text.replace("listen: 443", "listen: 0443"))
    assert bad.returncode == 2
    assert re.match(
        r"^edgekit: <stdin>:\d+: services\[1\]\.listen: YAML 1\.1 reads 0443", bad.stderr
    ), bad.stderr


def test_init_into_a_missing_directory_is_bad_input(tmp_path: Path) -> None:
    proc = cli("init", str(tmp_path / "nope" / "edge.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"edgekit: {tmp_path / 'nope' / 'edge.yaml'}: the directory {tmp_path / 'nope'} does "
        f"not exist (hint: mkdir -p {tmp_path / 'nope'}, or choose another path)"
    ]


@pytest.mark.parametrize("suffix", ["/", "/."])
def test_init_into_a_missing_directory_written_with_a_slash_is_bad_input(
    tmp_path: Path, suffix: str
) -> None:
    proc = cli("init", str(tmp_path / "nodir") + suffix)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"edgekit: {tmp_path / 'nodir'}{suffix}: the directory {tmp_path / 'nodir'} does not "
        f"exist (hint: mkdir -p {tmp_path / 'nodir'}, or choose another path)"
    ]
    assert list(tmp_path.iterdir()) == []  # no file named nodir
    (tmp_path / "nodir").mkdir()
    assert cli("init", str(tmp_path / "nodir") + suffix).returncode == 0
    assert (tmp_path / "nodir" / "edge.yaml").is_file()


def test_init_into_a_directory_writes_edge_yaml_there(tmp_path: Path) -> None:
    proc = cli("init", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "edge.yaml").read_text().startswith("# edge.yaml")


def test_render_onto_a_file_is_bad_input(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("mine\n")
    proc = cli("render", "-i", str(write(tmp_path, ISSUE_EXAMPLE)), "-o", str(target))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"edgekit: {target}: exists and is not a directory (hint: -o names a directory to "
        "write the files into)"
    ]
    assert target.read_text() == "mine\n"


def test_render_below_a_file_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    proc = cli(
        "render", "-i", str(write(tmp_path, ISSUE_EXAMPLE)), "-o", str(tmp_path / "file" / "out")
    )
    assert proc.returncode == 2 and "cannot write: Not a directory" in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if "warning" not in ln]) == 1


def test_a_missing_identity_file_is_bad_input_for_commands_that_connect(tmp_path: Path) -> None:
    path = write(tmp_path, inventory(ssh={"user": "debian", "identity_file": "keys/nope"}))
    with pytest.raises(InventoryError) as info:
        load_inventory(path, for_ssh=True)
    assert info.value.exit_code == 2
    line = path.read_text().splitlines().index("  identity_file: keys/nope") + 1
    assert info.value.lines == [
        f"{path}:{line}: ssh.identity_file: no such file on this machine "
        "(got 'keys/nope'); write the path of the file (relative paths "
        "start at edge.yaml's directory), or leave the key out"
    ]
    assert any("ssh.identity_file" in w for w in load_inventory(path).warnings)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "nope").write_text("key\n")
    assert not load_inventory(path, for_ssh=True).warnings


@pytest.mark.parametrize("command", ["deploy", "status", "failover-test"])
def test_commands_that_connect_refuse_a_missing_known_hosts_before_connecting(
    tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgekit.hosts

    def no_dialling(*_a: object, **_k: object) -> None:
        raise AssertionError("the inventory was not refused before connecting")

    monkeypatch.setattr(edgekit.hosts, "peer_hosts", no_dialling)
    inv = inventory(ssh={"user": "debian", "known_hosts": "gone/known_hosts"})
    path = str(write(tmp_path, inv))
    proc = cli(command, "-i", path, "--yes" if command == "deploy" else "--json")
    assert proc.returncode == 2, proc.stderr
    assert "ssh.known_hosts: no such file on this machine" in proc.stderr
    assert "Traceback" not in proc.stderr
    # validate only warns: the file may exist on the machine that deploys.
    checked = cli("validate", "-i", path, env=NO_BINARIES)
    assert checked.returncode == 0, checked.stderr
    assert "edgekit: warning:" in checked.stderr and "ssh.known_hosts" in checked.stderr


def test_validate_says_which_real_binary_checks_did_not_run(tmp_path: Path) -> None:
    path = str(write(tmp_path, ISSUE_EXAMPLE))
    proc = cli("validate", "-i", path, env={"PATH": str(tmp_path)})  # no program found
    assert proc.returncode == 0, proc.stderr
    assert "edgekit: warning: haproxy -c did not run: haproxy not installed" in proc.stderr
    assert "edgekit: warning: keepalived -t did not run: " in proc.stderr
    assert "no real-binary check ran; skipped: haproxy -c, keepalived -t" in proc.stderr
    strict = cli("validate", "-i", path, "--strict", env={"PATH": str(tmp_path)})
    assert strict.returncode == 1
    assert f"edgekit: {path}: only partly validated: haproxy -c did not run" in strict.stderr


# --- the README's own example ----------------------------------------------------------------


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The inventory (edge.yaml)") :]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match, "README's inventory section has no yaml block"
    return match.group(1)


def test_the_readme_example_inventory_validates(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(readme_example())
    proc = cli("validate", "-i", str(path))
    assert proc.returncode == 0, proc.stderr
    inv = load_inventory(path).inventory
    assert {s.name for s in inv.services} == {"http", "kubernetes-api"}
    # Every key README shows is a real key: nothing was dropped as unknown.
    assert inv.haproxy.maxconn == 20000 and inv.vips[0].preferred == "proxy1"


def test_a_file_of_too_many_values_is_refused_before_it_is_built(tmp_path: Path) -> None:
    items = "[" + ",".join(["o"] * (limits.MAX_VALUES + 10)) + "]"
    text = yaml.safe_dump(ISSUE_EXAMPLE, sort_keys=False) + f"x-filler: {items}\n"
    path = write(tmp_path, text)
    start = time.perf_counter()
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    elapsed = time.perf_counter() - start
    assert info.value.lines == [
        f"{path}: (top level): the file holds more than 200000 values; "
        "an inventory of 5,000 servers holds about 40,000: is this the "
        "right file?"
    ]
    assert elapsed < 1.5, elapsed  # counted on the event stream: no node graph is built


# Fragments that often break YAML or the model, spliced at random into good inventories.
FUZZ_TOKENS = [
    "0443",
    "1:20",
    "yes",
    "~",
    "&a",
    "*a",
    "<<: *a",
    "!!binary x",
    "[",
    "]",
    "{",
    "}",
    '"\\e[2J"',
    "'x'",
    "-1",
    "1e309",
    ".inf",
    "0x1F",
    "10_0",
    "\t",
    "\n",
    "- ",
    ": ",
    "#",
    "!",
    "`",
    "|",
    ">",
    "\\u202e",
    "9" * 30,
    "2024-01-01",
    "listen x",
    "eth0/1",
    "0.0.0.0/0",
    "127.0.0.1",
    "10.0.0.1/33",
    "~!x/",
]


@pytest.mark.parametrize("seed", range(2))
def test_mangled_inventories_load_or_fail_in_printable_lines(tmp_path: Path, seed: int) -> None:
    import random

    rng = random.Random(seed)
    goods = [p.read_text() for p in GOOD]
    for _ in range(80):
        text = rng.choice(goods)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text))
            cut = at + rng.choice([0, 0, rng.randint(1, 8)])
            text = text[:at] + rng.choice(FUZZ_TOKENS + [""]) + text[cut:]
        path = write(tmp_path, text)
        try:
            render.render_all(load_inventory(path))
        except EdgekitError as exc:  # anything else is an internal error: the test fails
            assert all(ln.isprintable() for ln in str(exc).splitlines()), repr(str(exc))
