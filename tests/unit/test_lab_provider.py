"""The lab provider interface: both labs implement it, an inventory is traced to its lab
by the marker in it (not by its path), and `lab ssh` argv for both providers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgekit import lab
from edgekit.failover.faults import RealHostPower, driver_for
from edgekit.lab.base import Capability, FaultDriver, NoFaults, marker_line, read_marker
from edgekit.lab.local import LocalLab
from edgekit.lab.vagrant import VagrantLab, lab_interface

PROVIDER_METHODS = (
    "up",
    "down",
    "status",
    "inventory",
    "lab_id",
    "ssh_argv",
    "capabilities",
    "power_off",
    "power_on",
    "link_down",
    "link_up",
)


@pytest.mark.parametrize("cls", [LocalLab, VagrantLab])
def test_every_provider_implements_the_whole_interface(cls: type) -> None:
    provider = cls()
    assert provider.name in lab.PROVIDERS
    for method in PROVIDER_METHODS:
        assert callable(getattr(provider, method)), method
    assert isinstance(provider, FaultDriver)
    assert Capability.POWER in provider.capabilities()


def test_the_marker_round_trips_and_a_users_inventory_has_none() -> None:
    assert read_marker(marker_line("local", "abc123") + "cluster: x\n") == ("local", "abc123")
    assert read_marker("cluster: x\n# edgekit-lab is mentioned here\n") is None


@pytest.fixture()
def vagrant_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Vagrant lab folder with a generated inventory, as `lab up` leaves it."""
    (tmp_path / "Vagrantfile").write_text("# test\n")
    state = tmp_path / ".edgekit"
    state.mkdir()
    (state / "lab-id").write_text("f00d\n")
    inventory = {
        "cluster": "vagrant-lab",
        "peers": [
            {
                "name": "edge1",
                "address": "192.168.56.11",
                "ssh_host": "192.168.124.7",
                "ssh_port": 22,
            }
        ],
        "ssh": {
            "user": "vagrant",
            "identity_file": str(state / "id_ed25519"),
            "known_hosts": str(state / "known_hosts"),
        },
    }
    (state / "edge.yaml").write_text(marker_line("vagrant", "f00d") + yaml.safe_dump(inventory))
    monkeypatch.setenv("EDGEKIT_VAGRANT_DIR", str(tmp_path))
    return state / "edge.yaml"


def test_a_copy_of_the_lab_inventory_anywhere_is_traced_to_the_lab(
    vagrant_lab: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "elsewhere" / "my-edge.yaml"
    copy.parent.mkdir()
    copy.write_text(vagrant_lab.read_text())
    found = lab.provider_for(copy)
    assert isinstance(found, VagrantLab)
    assert isinstance(driver_for(copy, {}, allow_real_power=False), VagrantLab)


def test_an_inventory_of_a_lab_that_was_replaced_is_not_traced(vagrant_lab: Path) -> None:
    (vagrant_lab.parent / "lab-id").write_text("another-lab\n")
    assert lab.provider_for(vagrant_lab) is None


def test_a_users_inventory_gets_no_fault_driver_unless_real_power_is_allowed(
    tmp_path: Path,
) -> None:
    inventory = tmp_path / "edge.yaml"
    inventory.write_text("cluster: mine\n")
    assert isinstance(driver_for(inventory, {}, allow_real_power=False), NoFaults)
    assert driver_for(inventory, {}, allow_real_power=False).capabilities() == frozenset()
    real = driver_for(inventory, {}, allow_real_power=True)
    assert isinstance(real, RealHostPower) and real.capabilities() == {Capability.POWER}


def test_vagrant_lab_ssh_to_a_proxy_uses_the_inventory_key_and_host_keys(vagrant_lab: Path) -> None:
    argv = VagrantLab().ssh_argv("edge1", ["hostname"])
    state = vagrant_lab.parent
    assert argv[0] == "ssh" and argv[-2:] == ["vagrant@192.168.124.7", "hostname"]
    assert ["-i", str(state / "id_ed25519")] == argv[argv.index("-i") : argv.index("-i") + 2]
    assert f"UserKnownHostsFile={state / 'known_hosts'}" in argv
    assert "StrictHostKeyChecking=yes" in argv


def test_vagrant_lab_ssh_to_a_node_goes_through_vagrant(vagrant_lab: Path) -> None:
    argv = VagrantLab().ssh_argv("node2", ["uname", "-a"])
    assert argv[-5:] == ["vagrant", "ssh", "node2", "-c", "uname -a"]
    assert f"VAGRANT_CWD={vagrant_lab.parent.parent}" in argv


def test_vagrant_lab_ssh_to_a_machine_it_does_not_have_is_bad_input(vagrant_lab: Path) -> None:
    from edgekit.errors import InputError

    with pytest.raises(InputError):
        VagrantLab().ssh_argv("edge7x", [])


def test_vagrant_link_control_finds_the_lab_nic_in_virsh_domiflist() -> None:
    listing = (
        " Interface   Type      Source         Model    MAC\n"
        "-------------------------------------------------------------\n"
        " vnet0       network   edgekit-mgmt   virtio   52:54:00:aa:aa:aa\n"
        " vnet1       network   edgekit-lab    virtio   52:54:00:bb:bb:bb\n"
    )
    assert lab_interface(listing) == "52:54:00:bb:bb:bb"


def test_an_unknown_provider_is_bad_input() -> None:
    from edgekit.errors import InputError

    with pytest.raises(InputError, match="unknown lab provider"):
        lab.provider("docker")
