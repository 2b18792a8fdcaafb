"""Every rendered config passes the real haproxy and keepalived validators, and the
validators are shown to reject broken configs (so a pass means something).

keepalived -t checks that the interfaces it names exist, so it runs inside a
network namespace this test creates with veth links of those names (the kernel
has no `dummy` link type) and deletes afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgekit import binaries, render
from edgekit.inventory import Loaded, load_inventory
from edgekit.render import RenderedFile
from tests.cli import run
from tests.conftest import need_program, need_root

pytestmark = pytest.mark.binaries

DATA = Path(__file__).resolve().parents[1] / "data"
# Every good test inventory, and the Vagrant lab's, which users deploy as shipped.
VAGRANT = Path(__file__).resolve().parents[2] / "vagrant" / "edge.yaml"
GOOD = [*sorted((DATA / "good").glob("*.yaml")), VAGRANT]
IDS = [p.stem if p != VAGRANT else "vagrant-lab" for p in GOOD]
STRONG = "Zq8-vLm3pRt7xW"
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
DEFAULT_HAPROXY = "/etc/default/haproxy"


@pytest.fixture(autouse=True)
def _secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", STRONG)
    monkeypatch.setenv("EDGEKIT_VRRP_PASS", "k3Vp9xQ2")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def _netns_exists(name: str) -> bool:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return any(line.split()[:1] == [name] for line in out.splitlines())


@pytest.fixture
def netns() -> Iterator[Callable[[set[str]], str]]:
    """make(interfaces) -> the name of a new namespace holding links of those names."""
    need_root()
    need_program("ip")
    made: list[str] = []

    def make(interfaces: set[str]) -> str:
        name = f"ektest-{uuid.uuid4().hex[:10]}"
        _ip("netns", "add", name)
        made.append(name)
        for i, ifname in enumerate(sorted(interfaces)):
            _ip("-n", name, "link", "add", ifname, "type", "veth", "peer", "name", f"ekpeer{i}")
            _ip("-n", name, "link", "set", ifname, "up")
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)
        assert not _netns_exists(name), f"network namespace {name} was not deleted"


def _interfaces(loaded: Loaded) -> set[str]:
    inv = loaded.inventory
    return {p.interface or v.interface or inv.vrrp.interface for p in inv.peers for v in inv.vips}


def _replace(files: list[RenderedFile], path: str, old: str, new: str) -> list[RenderedFile]:
    out = []
    for f in files:
        if f.path == path:
            assert old in f.content, (path, old)
            f = dataclasses.replace(f, content=f.content.replace(old, new))
        out.append(f)
    return out


def _need_keepalived_check() -> None:
    need_root()
    need_program("keepalived", "ip", "unshare", "mount")


# --- every good inventory, every peer -------------------------------------------------------


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_haproxy_accepts_every_rendered_config(path: Path) -> None:
    need_program("haproxy")
    files = render.render_all(load_inventory(path))
    assert len(files) >= 2
    for peer, peer_files in files.items():
        check = binaries.haproxy_check(peer, peer_files, isolated=True)  # no DNS query
        assert check is not None
        assert check.ok, f"{peer}: {check.output}"
        assert "[WARNING]" not in check.output, f"{peer}: {check.output}"
        assert "[ALERT]" not in check.output


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_keepalived_accepts_every_rendered_config(
    path: Path, netns: Callable[[set[str]], str]
) -> None:
    _need_keepalived_check()
    loaded = load_inventory(path)
    ns = netns(_interfaces(loaded))
    files = render.render_all(loaded)
    for peer, peer_files in files.items():
        check = binaries.keepalived_check(peer, peer_files, netns=ns)
        assert check is not None
        assert check.ok, f"{peer}: {check.output}"
        assert "WARNING" not in check.output, f"{peer}: {check.output}"


# --- negative controls: the checks can fail ----------------------------------------------


def _issue_example() -> tuple[Loaded, dict[str, list[RenderedFile]]]:
    loaded = load_inventory(DATA / "good" / "issue-example.yaml")
    return loaded, render.render_all(loaded)


def test_haproxy_check_rejects_an_unknown_keyword() -> None:
    need_program("haproxy")
    _, files = _issue_example()
    bad = _replace(files["proxy1"], HAPROXY_CFG, "option redispatch", "option redispatchh")
    check = binaries.haproxy_check("proxy1", bad)
    assert check is not None and not check.ok
    assert "redispatchh" in check.output
    assert HAPROXY_CFG in check.output  # the temp path is reported as the real one


def test_haproxy_check_fails_without_the_environment_file() -> None:
    need_program("haproxy")
    _, files = _issue_example()
    bad = [
        dataclasses.replace(f, content="") if f.path == DEFAULT_HAPROXY else f
        for f in files["proxy1"]
    ]
    check = binaries.haproxy_check("proxy1", bad)
    assert check is not None and not check.ok
    assert "is not set" in check.output


@pytest.mark.parametrize(
    "var", ["EDGEKIT_PEER_NAME", "EDGEKIT_PEER_ADDR", "EDGEKIT_STATS_PASSWORD"]
)
def test_haproxy_check_fails_when_one_environment_value_is_missing(var: str) -> None:
    need_program("haproxy")
    _, files = _issue_example()
    env = next(f for f in files["proxy1"] if f.path == DEFAULT_HAPROXY)
    kept = "".join(
        ln for ln in env.content.splitlines(keepends=True) if not ln.startswith(f"{var}=")
    )
    assert kept != env.content
    bad = [
        dataclasses.replace(f, content=kept) if f.path == DEFAULT_HAPROXY else f
        for f in files["proxy1"]
    ]
    check = binaries.haproxy_check("proxy1", bad)
    assert check is not None and not check.ok
    assert f"{var} is not set" in check.output
    assert STRONG not in check.output


def test_keepalived_check_rejects_vrid_300(netns: Callable[[set[str]], str]) -> None:
    _need_keepalived_check()
    loaded, files = _issue_example()
    ns = netns(_interfaces(loaded))
    good = binaries.keepalived_check("proxy1", files["proxy1"], netns=ns)
    assert good is not None
    assert good.ok, good.output  # the same setup passes unbroken
    bad = _replace(
        files["proxy1"], KEEPALIVED_CONF, "virtual_router_id 51", "virtual_router_id 300"
    )
    check = binaries.keepalived_check("proxy1", bad, netns=ns)
    assert check is not None and not check.ok
    assert re.search(r"\b300\b", check.output), check.output


def test_keepalived_check_fails_where_the_named_interface_is_missing(
    netns: Callable[[set[str]], str],
) -> None:
    _need_keepalived_check()
    loaded = load_inventory(DATA / "good" / "interface-override.yaml")
    files = render.render_all(loaded)
    ns = netns({"eth1"})  # proxy2's own line says ens4, which this namespace lacks
    one = binaries.keepalived_check("proxy1", files["proxy1"], netns=ns)
    two = binaries.keepalived_check("proxy2", files["proxy2"], netns=ns)
    assert one is not None
    assert one.ok, one.output
    assert two is not None
    assert not two.ok
    assert "ens4" in two.output


def test_validate_command_runs_haproxy_and_keepalived_checks() -> None:
    need_program("haproxy")
    _need_keepalived_check()
    proc = run("validate", "-i", str(DATA / "good" / "issue-example.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert "haproxy -c and keepalived -t passed" in proc.stderr
    assert "did not run" not in proc.stderr
    strict = run("validate", "--strict", "-i", str(DATA / "good" / "issue-example.yaml"))
    assert strict.returncode == 0, strict.stderr


# --- validate: the checks it runs, and what their rejections point at -------------------


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("path", GOOD, ids=IDS)
def test_keepalived_accepts_every_config_in_its_own_namespace(path: Path) -> None:
    _need_keepalived_check()
    loaded = load_inventory(path)
    files = render.render_all(loaded)
    netns_before, links_before = (
        subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout,
        _links(),
    )
    for peer in loaded.inventory.peers:
        check = binaries.keepalived_check_isolated(
            peer.name, files[peer.name], render.peer_interfaces(loaded.inventory, peer)
        )
        assert isinstance(check, binaries.BinaryCheck), check
        assert check.ok and "WARNING" not in check.output, f"{peer.name}: {check.output}"
    # The namespace lived as long as the check: nothing is left on this machine.
    assert (
        subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        == netns_before
    )
    assert _links() == links_before and "ekcheck" not in _links()


def _inventory_text(**replace: str) -> str:
    text = (DATA / "good" / "issue-example.yaml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_a_haproxy_rejection_names_the_inventory_key_and_line(tmp_path: Path) -> None:
    need_program("haproxy")
    path = tmp_path / "edge.yaml"
    path.write_text(
        _inventory_text(
            **{
                "    timeout: 1h\n": "    timeout: 1h\n    haproxy_options:\n"
                "      - option tcp-check\n      - option no-such-option\n"
            }
        )
    )
    proc = run("validate", "-i", str(path))
    assert proc.returncode == 2, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if "warning" not in ln]
    number = path.read_text().splitlines().index("      - option no-such-option") + 1
    assert line.startswith(
        f"edgekit: {path}:{number}: services[2].haproxy_options[1]: "
        "haproxy -c rejects the rendered config for peer proxy1: "
    ), line
    assert "no-such-option" in line
    data = json.loads(run("validate", "--json", "-i", str(path)).stdout)
    assert data["errors"][0]["path"] == "services[2].haproxy_options[1]"
    assert data["errors"][0]["line"] == number


def test_a_keepalived_rejection_maps_to_the_inventory_key() -> None:
    _need_keepalived_check()
    loaded, files = _issue_example()
    bad = _replace(
        files["proxy1"], KEEPALIVED_CONF, "virtual_router_id 51", "virtual_router_id 300"
    )
    check = binaries.keepalived_check_isolated("proxy1", bad, ["eth1"])
    assert isinstance(check, binaries.BinaryCheck) and not check.ok
    what, line = binaries.first_error(check)
    assert line is not None and "300" in what
    conf = next(f.content for f in bad if f.path == KEEPALIVED_CONF)
    assert render.keepalived_sources(loaded.inventory, conf)[line] == "vips[0].vrid"


def test_host_name_servers_validate_without_dns(tmp_path: Path) -> None:
    need_program("haproxy")
    need_root()  # haproxy -c runs in a network namespace of its own: no DNS query leaves
    path = tmp_path / "edge.yaml"
    path.write_text(
        _inventory_text(
            **{
                "address: 10.10.0.125": "address: controller0.edgekit-test.invalid",
                "address: 10.10.0.126": "address: controller1.edgekit-test.invalid",
            }
        )
    )
    proc = run("validate", "-i", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "a host name (and 1 more servers)" in proc.stderr


@pytest.mark.parametrize("value", ["1ms", "24d", "2147483647ms", "596h"])
def test_haproxy_accepts_every_duration_at_the_bounds(tmp_path: Path, value: str) -> None:
    need_program("haproxy")
    path = tmp_path / "edge.yaml"
    path.write_text(
        _inventory_text(
            **{"    timeout: 1h\n": f"    timeout: {value}\n    check: {{inter: {value}}}\n"}
        )
    )
    loaded = load_inventory(path)
    for peer, files in render.render_all(loaded).items():
        check = binaries.haproxy_check(peer, files, isolated=True)
        assert check is not None
        assert check.ok, check.output


def test_haproxy_refuses_a_duration_past_the_bound_edgekit_refuses() -> None:
    need_program("haproxy")
    _, files = _issue_example()
    bad = _replace(files["proxy1"], HAPROXY_CFG, "timeout server 1h", "timeout server 2147483648")
    check = binaries.haproxy_check("proxy1", bad, isolated=True)
    assert check is not None and not check.ok and "timer overflow" in check.output


def test_haproxy_would_accept_a_section_opened_from_haproxy_options() -> None:
    # Why validation must refuse section keywords itself: haproxy -c is happy with them.
    need_program("haproxy")
    _, files = _issue_example()
    bad = _replace(
        files["proxy1"],
        HAPROXY_CFG,
        "    timeout tunnel 1h\n",  # in the API service's backend only
        "    timeout tunnel 1h\n    listen sneaky\n    bind 127.0.0.1:2222\n",
    )
    check = binaries.haproxy_check("proxy1", bad, isolated=True)
    assert check is not None
    assert check.ok, check.output


@pytest.mark.parametrize("secret", ["a'b;c%d", "p@ss:w/d", "ABC-_.+="])
def test_keepalived_reads_every_vrrp_secret_edgekit_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    _need_keepalived_check()
    monkeypatch.setenv("EDGEKIT_VRRP_PASS", secret)
    loaded = load_inventory(DATA / "good" / "vrrp2-auth.yaml")
    assert loaded.secrets.vrrp_auth == secret
    files = render.render_all(loaded)
    for peer in loaded.inventory.peers:
        check = binaries.keepalived_check_isolated(
            peer.name, files[peer.name], render.peer_interfaces(loaded.inventory, peer)
        )
        assert isinstance(check, binaries.BinaryCheck), check
        assert check.ok, check.output


def test_an_unquoted_brace_in_auth_pass_would_break_keepalived_conf() -> None:
    # Why the secret is quoted and `}` refused: keepalived reads it as the block's end.
    _need_keepalived_check()
    loaded = load_inventory(DATA / "good" / "vrrp2-auth.yaml")
    files = render.render_all(loaded)["proxy1"]
    bad = _replace(files, KEEPALIVED_CONF, 'auth_pass "k3Vp9xQ2"', "auth_pass k3V}p9xQ")
    interfaces = render.peer_interfaces(loaded.inventory, loaded.inventory.peers[0])
    check = binaries.keepalived_check_isolated("proxy1", bad, interfaces)
    assert isinstance(check, binaries.BinaryCheck) and not check.ok
