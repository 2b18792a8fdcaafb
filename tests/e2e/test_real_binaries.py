"""Every rendered config passes the real haproxy and keepalived validators, and the
validators are shown to reject broken configs (so a pass means something).

keepalived -t checks that the interfaces it names exist, so it runs inside a
network namespace this test creates with veth links of those names (the kernel
has no `dummy` link type) and deletes afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgekit import binaries, render
from edgekit.inventory import Loaded, load_inventory
from edgekit.render import RenderedFile
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
        check = binaries.haproxy_check(peer, peer_files)
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
    assert two is not None and not two.ok
    assert "ens4" in two.output


def test_validate_command_runs_haproxy_check(tmp_path: Path) -> None:
    need_program("haproxy")
    env = {**os.environ, "EDGEKIT_STATS_PASSWORD": STRONG}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgekit",
            "validate",
            "-i",
            str(DATA / "good" / "issue-example.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "haproxy -c passed" in proc.stderr
