"""The inventory's peers as SSH hosts, and parallel fact gathering across them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from edgekit.facts import HostFacts, gather_command, parse_facts
from edgekit.inventory import Loaded
from edgekit.remote import CommandError, Hosts, Transport
from edgekit.remote.ssh import SshTarget, SshTransport

T = TypeVar("T")


def peer_hosts(loaded: Loaded, *, accept_new: bool = False) -> Hosts:
    """One SSH transport per peer, in inventory order (not connected yet)."""
    inv = loaded.inventory
    base = loaded.path.resolve().parent

    def resolve(p: str | None) -> str | None:
        # Relative key paths in the inventory are relative to the inventory file.
        return None if p is None else str(base / Path(p).expanduser())

    return {
        p.name: SshTransport(
            SshTarget(
                name=p.name,
                host=p.ssh_host or str(p.address),
                port=p.ssh_port or inv.ssh.port,
                user=inv.ssh.user,
                identity_file=resolve(inv.ssh.identity_file),
                known_hosts=resolve(inv.ssh.known_hosts),
                accept_new=accept_new,
                connect_timeout=inv.ssh.connect_timeout,
            )
        )
        for p in inv.peers
    }


def in_parallel(hosts: Mapping[str, Transport], fn: Callable[[Transport], T]) -> dict[str, T]:
    """Run fn on every host at once; the first error (in inventory order) is raised."""
    with ThreadPoolExecutor(max_workers=min(8, len(hosts) or 1)) as pool:
        futures = {name: pool.submit(fn, host) for name, host in hosts.items()}
    return {name: f.result() for name, f in futures.items()}


def gather(host: Transport, paths: list[str]) -> HostFacts:
    result = host.run(gather_command(paths), sudo=True, timeout=60)
    if "@end" not in result.stdout:
        raise CommandError(host.name, "reading host facts", result)
    return parse_facts(result.stdout)


def close_all(hosts: Mapping[str, Transport]) -> None:
    for h in hosts.values():
        h.close()
