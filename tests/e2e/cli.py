"""Driving the edgekit CLI from end-to-end tests, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def edgekit(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "EDGEKIT_DEBUG": "0", **(env or {})},
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single `edgekit:` error line of a failed command (and no traceback)."""
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("edgekit:")]
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    return lines[0]


def status(inventory: Path) -> tuple[int, dict[str, Any]]:
    """`edgekit status --json`: its exit code and its data."""
    result = edgekit("status", "-i", str(inventory), "--json")
    return result.returncode, json.loads(result.stdout)


def holders(inventory: Path) -> dict[str, list[str]]:
    """Each VIP's holders, as status reports them."""
    return dict(status(inventory)[1]["vip_holders"])
