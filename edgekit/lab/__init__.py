"""Lab back ends (local nspawn containers, Vagrant VMs) behind one interface
(edgekit.lab.base.LabProvider), and how an inventory is traced to the lab that made it."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import InputError
from edgekit.lab.base import LabProvider, read_marker
from edgekit.progress import Progress, silent

PROVIDERS = ("local", "vagrant")


def provider(name: str, progress: Progress = silent) -> LabProvider:
    """The provider called `name` (InputError for one edgekit does not have)."""
    if name == "local":
        from edgekit.lab.local import LocalLab

        return LocalLab(progress)
    if name == "vagrant":
        from edgekit.lab.vagrant import VagrantLab

        return VagrantLab()
    raise InputError(f"unknown lab provider {name!r} (known: {', '.join(PROVIDERS)})")


def provider_for(inventory: Path, progress: Progress = silent) -> LabProvider | None:
    """The lab provider whose running lab wrote this inventory (wherever the file is
    now), or None: a user's own inventory, or a lab that is gone or was replaced."""
    try:
        marker = read_marker(inventory.read_text(errors="replace"))
    except OSError:
        return None
    if marker is None or marker[0] not in PROVIDERS:
        return None
    lab = provider(marker[0], progress)
    return lab if lab.lab_id() == marker[1] else None
