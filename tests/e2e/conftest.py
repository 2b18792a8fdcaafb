"""The local lab, shared by every end-to-end test of a session.

`lab` brings the lab up once (building the image first if the cache is
cold), yields its LabInfo, and takes it down at the end of the session.
Tests that must take a lab up and down themselves use the `lab_cycle`
fixture instead: they run first, before the shared lab exists, so they never
pull it away from another test.

Use in a test:

    def test_x(lab, lab_ssh):
        lab.inventory, lab.vip, lab.peers[0].address, lab.backends, lab.state_dir
        result = lab_ssh("proxy1", "systemctl is-active haproxy")
        local.kill_host("proxy1"); local.start_host("proxy1")
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import need, need_program, need_root

LAB_PROGRAMS = ("systemd-nspawn", "debootstrap", "nsenter", "ip", "ssh", "ssh-keygen", "openssl")

# Set while the shared lab is up; a lab_cycle test that finds it set (the
# ordering below was defeated, e.g. by test selection plugins) puts it back.
_shared: dict[str, object] = {}


# The shared lab's first users: they check refusals and a first deploy's diff, so they
# need the lab as `lab up` made it (nothing deployed, no firewall loaded yet).
PRISTINE_FIRST = ("test_edge.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Stable sort: tests using lab_cycle first, then those that need a pristine shared
    # lab, everything else in its order.
    def rank(item: pytest.Item) -> int:
        if "lab_cycle" in getattr(item, "fixturenames", ()):
            return 0
        return 1 if item.path.name in PRISTINE_FIRST else 2

    items.sort(key=rank)


def need_lab_prerequisites() -> None:
    need_root()
    need_program(*LAB_PROGRAMS)
    need(sys.platform == "linux", "needs Linux")


def _progress(message: str) -> None:
    # Shown with -s or when the fixture fails; pytest captures it otherwise.
    print(f"[lab] {message}", file=sys.stderr)


@pytest.fixture(scope="session")
def lab() -> Iterator[object]:
    """A running local lab (2 proxies, 3 backends): edgekit.lab.plan.LabInfo."""
    need_lab_prerequisites()
    from edgekit.image import build_image
    from edgekit.lab import local

    build_image(progress=_progress)
    info = local.up(peers=2, backends=3, progress=_progress)
    _shared["lab"] = info
    try:
        yield info
    finally:
        _shared.pop("lab", None)
        local.down(progress=_progress)


@pytest.fixture
def lab_cycle() -> Iterator[None]:
    """For a test that takes labs up and down itself; afterwards no lab is left,
    or the shared lab is back (same subnet, so the same addresses)."""
    need_lab_prerequisites()
    from edgekit.lab import local

    try:
        yield
    finally:
        local.down()
        info = _shared.get("lab")
        if info is not None:
            local.up(peers=len(info.peers), backends=len(info.backends), subnet=info.subnet)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def lab_ssh(lab: object) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a command on a lab proxy over real ssh (strict host key checking)."""
    from edgekit.lab import local

    def run(
        host: str, command: str | list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        argv = local.ssh_argv(host, [command] if isinstance(command, str) else command)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    return run
