"""The Vagrant lab's pure parts: vagrant's output formats and the generated inventory.

Fixtures under tests/data/vagrant/ are real output shapes: the libvirt ones
were rendered with Debian vagrant 2.3.4's own ssh-config template (and its
real `status --machine-readable`), the VirtualBox one has the quoted key path
and extra algorithm lines that newer vagrant releases print.
"""

from __future__ import annotations

import copy
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from edgekit.errors import InputError, OperationError, PrerequisiteError
from edgekit.lab import vagrant as lab

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "vagrant"
STRONG_PASSWORD = "Vagrant-Lab-7f3kQ9zR2x"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx3n2qk0G0b7v0mJm5l0c5Y3s9mYQnqkq3n0c8b4Zr1"


def fixture(name: str) -> str:
    return (DATA / name).read_text()


@pytest.fixture
def base() -> dict:
    return yaml.safe_load((ROOT / "vagrant" / "edge.yaml").read_text())


# --- vagrant ssh-config --------------------------------------------------------


def test_libvirt_ssh_config_gives_each_vm_its_management_address_and_key() -> None:
    hosts = lab.parse_ssh_config(fixture("ssh-config-libvirt.txt"))

    assert list(hosts) == ["edge1", "edge2", "edge3", "node1", "node2", "node3"]
    edge1 = hosts["edge1"]
    assert (edge1.hostname, edge1.port, edge1.user) == ("192.168.121.57", 22, "vagrant")
    assert edge1.identity_file == (
        "/home/ana/edgekit/vagrant/.vagrant/machines/edge1/libvirt/private_key"
    )
    assert edge1.options["stricthostkeychecking"] == "no"
    assert edge1.options["userknownhostsfile"] == "/dev/null"
    assert hosts["edge2"].hostname == "192.168.121.203"


def test_virtualbox_ssh_config_unquotes_key_paths_with_spaces_and_keeps_ports() -> None:
    hosts = lab.parse_ssh_config(fixture("ssh-config-virtualbox.txt"))

    assert [(h.hostname, h.port) for h in hosts.values()] == [
        ("127.0.0.1", 2222),
        ("127.0.0.1", 2200),
        ("127.0.0.1", 2201),
        ("127.0.0.1", 2202),
    ]
    assert hosts["edge1"].identity_files == (
        "/home/ana/my labs/edgekit/vagrant/.vagrant/machines/edge1/virtualbox/private_key",
    )
    assert hosts["edge1"].options["hostkeyalgorithms"] == "+ssh-rsa"


def test_ssh_config_keeps_every_identity_file_in_order() -> None:
    (host,) = lab.parse_ssh_config(fixture("ssh-config-two-keys.txt")).values()

    assert host.identity_files == (
        "/root/.vagrant.d/insecure_private_keys/vagrant.key.ed25519",
        "/root/.vagrant.d/insecure_private_keys/vagrant.key.rsa",
    )
    assert host.identity_file == host.identity_files[0]


def test_ssh_config_accepts_equals_syntax_comments_and_any_keyword_case() -> None:
    text = textwrap.dedent(
        """\
        # written by hand
        Host edge1
          hostname=10.0.0.5
          PORT 2022
          User admin
          IdentityFile=~/.ssh/lab
        """
    )
    host = lab.parse_ssh_config(text)["edge1"]

    assert (host.hostname, host.port, host.user, host.identity_file) == (
        "10.0.0.5",
        2022,
        "admin",
        os.path.expanduser("~/.ssh/lab"),  # paramiko expands it, as ssh does
    )


def test_ssh_config_without_hostname_is_an_operation_error_naming_the_host() -> None:
    with pytest.raises(OperationError, match="Host edge1 has no HostName"):
        lab.parse_ssh_config("Host edge1\n  User vagrant\n  Port 22\n")


def test_ssh_config_of_nothing_is_empty() -> None:
    assert lab.parse_ssh_config("") == {}


# --- vagrant status --machine-readable ------------------------------------------


def test_status_of_a_lab_never_brought_up_lists_every_machine_not_created() -> None:
    machines = lab.parse_machine_readable_status(fixture("status-libvirt-not-created.txt"))

    assert list(machines) == ["edge1", "edge2", "node1", "node2", "node3"]
    assert {(m.state, m.provider, m.short, m.up) for m in machines.values()} == {
        ("not_created", "libvirt", "not created", False)
    }


def test_status_tells_a_halted_vm_from_a_running_one() -> None:
    machines = lab.parse_machine_readable_status(fixture("status-libvirt-running.txt"))

    assert machines["edge1"].up and machines["node3"].up
    assert not machines["edge2"].up
    assert machines["edge2"].state == "shutoff"


def test_virtualbox_status_reports_poweroff() -> None:
    machines = lab.parse_machine_readable_status(fixture("status-virtualbox.txt"))

    assert [m.name for m in machines.values() if not m.up] == ["edge3"]
    assert machines["edge3"].short == "poweroff"
    assert machines["edge1"].provider == "virtualbox"


def test_machine_readable_error_is_one_line_with_commas_restored() -> None:
    out = (
        "1795872935,,ui,error,The machine with the name 'nosuch' was not found configured for"
        "\\nthis Vagrant environment.\n"
        "1795872935,,error-exit,Vagrant::Errors::MachineNotFound,The machine with the name "
        "'nosuch' was not found configured for\\nthis Vagrant environment%!(VAGRANT_COMMA) sorry.\n"
    )
    assert lab.machine_readable_error(out) == (
        "The machine with the name 'nosuch' was not found configured for "
        "this Vagrant environment, sorry."
    )
    assert lab.machine_readable_error(fixture("status-libvirt-running.txt")) is None


def test_host_statuses_give_roles_and_private_addresses() -> None:
    machines = lab.parse_machine_readable_status(fixture("status-libvirt-running.txt"))
    statuses = {s.name: s for s in lab.host_statuses(machines, "192.168.56")}

    assert statuses["edge2"].role == "proxy"
    assert statuses["edge2"].address == "192.168.56.12"
    assert not statuses["edge2"].up
    assert statuses["edge2"].detail == "shutoff (libvirt)"
    assert statuses["node3"].role == "backend"
    assert statuses["node3"].address == "192.168.56.23"


# --- addresses ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [None, "192.168.56", "192.168.56.0", "192.168.56.0/24", " 192.168.56 "]
)
def test_subnet_prefix_accepts_the_forms_the_vagrantfile_accepts(raw: str | None) -> None:
    assert lab.subnet_prefix(raw) == "192.168.56"


@pytest.mark.parametrize("raw", ["10.1", "10.1.2.3", "10.1.256", "10.1.2.0/16", "a.b.c"])
def test_subnet_prefix_rejects_anything_but_a_24(raw: str) -> None:
    with pytest.raises(InputError, match="EDGEKIT_VAGRANT_SUBNET"):
        lab.subnet_prefix(raw)


def test_static_inventory_matches_the_vagrantfiles_address_pattern(base: dict) -> None:
    assert [(p["name"], p["address"]) for p in base["peers"]] == [
        (name, lab.lab_address("192.168.56", name)) for name in ("edge1", "edge2")
    ]
    assert [(s["name"], s["address"]) for s in base["backends"]["nodes"]] == [
        (name, lab.lab_address("192.168.56", name)) for name in lab.NODES
    ]
    assert base["vips"][0] == {"address": "192.168.56.100/24", "vrid": 51}


def test_lab_address_refuses_a_machine_the_lab_does_not_have() -> None:
    with pytest.raises(InputError, match="not a machine of the Vagrant lab"):
        lab.lab_address("192.168.56", "proxy1")


# --- build_inventory ------------------------------------------------------------


def test_libvirt_inventory_reaches_peers_over_the_management_network(base: dict) -> None:
    hosts = lab.parse_ssh_config(fixture("ssh-config-libvirt.txt"))
    before = copy.deepcopy(base)

    inv = lab.build_inventory(
        base, hosts, 2, identity_file="/lab/id_ed25519", known_hosts="/lab/known_hosts"
    )

    assert inv["peers"] == [
        {"name": "edge1", "address": "192.168.56.11", "ssh_host": "192.168.121.57"},
        {"name": "edge2", "address": "192.168.56.12", "ssh_host": "192.168.121.203"},
    ]
    assert inv["ssh"] == {
        "user": "vagrant",
        "port": 22,
        "identity_file": "/lab/id_ed25519",
        "known_hosts": "/lab/known_hosts",
    }
    # Everything else is the lab's template, and the template itself is untouched.
    for key in ("cluster", "vrrp", "vips", "backends", "services", "stats"):
        assert inv[key] == base[key]
    assert base == before


def test_virtualbox_inventory_gives_each_peer_its_forwarded_port(base: dict) -> None:
    hosts = lab.parse_ssh_config(fixture("ssh-config-virtualbox.txt"))

    inv = lab.build_inventory(base, hosts, 3, identity_file="/lab/id_ed25519")

    assert inv["peers"] == [
        {"name": "edge1", "address": "192.168.56.11", "ssh_host": "127.0.0.1", "ssh_port": 2222},
        {"name": "edge2", "address": "192.168.56.12", "ssh_host": "127.0.0.1", "ssh_port": 2200},
        {"name": "edge3", "address": "192.168.56.13", "ssh_host": "127.0.0.1", "ssh_port": 2201},
    ]
    assert inv["ssh"]["port"] == 22
    assert "known_hosts" not in inv["ssh"]
    # The guests see SSH from VirtualBox's NAT gateway: the firewall must admit it.
    assert inv["firewall"]["admin_cidrs"] == ["192.168.56.0/24", "10.0.2.0/24"]


def test_libvirt_inventory_admits_the_management_network_to_the_firewall(base: dict) -> None:
    hosts = lab.parse_ssh_config(fixture("ssh-config-libvirt.txt"))
    inv = lab.build_inventory(base, hosts, 2, identity_file="/lab/id_ed25519")
    assert inv["firewall"]["admin_cidrs"] == ["192.168.56.0/24", "192.168.121.0/24"]


def test_inventory_uses_vagrants_key_when_all_proxies_share_it(base: dict) -> None:
    one = fixture("ssh-config-two-keys.txt")
    hosts = lab.parse_ssh_config(one + one.replace("Host edge1", "Host edge2"))

    inv = lab.build_inventory(base, hosts, 2)

    assert inv["ssh"]["identity_file"] == (
        "/root/.vagrant.d/insecure_private_keys/vagrant.key.ed25519"
    )


def test_inventory_refuses_per_vm_keys_without_a_lab_key(base: dict) -> None:
    hosts = lab.parse_ssh_config(fixture("ssh-config-libvirt.txt"))

    with pytest.raises(OperationError, match="different keys"):
        lab.build_inventory(base, hosts, 2)


def test_inventory_names_proxies_missing_from_ssh_config(base: dict) -> None:
    hosts = lab.parse_ssh_config(fixture("ssh-config-libvirt.txt"))

    with pytest.raises(OperationError, match="no entry for edge4"):
        lab.build_inventory(base, hosts, 4, identity_file="/k")


@pytest.mark.parametrize("peers", [1, 10])
def test_inventory_refuses_a_proxy_count_the_lab_cannot_address(base: dict, peers: int) -> None:
    with pytest.raises(InputError, match="2 to 9 proxies"):
        lab.build_inventory(base, {}, peers)


def test_inventory_moves_every_address_to_another_subnet(base: dict) -> None:
    hosts = lab.parse_ssh_config(fixture("ssh-config-libvirt.txt"))

    inv = lab.build_inventory(base, hosts, 2, subnet="10.77.5.0/24", identity_file="/k")

    assert inv["vips"][0]["address"] == "10.77.5.100/24"
    assert [p["address"] for p in inv["peers"]] == ["10.77.5.11", "10.77.5.12"]
    assert [s["address"] for s in inv["backends"]["nodes"]] == [
        "10.77.5.21",
        "10.77.5.22",
        "10.77.5.23",
    ]


def test_inventory_refuses_a_proxy_command(base: dict) -> None:
    text = fixture("ssh-config-libvirt.txt").replace(
        "  LogLevel FATAL\n", "  LogLevel FATAL\n  ProxyCommand ssh -W %h:%p virthost\n", 1
    )
    with pytest.raises(OperationError, match="edge1 is reached through a ProxyCommand"):
        lab.build_inventory(base, lab.parse_ssh_config(text), 2, identity_file="/k")


@pytest.mark.parametrize(
    ("config", "peers"), [("ssh-config-libvirt.txt", 2), ("ssh-config-virtualbox.txt", 3)]
)
def test_generated_inventory_passes_the_inventory_model(
    base: dict, config: str, peers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgekit.inventory.load import load_inventory

    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", STRONG_PASSWORD)
    inv = lab.build_inventory(
        base,
        lab.parse_ssh_config(fixture(config)),
        peers,
        identity_file=str(tmp_path / "id_ed25519"),
        known_hosts=str(tmp_path / "known_hosts"),
    )
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(inv, sort_keys=False))

    loaded = load_inventory(path)

    assert [p.name for p in loaded.inventory.peers] == [f"edge{i}" for i in range(1, peers + 1)]


# --- known_hosts and host keys ----------------------------------------------------


def test_known_hosts_lists_management_and_private_names_of_each_peer(base: dict) -> None:
    libvirt = lab.build_inventory(
        base, lab.parse_ssh_config(fixture("ssh-config-libvirt.txt")), 2, identity_file="/k"
    )
    virtualbox = lab.build_inventory(
        base, lab.parse_ssh_config(fixture("ssh-config-virtualbox.txt")), 2, identity_file="/k"
    )
    keys = {"edge1": HOST_KEY, "edge2": HOST_KEY.replace("Zr1", "Zr2")}

    assert lab.known_hosts_text(libvirt, keys).splitlines() == [
        f"192.168.121.57,192.168.56.11 {HOST_KEY}",
        f"192.168.121.203,192.168.56.12 {keys['edge2']}",
    ]
    assert lab.known_hosts_text(virtualbox, keys).splitlines()[0] == (
        f"[127.0.0.1]:2222,192.168.56.11 {HOST_KEY}"
    )


def test_host_key_is_read_from_noisy_vagrant_ssh_output() -> None:
    out = f"\r\n{HOST_KEY} root@edge1\r\n"
    assert lab.parse_host_key(out) == HOST_KEY
    with pytest.raises(OperationError, match="no SSH host key"):
        lab.parse_host_key("cat: /etc/ssh/ssh_host_ed25519_key.pub: No such file\n")


# --- driving vagrant (a stand-in vagrant program) --------------------------------

FAKE_VAGRANT = """\
#!{python}
import os, sys
data, log = os.environ["FAKE_DATA"], os.environ["FAKE_LOG"]
with open(log, "a") as f:
    f.write(" ".join(sys.argv[1:]) + " | proxies=" + os.environ.get("EDGEKIT_PROXIES", "-") + "\\n")
cmd = sys.argv[1]
if os.environ.get("FAKE_FAIL") == cmd:
    sys.stderr.write("Bringing machine up...\\n\\nError while connecting to Libvirt:\\n"
                     "Failed to connect socket to\\n'/var/run/libvirt/libvirt-sock'\\n")
    sys.exit(1)
if cmd == "status":
    sys.stdout.write(open(os.path.join(data, "status-libvirt-not-created.txt")).read())
elif cmd == "ssh-config":
    sys.stdout.write(open(os.path.join(data, "ssh-config-libvirt.txt")).read())
elif cmd == "ssh":
    sys.stdout.write("{key} root@" + sys.argv[2] + "\\n")
"""


@pytest.fixture
def fake_vagrant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lab folder with the real Vagrantfile and edge.yaml, and a fake `vagrant` on PATH."""
    labdir = tmp_path / "vagrant"
    labdir.mkdir()
    for name in ("Vagrantfile", "edge.yaml"):
        (labdir / name).write_text((ROOT / "vagrant" / name).read_text())
    bindir = tmp_path / "bin"
    bindir.mkdir()
    program = bindir / "vagrant"
    program.write_text(FAKE_VAGRANT.format(python=sys.executable, key=HOST_KEY))
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("EDGEKIT_VAGRANT_DIR", str(labdir))
    monkeypatch.setenv("FAKE_DATA", str(DATA))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
    monkeypatch.delenv("EDGEKIT_VAGRANT_SUBNET", raising=False)
    monkeypatch.delenv("EDGEKIT_PROXIES", raising=False)
    return tmp_path


def calls(root: Path) -> list[str]:
    return (root / "calls.log").read_text().splitlines()


def test_up_writes_a_valid_inventory_with_lab_key_and_known_hosts(
    fake_vagrant: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = lab.up(peers=2)

    state = fake_vagrant / "vagrant" / ".edgekit"
    assert path == lab.inventory_path() == state / "edge.yaml"
    inv = yaml.safe_load(path.read_text())
    assert inv["ssh"]["identity_file"] == str(state / "id_ed25519")
    assert inv["ssh"]["known_hosts"] == str(state / "known_hosts")
    assert (state / "known_hosts").read_text().splitlines()[0] == (
        f"192.168.121.57,192.168.56.11 {HOST_KEY}"
    )
    log = calls(fake_vagrant)
    assert log[1] == "up | proxies=2"
    assert log[2] == "ssh-config edge1 edge2 | proxies=-"
    # The lab key is what gets authorized on each proxy.
    public = (state / "id_ed25519.pub").read_text().split()[1]
    assert [line.split()[:2] for line in log[3:]] == [["ssh", "edge1"], ["ssh", "edge2"]]
    assert all(public in line for line in log[3:])

    from edgekit.inventory.load import load_inventory

    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", STRONG_PASSWORD)
    assert len(load_inventory(path).inventory.peers) == 2


def test_failed_vagrant_command_is_an_operation_error_with_its_message(
    fake_vagrant: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "halt")

    with pytest.raises(OperationError) as caught:
        lab.halt_force("edge1")

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("vagrant halt failed (exit 1): ")
    assert message.endswith("'/var/run/libvirt/libvirt-sock'")
    assert calls(fake_vagrant) == ["halt --force edge1 | proxies=-"]


def test_halt_refuses_a_host_the_lab_does_not_have(fake_vagrant: Path) -> None:
    with pytest.raises(InputError):
        lab.halt_force("proxy1")
    assert not (fake_vagrant / "calls.log").exists()


def test_down_destroys_and_forgets_the_generated_files(fake_vagrant: Path) -> None:
    lab.up(peers=2)
    lab.down()

    assert calls(fake_vagrant)[-1] == "destroy -f | proxies=-"
    assert not (fake_vagrant / "vagrant" / ".edgekit").exists()


def test_status_reports_every_machine(fake_vagrant: Path) -> None:
    statuses = lab.status()

    assert [(s.name, s.role, s.up) for s in statuses][:2] == [
        ("edge1", "proxy", False),
        ("edge2", "proxy", False),
    ]
    assert len(statuses) == 5


def test_missing_vagrant_is_a_one_line_prerequisite_error(
    fake_vagrant: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(fake_vagrant / "nothing-here"))

    with pytest.raises(PrerequisiteError) as caught:
        lab.status()
    assert str(caught.value) == "vagrant not found: apt-get install vagrant"


def test_lab_folder_without_vagrantfile_is_a_prerequisite_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEKIT_VAGRANT_DIR", str(tmp_path))

    with pytest.raises(PrerequisiteError, match="EDGEKIT_VAGRANT_DIR"):
        lab.vagrant_dir()
    # Only a path: failover-test compares any inventory with it, lab or not.
    assert lab.inventory_path() == tmp_path / ".edgekit" / "edge.yaml"
