"""Progress messages and waiting: the two small things every operation needs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# A human progress line; the CLI sends them to stderr, --json drops them.
Progress = Callable[[str], None]


def silent(_message: str) -> None:
    """A Progress that says nothing."""


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    interval: float = 0.5,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T | None:
    """Call `condition` until it returns something truthy, and return that; None when
    `timeout` seconds passed first. It is always called at least once, and once more at
    the deadline, so a slow condition is never cut short by the clock alone."""
    deadline = clock() + timeout
    while True:
        value = condition()
        if value:
            return value
        left = deadline - clock()
        if left <= 0:
            return None
        sleep(min(interval, left))
