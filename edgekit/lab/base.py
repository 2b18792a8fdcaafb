"""What every lab back end reports about its hosts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Role = Literal["proxy", "backend"]


@dataclass(frozen=True)
class HostStatus:
    name: str
    role: Role
    address: str
    up: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
