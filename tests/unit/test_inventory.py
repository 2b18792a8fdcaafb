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
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgekit.errors import InputError, printable
from edgekit.inventory import load_inventory, parse_peers_flag
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
CLI_SAMPLE = [p for p in BROKEN if p.name.startswith(tuple(CLASSES))][::9]


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
    assert line == f"{tmp_path / 'edge.yaml'}:2: cluster: key repeated (first at line 1)"


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


def test_unknown_key_without_a_close_match_has_no_suggestion(tmp_path: Path) -> None:
    line = only_error(tmp_path, inventory(zzzqqq=1))
    assert line.endswith(": zzzqqq: unknown key")


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
    assert match["msg"].endswith("(got '10.10.0.11')")


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


def test_keys_with_brackets_do_not_crash_the_line_lookup(tmp_path: Path) -> None:
    line = only_error(tmp_path, inventory(**{"foo[bar]": 1}))
    assert line.endswith(": foo[bar]: unknown key")


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
                "message": "duplicate peer address (also peers[0]) (got '10.10.0.11')",
            },
            {
                "file": str(path),
                "line": 10,
                "path": "vips[0].vrid",
                "message": "VRID must be within 1..255 (got 256)",
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
    assert cli("validate", "-i", "edge.yaml", cwd=tmp_path).returncode == 0


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
