"""drain, undrain, reboot, upgrade: planned maintenance of one peer at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekit.cli import app
from edgekit.cli.inventory import Inv, Json, echo_json, note
from edgekit.cli.ops import Peers, _load
from edgekit.errors import ExitCode

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
    from edgekit.hosts import close_all, peer_hosts

    loaded = _load(inventory, peers)
    hosts = peer_hosts(loaded)
    progress = (lambda _m: None) if json_out else note
    try:
        report = drain_peer(
            loaded, hosts, peer, progress, force=force, grace=grace, timeout=timeout
        )
    finally:
        close_all(hosts)
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
    from edgekit.hosts import close_all, peer_hosts

    loaded = _load(inventory, peers)
    hosts = peer_hosts(loaded)
    progress = (lambda _m: None) if json_out else note
    try:
        moved = undrain_peer(loaded, hosts, peer, progress, timeout=timeout)
    finally:
        close_all(hosts)
    if json_out:
        echo_json({"peer": peer, "drained": False, "moved": [m.to_dict() for m in moved]})
    else:
        note(f"{peer}: undrained")
    return int(ExitCode.OK)
