"""The Vagrant lab's files, checked by the real `vagrant` without starting any VM.

- `vagrant validate` (Debian's vagrant with its vagrant-libvirt plugin, which
  makes libvirt the provider whose settings get validated) for 2 and 3 proxies,
  in isolated mode, and with bad settings;
- `vagrant status` of the machines the Vagrantfile defines.

Nothing here creates a VM or a libvirt network, and nothing talks to libvirtd. The
checks that need no vagrant (the Vagrantfile's settings under a recording stand-in,
shellcheck on the provisioning, the nodes' web server, `edgekit validate` on
vagrant/edge.yaml) are in tests/unit/test_vagrant_files.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from edgekit.lab import vagrant as lab
from tests.unit.test_vagrant_files import lab_env

try:
    from tests.conftest import need, need_program
except ImportError:  # tests/ is not a package on sys.path: pytest put tests/ itself there
    from conftest import need, need_program  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
VAGRANT_DIR = ROOT / "vagrant"


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
