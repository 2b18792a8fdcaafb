"""The Vagrant lab's files, checked without Vagrant, root or a VM:

- the network settings the Vagrantfile gives vagrant-libvirt, read by evaluating it
  under a recording stand-in for Vagrant's DSL (needs ruby): the lab's private network
  is never NAT, and isolated mode leaves no NAT network at all;
- shellcheck on the provisioning scripts, and the nodes' web server on loopback;
- `edgekit validate` on vagrant/edge.yaml.

`vagrant validate` and `vagrant status` on the same files are in
tests/e2e/test_vagrant_validate.py (they need vagrant and its libvirt plugin).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import Result, run
from tests.conftest import need_program

ROOT = Path(__file__).resolve().parents[2]
VAGRANT_DIR = ROOT / "vagrant"
STRONG_PASSWORD = "Vagrant-Lab-7f3kQ9zR2x"


def lab_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment `vagrant` (or the Vagrantfile) runs in: only the settings given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEKIT_", "VAGRANT_"))}
    env.update(
        # Machine state and vagrant's home go to a scratch folder, not the checkout or ~.
        VAGRANT_DOTFILE_PATH=str(tmp_path / "dotvagrant"),
        VAGRANT_HOME=str(tmp_path / "vagrant.d"),
        VAGRANT_CHECKPOINT_DISABLE="1",
        VAGRANT_DEFAULT_PROVIDER="libvirt",
    )
    env.update(extra)
    return env


# --- the Vagrantfile's settings, recorded --------------------------------------

# A stand-in for Vagrant's configuration DSL: every `x.y = v` is recorded under
# its path, every call with a block opens a scope named after its arguments,
# and every other call is recorded with its arguments.
RECORDER = r"""
require "json"
$out = { "set" => {}, "calls" => [] }
class Rec
  def initialize(path) @path = path end
  def method_missing(name, *args, **kw, &blk)
    name = name.to_s
    if name.end_with?("=")
      $out["set"][(@path + [name.chomp("=")]).join(".")] = args.first
      return nil
    end
    child = Rec.new(@path + [[name, *args].join(":")])
    if blk
      blk.call(child)
    elsif !args.empty? || !kw.empty?
      $out["calls"] << { "at" => @path.join("."), "name" => name, "args" => args, "kw" => kw }
    end
    child
  end
  def respond_to_missing?(*) true end
end
module Vagrant
  def self.configure(_version) yield Rec.new(["config"]) end
end
Dir.chdir(ARGV[0])
load File.join(ARGV[0], "Vagrantfile")
puts JSON.generate($out)
"""


def recorded(tmp_path: Path, **extra: str) -> dict:
    need_program("ruby")
    script = tmp_path / "record.rb"
    script.write_text(RECORDER)
    result = subprocess.run(
        ["ruby", str(script), str(VAGRANT_DIR)],
        env=lab_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def private_networks(rec: dict) -> dict[str, dict]:
    return {
        call["at"].split(".")[2].removeprefix("define:"): call["kw"]
        for call in rec["calls"]
        if call["name"] == "network" and call["args"] == ["private_network"]
    }


def test_private_network_is_isolated_and_never_destroyed_by_vagrant(tmp_path: Path) -> None:
    rec = recorded(tmp_path, EDGEKIT_PROXIES="3")
    networks = private_networks(rec)

    assert {name: kw["ip"] for name, kw in networks.items()} == {
        "edge1": "192.168.56.11",
        "edge2": "192.168.56.12",
        "edge3": "192.168.56.13",
        "node1": "192.168.56.21",
        "node2": "192.168.56.22",
        "node3": "192.168.56.23",
    }
    assert {
        (kw["libvirt__forward_mode"], kw["libvirt__always_destroy"]) for kw in networks.values()
    } == {("none", False)}
    assert rec["set"]["config.vm.box"] == "debian/bookworm64"
    assert rec["set"]["config.vm.provider:libvirt.driver"] == "qemu"
    # The default (connected) mode keeps vagrant-libvirt's usual management network.
    assert "config.vm.provider:libvirt.management_network_mode" not in rec["set"]


def test_isolated_mode_leaves_no_nat_network(tmp_path: Path) -> None:
    settings = recorded(tmp_path, EDGEKIT_VAGRANT_ISOLATED="1")["set"]
    libvirt = {
        key.removeprefix("config.vm.provider:libvirt."): value
        for key, value in settings.items()
        if key.startswith("config.vm.provider:libvirt.")
    }

    assert libvirt["management_network_mode"] == "none"
    assert libvirt["management_network_keep"] is True
    # A network called vagrant-libvirt may already exist as NAT and would be reused.
    assert libvirt["management_network_name"] != "vagrant-libvirt"


def test_isolated_mode_removes_default_routes_in_every_guest(tmp_path: Path) -> None:
    calls = recorded(tmp_path, EDGEKIT_VAGRANT_ISOLATED="1")["calls"]
    common = {
        call["at"]: call["kw"]["args"]
        for call in calls
        if call["name"] == "provision" and call["args"] == ["common"]
    }

    assert len(common) == 5
    assert all(args == ["isolated"] for args in common.values())


def test_box_subnet_and_driver_follow_the_environment(tmp_path: Path) -> None:
    rec = recorded(
        tmp_path,
        EDGEKIT_VAGRANT_BOX="local/bookworm",
        EDGEKIT_VAGRANT_SUBNET="10.77.5.0/24",
        EDGEKIT_VAGRANT_LIBVIRT_DRIVER="kvm",
    )

    assert rec["set"]["config.vm.box"] == "local/bookworm"
    assert rec["set"]["config.vm.provider:libvirt.driver"] == "kvm"
    assert private_networks(rec)["node1"]["ip"] == "10.77.5.21"


def test_machines_that_exist_stay_defined_when_fewer_proxies_are_asked_for(
    tmp_path: Path,
) -> None:
    # Otherwise `vagrant destroy` run without EDGEKIT_PROXIES=4 would leave edge4 running.
    machine = tmp_path / "dotvagrant" / "machines" / "edge4" / "libvirt"
    machine.mkdir(parents=True)
    (machine / "id").write_text("0b6c6a3e-edge4\n")

    networks = private_networks(recorded(tmp_path, EDGEKIT_PROXIES="2"))

    assert [name for name in networks if name.startswith("edge")] == [
        "edge1",
        "edge2",
        "edge3",
        "edge4",
    ]


# --- provisioning ------------------------------------------------------------------


def test_provisioning_scripts_pass_shellcheck() -> None:
    need_program("shellcheck")
    scripts = sorted(str(p) for p in (VAGRANT_DIR / "provision").glob("*.sh"))
    assert scripts, "no provisioning scripts found"

    result = subprocess.run(
        ["shellcheck", *scripts], capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


BACKEND = [sys.executable, str(VAGRANT_DIR / "provision" / "backend.py")]


@pytest.fixture
def node_server(tmp_path: Path) -> Iterator[list[int]]:
    """The nodes' web server from vagrant/provision/backend.py, on loopback."""
    need_program("openssl")
    key, cert = tmp_path / "tls.key", tmp_path / "tls.crt"
    # An EC key: as good for a loopback test as RSA, and made in no time.
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=node1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    ports = free_ports(3)
    port_args = ["--http-port", str(ports[0]), "--https-port", str(ports[1])]
    port_args += ["--api-port", str(ports[2])]
    server = subprocess.Popen(
        [*BACKEND, "--name", "node1", "--cert", str(cert), "--key", str(key),
         "--bind", "127.0.0.1", *port_args],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        probe = [*BACKEND, "--probe", "127.0.0.1", *port_args]
        while subprocess.run(probe, check=False).returncode != 0:
            assert server.poll() is None, "backend.py exited"
            assert time.monotonic() < deadline, "backend.py did not answer within 10 s"
            time.sleep(0.05)
        yield ports
    finally:
        server.terminate()
        server.wait(timeout=10)


def fetch(url: str) -> tuple[int, str]:
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=5, context=insecure) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_node_server_answers_with_its_name_and_an_api_healthz(node_server: list[int]) -> None:
    http_port, https_port, api_port = node_server

    assert fetch(f"http://127.0.0.1:{http_port}/") == (200, "node1\n")
    assert fetch(f"https://127.0.0.1:{https_port}/anything") == (200, "node1\n")
    assert fetch(f"https://127.0.0.1:{api_port}/healthz") == (200, "ok\n")
    assert fetch(f"https://127.0.0.1:{api_port}/")[0] == 404


def test_node_server_probe_fails_when_nothing_listens() -> None:
    ports = [str(p) for p in free_ports(3)]
    result = subprocess.run(
        [*BACKEND, "--probe", "127.0.0.1",
         "--http-port", ports[0], "--https-port", ports[1], "--api-port", ports[2]],
        check=False, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1


# --- the lab's inventory ------------------------------------------------------------


def edgekit_validate(monkeypatch: pytest.MonkeyPatch, password: str | None) -> Result:
    """`edgekit validate` on the lab's inventory (in-process), with this stats password."""
    monkeypatch.delenv("EDGEKIT_STATS_PASSWORD", raising=False)
    env = {} if password is None else {"EDGEKIT_STATS_PASSWORD": password}
    return run("validate", "-i", str(VAGRANT_DIR / "edge.yaml"), env=env)


def test_lab_inventory_passes_edgekit_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    result = edgekit_validate(monkeypatch, STRONG_PASSWORD)

    assert result.exit_code == 0, result.stderr
    assert "valid" in result.stdout + result.stderr


def test_lab_inventory_needs_the_stats_password(monkeypatch: pytest.MonkeyPatch) -> None:
    result = edgekit_validate(monkeypatch, None)

    assert result.exit_code == 2
    assert "EDGEKIT_STATS_PASSWORD" in result.stderr
