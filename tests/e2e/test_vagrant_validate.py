"""The Vagrant lab's files, checked by the real tools without starting any VM.

- `vagrant validate` (Debian's vagrant with its vagrant-libvirt plugin, which
  makes libvirt the provider whose settings get validated) for 2 and 3 proxies;
- the network settings the Vagrantfile gives vagrant-libvirt, read by
  evaluating it under a recording stand-in for Vagrant's DSL: the lab's
  private network is never NAT, and isolated mode leaves no NAT network at all;
- shellcheck on the provisioning scripts, and the nodes' web server on loopback;
- `edgekit validate` on vagrant/edge.yaml.

Nothing here creates a VM or a libvirt network, and nothing talks to libvirtd.
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

from edgekit.lab import vagrant as lab

try:
    from tests.conftest import need, need_program
except ImportError:  # tests/ is not a package on sys.path: pytest put tests/ itself there
    from conftest import need, need_program  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
VAGRANT_DIR = ROOT / "vagrant"
STRONG_PASSWORD = "Vagrant-Lab-7f3kQ9zR2x"


def lab_env(tmp_path: Path, **extra: str) -> dict[str, str]:
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


def vagrant(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["vagrant", *args],
        cwd=VAGRANT_DIR,
        env=lab_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def libvirt_plugin() -> None:
    need_program("vagrant")
    plugins = subprocess.run(
        ["vagrant", "plugin", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1"},
        timeout=120,
        check=False,
    ).stdout
    need(
        "vagrant-libvirt" in plugins,
        "needs the vagrant-libvirt plugin (apt-get install vagrant-libvirt)",
    )


@pytest.mark.parametrize("proxies", ["2", "3"])
def test_vagrant_validate_passes(libvirt_plugin: None, tmp_path: Path, proxies: str) -> None:
    result = vagrant(tmp_path, "validate", EDGEKIT_PROXIES=proxies)

    assert result.returncode == 0, result.stderr + result.stdout
    assert "validated successfully" in result.stdout


def test_vagrant_validate_passes_in_isolated_mode(libvirt_plugin: None, tmp_path: Path) -> None:
    result = vagrant(tmp_path, "validate", EDGEKIT_VAGRANT_ISOLATED="1", EDGEKIT_PROXIES="3")

    assert result.returncode == 0, result.stderr + result.stdout


def test_vagrant_defines_one_machine_per_proxy_plus_three_nodes(
    libvirt_plugin: None, tmp_path: Path
) -> None:
    # A not-created machine's status needs no libvirtd: this only reads the Vagrantfile.
    result = vagrant(tmp_path, "status", "--machine-readable", EDGEKIT_PROXIES="3")

    assert result.returncode == 0, result.stderr + result.stdout
    machines = lab.parse_machine_readable_status(result.stdout)
    assert list(machines) == ["edge1", "edge2", "edge3", "node1", "node2", "node3"]
    assert {m.provider for m in machines.values()} == {"libvirt"}


@pytest.mark.parametrize(
    ("variable", "value"),
    [("EDGEKIT_PROXIES", "1"), ("EDGEKIT_PROXIES", "ten"), ("EDGEKIT_VAGRANT_SUBNET", "10.1")],
)
def test_vagrantfile_rejects_bad_settings_with_one_line(
    libvirt_plugin: None, tmp_path: Path, variable: str, value: str
) -> None:
    result = vagrant(tmp_path, "validate", **{variable: value})

    assert result.returncode != 0
    assert f"edgekit lab: {variable}=" in result.stderr


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


@pytest.fixture
def node_server(tmp_path: Path) -> Iterator[list[int]]:
    """The nodes' web server from vagrant/provision/backend.py, on loopback."""
    need_program("openssl")
    key, cert = tmp_path / "tls.key", tmp_path / "tls.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=node1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    ports = free_ports(3)
    port_args = ["--http-port", str(ports[0]), "--https-port", str(ports[1])]
    port_args += ["--api-port", str(ports[2])]
    server = subprocess.Popen(
        [sys.executable, str(VAGRANT_DIR / "provision" / "backend.py"), "--name", "node1",
         "--cert", str(cert), "--key", str(key), "--bind", "127.0.0.1", *port_args],
    )  # fmt: skip
    probe = [sys.executable, str(VAGRANT_DIR / "provision" / "backend.py"), "--probe"]
    try:
        deadline = time.monotonic() + 10
        while subprocess.run([*probe, "127.0.0.1", *port_args], check=False).returncode != 0:
            assert server.poll() is None, "backend.py exited"
            assert time.monotonic() < deadline, "backend.py did not answer within 10 s"
            time.sleep(0.1)
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
        [sys.executable, str(VAGRANT_DIR / "provision" / "backend.py"), "--probe", "127.0.0.1",
         "--http-port", ports[0], "--https-port", ports[1], "--api-port", ports[2]],
        check=False, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1


# --- the lab's inventory ------------------------------------------------------------


def edgekit_validate(password: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGEKIT_STATS_PASSWORD"}
    if password is not None:
        env["EDGEKIT_STATS_PASSWORD"] = password
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "edgekit", "validate", "-i", str(VAGRANT_DIR / "edge.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_lab_inventory_passes_edgekit_validate() -> None:
    result = edgekit_validate(STRONG_PASSWORD)

    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout + result.stderr


def test_lab_inventory_needs_the_stats_password() -> None:
    result = edgekit_validate(None)

    assert result.returncode == 2
    assert "EDGEKIT_STATS_PASSWORD" in result.stderr
