"""Client probes through the VIP and VIP-ownership watchers on every peer."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from edgekit.failover.measure import Probe, Sample
from edgekit.remote import Transport


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    port: int
    http: bool


def probe_once(target: Target, timeout: float) -> bool:
    """One fresh connection, as a new client would make: HTTP GET expecting a 2xx/3xx, or a
    bare TCP connect."""
    try:
        with socket.create_connection((target.address, target.port), timeout=timeout) as s:
            if not target.http:
                return True
            s.settimeout(timeout)
            s.sendall(f"GET / HTTP/1.0\r\nHost: {target.address}\r\n\r\n".encode())
            head = s.recv(64)
            return head.startswith(b"HTTP/") and head[9:10] in (b"2", b"3")
    except OSError:
        return False


class Prober:
    """Sends a probe to every target every `interval` seconds, on a fixed schedule, so a
    slow or failing probe never lowers the rate."""

    def __init__(self, targets: list[Target], interval: float = 0.05, timeout: float = 0.3) -> None:
        self.targets = targets
        self.interval = interval
        self.timeout = timeout
        self.results: list[Probe] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(8, 4 * len(targets)))
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, target: Target, t: float) -> None:
        ok = probe_once(target, self.timeout)
        with self._lock:
            self.results.append(Probe(t, ok, target.name))

    def _run(self) -> None:
        next_t = time.time()
        while not self._stop.is_set():
            for target in self.targets:
                self._pool.submit(self._one, target, time.time())
            next_t += self.interval
            self._stop.wait(max(0.0, next_t - time.time()))

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> list[Probe]:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)
        with self._lock:
            return sorted(self.results, key=lambda p: p.t)


# Prints "<epoch seconds> <1|0>" ten times a second: does this peer hold the VIP?
_WATCH = (
    "while :; do if ip -4 -o addr show | grep -q ' {ip}/'; then h=1; else h=0; fi; "
    'echo "$(date +%s.%N) $h"; sleep 0.1; done'
)


class OwnershipWatcher:
    """Streams VIP ownership from every peer (>= 5 samples a second each), stamped by the
    peer itself so samples delayed by a cut link still land at the right time."""

    def __init__(self, hosts: Mapping[str, Transport], vip: str) -> None:
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=host.stream,
                daemon=True,
                args=(_WATCH.format(ip=vip.replace(".", "\\.")), self._collector(name), self._stop),
            )
            for name, host in hosts.items()
        ]

    def _collector(self, peer: str) -> Callable[[str], None]:
        def collect(line: str) -> None:
            parts = line.split()
            if len(parts) == 2:
                try:
                    sample = Sample(float(parts[0]), peer, parts[1] == "1")
                except ValueError:
                    return
                with self._lock:
                    self.samples.append(sample)

        return collect

    def start(self) -> OwnershipWatcher:
        for t in self._threads:
            t.start()
        return self

    def holders_now(self, peers: list[str], window: float = 0.5) -> set[str]:
        now = time.time()
        with self._lock:
            latest: dict[str, Sample] = {}
            for s in self.samples[-200:]:
                latest[s.peer] = s
        return {p for p, s in latest.items() if s.holds and now - s.t <= window and p in peers}

    def stop(self) -> list[Sample]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        with self._lock:
            return sorted(self.samples, key=lambda s: s.t)
