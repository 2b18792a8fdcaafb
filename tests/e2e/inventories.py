"""What several end-to-end tests share about the lab: inventories made from the lab's own,
and the failover scenarios a run in the lab goes through by default."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

from edgekit.failover.scenarios import SCENARIOS


def default_scenarios() -> list[str]:
    """Every default scenario, in registry order: the local lab can run them all (it has
    power and link control)."""
    return [name for name, s in SCENARIOS.items() if s.default]


def two_vips(lab: Any, path: Path, second_prefers: str) -> Path:
    """The lab's inventory with its VIP preferring proxy1 and a second VIP (the next
    address, the next VRID) preferring `second_prefers`; the lab's marker line first."""
    data = yaml.safe_load(Path(lab.inventory).read_text())
    first = data["vips"][0]
    prefix = str(first["address"]).split("/")[1]
    first["preferred"] = "proxy1"
    second = str(ipaddress.IPv4Address(lab.vip) + 1)
    data["vips"].append(
        {"address": f"{second}/{prefix}", "vrid": first["vrid"] + 1, "preferred": second_prefers}
    )
    marker = Path(lab.inventory).read_text().splitlines()[0]
    path.write_text(marker + "\n" + yaml.safe_dump(data, sort_keys=False))
    return path
