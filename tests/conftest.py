"""Shared test helpers.

Tests that need root, the lab or real binaries skip on a developer's laptop,
but CI sets EDGEKIT_REQUIRE_PREREQS=1, which turns a missing prerequisite into
a failure: nothing is silently skipped there.
"""

from __future__ import annotations

import os
import shutil

import pytest

STRICT = os.environ.get("EDGEKIT_REQUIRE_PREREQS") == "1"


def need(condition: object, why: str) -> None:
    """Skip (developer machine) or fail (CI) when a prerequisite is missing."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"missing prerequisite (EDGEKIT_REQUIRE_PREREQS=1): {why}")
    pytest.skip(why)


def need_root() -> None:
    need(os.geteuid() == 0, "needs root")


def need_program(*names: str) -> None:
    for name in names:
        need(shutil.which(name), f"needs {name} on PATH")
