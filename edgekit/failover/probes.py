"""Client probes through the VIPs and VIP-ownership watchers on every peer."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from edgekit.failover.measure import Probe, Sample
from edgekit.remote import Transport
from edgekit.remote.scripts import script


@dataclass(frozen=True)
class Target:
    name: str  # the service
    address: str  # the VIP
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
            self.results.append(Probe(t, ok, target.name, target.address))

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
        if self._thread.ident is not None:  # started
            self._thread.join()
        self._pool.shutdown(wait=True)
        with self._lock:
            return sorted(self.results, key=lambda p: p.t)


class Streams:
    """Long-lived connections through a VIP (port 80 by default). An upload sends one
    byte of an HTTP request every 100 ms for its `seconds`, then ends the request and
    reads the answer; a download asks a lab backend for /slow/SECONDS (1 KiB every 100
    ms, its length announced). Each ends as "ok" (answered, or downloaded whole), "fin"
    (closed cleanly before that), "rst" (reset) or "error" (no connection, a timeout)."""

    OUTCOMES = ("ok", "fin", "rst", "error")

    def __init__(
        self, vip: str, seconds: list[float], port: int = 80, downloads: list[float] | None = None
    ) -> None:
        self.vip, self.port = vip, port
        self.outcomes: list[tuple[float, str]] = []  # (its seconds, how it ended)
        self._lock = threading.Lock()
        jobs = [(s, self._upload) for s in seconds] + [(s, self._download) for s in downloads or []]
        self._threads = [
            threading.Thread(target=self._one, args=(s, talk), daemon=True) for s, talk in jobs
        ]

    def _one(self, seconds: float, talk: Callable[[socket.socket, float], str]) -> None:
        outcome = "error"
        try:
            with socket.create_connection((self.vip, self.port), timeout=5) as s:
                outcome = talk(s, seconds)
        except ConnectionResetError:
            outcome = "rst"
        except OSError:
            outcome = "error"
        with self._lock:
            self.outcomes.append((seconds, outcome))

    @staticmethod
    def _upload(s: socket.socket, seconds: float) -> str:
        s.sendall(b"GET / HTTP/1.0\r\nX-Edgekit-Pad: ")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            readable, _, _ = select.select([s], [], [], 0.1)
            if readable and s.recv(64) == b"":
                return "fin"  # closed by the other end before the request was complete
            s.sendall(b"a")
        s.sendall(b"\r\n\r\n")
        answer = s.recv(64)
        return "ok" if answer.startswith(b"HTTP/") and answer[9:10] == b"2" else "fin"

    def _download(self, s: socket.socket, seconds: float) -> str:
        s.sendall(f"GET /slow/{seconds:g} HTTP/1.0\r\nHost: {self.vip}\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length:")),
            -1,
        )  # fmt: skip
        return "ok" if head[9:10] == b"2" and len(body) == length else "fin"

    def start(self) -> Streams:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[tuple[float, str]]:
        for t in self._threads:
            t.join()
        with self._lock:
            return list(self.outcomes)


def tally(outcomes: list[tuple[float, str]]) -> dict[str, int]:
    return {k: sum(1 for _, o in outcomes if o == k) for k in Streams.OUTCOMES}


def watch_script(vips: Sequence[str]) -> str:
    """The loop a peer runs for OwnershipWatcher (templates/remote/watch-vips.sh.j2): ten
    times a second, "<epoch seconds> <bits>", one 1|0 per VIP in order: does it hold it?"""
    return script("watch-vips", vips=list(vips))


class OwnershipWatcher:
    """Streams VIP ownership from every peer (>= 5 samples a second each, every VIP in
    one line), stamped by the peer itself so samples delayed by a cut link still land at
    the right time."""

    def __init__(self, hosts: Mapping[str, Transport], vips: str | Sequence[str]) -> None:
        self.vips = [vips] if isinstance(vips, str) else list(vips)
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        loop = watch_script(self.vips)
        self._threads = [
            threading.Thread(
                target=host.stream,
                daemon=True,
                args=(loop, self._collector(name), self._stop),
            )
            for name, host in hosts.items()
        ]

    def _collector(self, peer: str) -> Callable[[str], None]:
        def collect(line: str) -> None:
            parts = line.split()
            if len(parts) != 2 or len(parts[1]) != len(self.vips) or set(parts[1]) - {"0", "1"}:
                return
            try:
                t = float(parts[0])
            except ValueError:
                return
            with self._lock:
                self.samples.extend(
                    Sample(t, peer, bit == "1", vip)
                    for vip, bit in zip(self.vips, parts[1], strict=True)
                )

        return collect

    def start(self) -> OwnershipWatcher:
        for t in self._threads:
            t.start()
        return self

    def placement_now(self, peers: list[str], window: float = 0.5) -> dict[str, set[str]]:
        """Each VIP's holders as the peers' latest samples say (a silent peer holds
        nothing)."""
        now = time.time()
        with self._lock:
            latest: dict[tuple[str, str], Sample] = {}
            for s in self.samples[-200 * len(self.vips) :]:
                latest[(s.vip, s.peer)] = s
        placement: dict[str, set[str]] = {vip: set() for vip in self.vips}
        for (vip, peer), s in latest.items():
            if s.holds and now - s.t <= window and peer in peers:
                placement[vip].add(peer)
        return placement

    def holders_now(
        self, peers: list[str], vip: str | None = None, window: float = 0.5
    ) -> set[str]:
        """The holders of one VIP (the first, when none is named)."""
        return self.placement_now(peers, window)[vip or self.vips[0]]

    def stop(self) -> list[Sample]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        with self._lock:
            return sorted(self.samples, key=lambda s: s.t)
