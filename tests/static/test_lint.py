"""The code stays ruff- and mypy-clean (STYLE.md); CI runs these with the rest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]


def _tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    probe = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True
    )
    need(probe.returncode == 0, f"needs {module} (pip install -e '.[test]')")
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_ruff_finds_nothing() -> None:
    result = _tool("ruff", "check", "edgekit", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_changes_nothing() -> None:
    result = _tool("ruff", "format", "--check", "edgekit", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing_in_the_package_and_the_tests() -> None:
    result = _tool("mypy")  # pyproject's [tool.mypy] files: edgekit and tests
    assert result.returncode == 0, result.stdout + result.stderr
