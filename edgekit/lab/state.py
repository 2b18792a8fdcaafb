"""The lab's state directory: what was planned and which processes the lab started."""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgekit.lab.plan import LabInfo
from edgekit.lab.system import Proc

DEFAULT_STATE_DIR = Path("/var/lib/edgekit/lab")
STATE_FILE = "lab.json"


def state_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_LAB_DIR") or DEFAULT_STATE_DIR).absolute()


def save(lab: LabInfo, image_rootfs: Path, procs: dict[str, Proc]) -> None:
    data = {
        "lab": lab.to_dict(),
        "image_rootfs": str(image_rootfs),
        "procs": {name: {"pid": p.pid, "start_time": p.start_time} for name, p in procs.items()},
    }
    path = lab.state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.chmod(0o644)  # no secrets here; `lab status` works without root
    tmp.rename(path)


def load(directory: Path | None = None) -> tuple[LabInfo, Path, dict[str, Proc]] | None:
    """The saved lab, or None when there is none (or its record is unreadable)."""
    path = (directory or state_dir()) / STATE_FILE
    try:
        data = json.loads(path.read_text())
        lab = LabInfo.from_dict(data["lab"])
        procs = {name: Proc(**p) for name, p in data.get("procs", {}).items()}
        return lab, Path(data["image_rootfs"]), procs
    except (OSError, ValueError, KeyError, TypeError):
        return None
