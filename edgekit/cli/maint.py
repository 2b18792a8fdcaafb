"""drain, undrain, reboot, upgrade: planned maintenance of one peer at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgekit.cli import app
from edgekit.cli.inventory import Inv, Json, echo_json, note
from edgekit.cli.ops import Limit, Peers, _load
from edgekit.errors import ExitCode

if TYPE_CHECKING:
    from edgekit.inventory import Loaded
    from edgekit.progress import Progress
    from edgekit.remote import Hosts

Peer = Annotated[str, typer.Argument(help="The peer's name in the inventory.", show_default=False)]
Grace = Annotated[
    float,
    typer.Option(
        "--grace",
        help="Seconds the drained peer's haproxy keeps serving after its VIPs moved "
        "(clients whose ARP caches still point at it).",
    ),
]
Timeout = Annotated[
    float, typer.Option("--timeout", help="Seconds a VIP may take to move or a host to recover.")
]


@contextmanager
def _peers(
    inventory: Path, peers: str | None, json_out: bool = False
) -> Iterator[tuple[Loaded, Hosts, Progress]]:
    """The inventory, its peers' connections (closed after) and where progress goes
    (nowhere with --json: stdout is data)."""
    from edgekit.hosts import close_all, peer_hosts

    loaded = _load(inventory, peers)
    hosts = peer_hosts(loaded)
    try:
        yield loaded, hosts, (lambda _m: None) if json_out else note
    finally:
        close_all(hosts)


@app.command()
def drain(
    peer: Peer,
    inventory: Inv = Path("edge.yaml"),
    peers: Peers = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Drain it even when no other peer can take its VIPs."),
    ] = False,
    grace: Grace = 10.0,
    timeout: Timeout = 30.0,
    json_out: Json = False,
) -> int:
    """Move every VIP off PEER make-before-break and keep it off (across reboots and
    deploys) until undrain."""
    from edgekit.deploy.drain import drain as drain_peer

    with _peers(inventory, peers, json_out) as (loaded, hosts, progress):
        report = drain_peer(
            loaded, hosts, peer, progress, force=force, grace=grace, timeout=timeout
        )
    if json_out:
        echo_json(report.to_dict())
    else:
        note(f"{peer}: drained" + (" (it was already)" if report.already else ""))
    return int(ExitCode.OK)


@app.command()
def undrain(
    peer: Peer,
    inventory: Inv = Path("edge.yaml"),
    peers: Peers = None,
    timeout: Timeout = 30.0,
    json_out: Json = False,
) -> int:
    """Make PEER eligible for VIPs again; the VIPs that prefer it move back,
    make-before-break."""
    from edgekit.deploy.drain import undrain as undrain_peer

    with _peers(inventory, peers, json_out) as (loaded, hosts, progress):
        moved = undrain_peer(loaded, hosts, peer, progress, timeout=timeout)
    if json_out:
        echo_json({"peer": peer, "drained": False, "moved": [m.to_dict() for m in moved]})
    else:
        note(f"{peer}: undrained")
    return int(ExitCode.OK)


@app.command()
def reboot(
    peer: Peer,
    inventory: Inv = Path("edge.yaml"),
    peers: Peers = None,
    grace: Grace = 10.0,
    timeout: Timeout = 30.0,
    boot_timeout: Annotated[
        float, typer.Option("--boot-timeout", help="Seconds the peer may take to come back.")
    ] = 300.0,
) -> int:
    """Drain PEER, reboot it, wait until it is back and healthy, undrain it."""
    from edgekit.deploy.maintenance import Maintenance

    with _peers(inventory, peers) as (loaded, hosts, progress):
        Maintenance(loaded, hosts, progress, grace, timeout, boot_timeout).reboot(peer)
    note(f"{peer}: rebooted and back in service")
    return int(ExitCode.OK)


@app.command()
def upgrade(
    inventory: Inv = Path("edge.yaml"),
    peers: Peers = None,
    limit: Limit = None,
    packages: Annotated[
        str | None,
        typer.Option(
            "--packages",
            help="Upgrade only these packages (comma-separated, e.g. haproxy,keepalived) "
            "and what they need; default: everything apt-get upgrade would.",
        ),
    ] = None,
    reboot_after: Annotated[
        bool, typer.Option("--reboot", help="Reboot each peer after its upgrade.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Show what would be upgraded on each peer; exit 3 when anything."
        ),
    ] = False,
    grace: Grace = 10.0,
    timeout: Timeout = 30.0,
    json_out: Json = False,
) -> int:
    """Rolling package upgrade from each peer's own apt sources, one peer at a time inside
    a drain; peers holding no VIP first. Stops at the first failure, leaving that peer
    drained."""
    from edgekit.deploy.maintenance import Maintenance
    from edgekit.errors import OperationError

    with _peers(inventory, peers, json_out) as (loaded, hosts, progress):
        report = Maintenance(loaded, hosts, progress, grace, timeout).upgrade(
            limit=[n.strip() for n in limit.split(",")] if limit else None,
            packages=[p.strip() for p in packages.split(",")] if packages else None,
            reboot_after=reboot_after,
            dry_run=dry_run,
        )
    if json_out:
        echo_json({**report.to_dict(), "dry_run": dry_run, "pending": report.pending})
    if report.error:
        raise OperationError(report.error)
    if dry_run:
        return int(ExitCode.PENDING if report.pending else ExitCode.OK)
    if not json_out:
        note(f"upgraded: {', '.join(report.upgraded) or 'nothing to upgrade'}")
    return int(ExitCode.OK)


@app.command()
def retire(
    peer: Peer,
    inventory: Inv = Path("edge.yaml"),
    peers: Peers = None,
    grace: Grace = 10.0,
    timeout: Timeout = 30.0,
) -> int:
    """Take PEER out of the cluster: drain it, then stop keepalived there and remove
    edgekit's firewall. Then delete it from the inventory and deploy."""
    from edgekit.deploy.maintenance import Maintenance

    with _peers(inventory, peers) as (loaded, hosts, progress):
        Maintenance(loaded, hosts, progress, grace, timeout).retire(peer)
    note(f"{peer}: retired; now remove it from {inventory} and run edgekit deploy")
    return int(ExitCode.OK)
