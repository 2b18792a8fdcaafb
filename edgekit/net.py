"""The one TCP reachability check used by deploy's verification, the lab and the tests."""

from __future__ import annotations

import socket


def tcp_answers(address: str, port: int, timeout: float) -> bool:
    """True when a TCP connection to address:port opens within timeout seconds."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
