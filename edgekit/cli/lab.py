"""lab and image: the local test lab and the appliance image."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from edgekit.cli import app
from edgekit.errors import ExitCode, OperationError
from edgekit.lab.base import LabProvider

lab_app = typer.Typer(help="A local lab of Debian proxy hosts and backends on this machine.",
                      no_args_is_help=True)  # fmt: skip
image_app = typer.Typer(help="The Debian proxy appliance image.", no_args_is_help=True)
app.add_typer(lab_app, name="lab")
app.add_typer(image_app, name="image")


class Provider(StrEnum):
    local = "local"
    vagrant = "vagrant"


ProviderOpt = Annotated[Provider, typer.Option(
    "--provider", help="local: nspawn containers on this machine; vagrant: VMs.")]  # fmt: skip


def note(message: str) -> None:
    """Progress and messages to stderr; stdout carries data only."""
    typer.echo(message, err=True)


def _provider(provider: Provider) -> LabProvider:
    from edgekit.lab import provider as lab_provider

    return lab_provider(provider.value, progress=note)


@lab_app.command("up")
def lab_up(
    peers: Annotated[int, typer.Option("--peers", help="Proxy hosts.")] = 2,
    backends: Annotated[int, typer.Option("--backends", help="Backend nodes.")] = 3,
    subnet: Annotated[
        str | None,
        typer.Option(
            "--subnet", help="A free private /24 (default: the first free 10.213.x.0/24)."
        ),
    ] = None,
    provider: ProviderOpt = Provider.local,
) -> None:
    """Create the lab (replacing any earlier one) and print the inventory path."""
    typer.echo(_provider(provider).up(peers=peers, backends=backends, subnet=subnet))


@lab_app.command("down")
def lab_down(provider: ProviderOpt = Provider.local) -> None:
    """Remove everything the lab created; safe when nothing or half of it is there."""
    _provider(provider).down()


@lab_app.command("status")
def lab_status(
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    provider: ProviderOpt = Provider.local,
) -> int:
    """List the lab's hosts and whether each is up (exit 1 when one is down)."""
    hosts = _provider(provider).status()
    if json_out:
        typer.echo(json.dumps([h.to_dict() for h in hosts], indent=2))
    elif hosts:
        width = max(len(h.name) for h in hosts)
        for h in hosts:
            state = "up" if h.up else "DOWN"
            typer.echo(f"{h.name:<{width}}  {h.role:<7}  {h.address:<15}  {state:<4}  {h.detail}")
    if not hosts:
        raise OperationError("no lab is running", hint="sudo edgekit lab up")
    return int(ExitCode.OK if all(h.up for h in hosts) else ExitCode.FAILED)


@lab_app.command("inventory")
def lab_inventory(provider: ProviderOpt = Provider.local) -> None:
    """Print the path of the lab's edge.yaml: edgekit deploy -i "$(edgekit lab inventory)"."""
    typer.echo(_provider(provider).inventory())


@lab_app.command("ssh", context_settings={"allow_extra_args": True,
                                          "ignore_unknown_options": True})  # fmt: skip
def lab_ssh(
    host: Annotated[str, typer.Argument(help="proxy1, node1, ... or an address.")],
    command: Annotated[
        list[str] | None, typer.Argument(help="Run this instead of a shell.")
    ] = None,
    provider: ProviderOpt = Provider.local,
) -> None:
    """Open a shell on a lab host, or run COMMAND there (strict host key checking)."""
    argv = _provider(provider).ssh_argv(host, list(command or []))
    os.execvp(argv[0], argv)


Recipe = Annotated[
    Path | None,
    typer.Option("--recipe", help="Image recipe (default: the shipped images/debian-proxy.yaml)."),
]
TreeDir = Annotated[
    Path | None,
    typer.Option(
        "--output", help="Directory for the tree (default: a cache under /var/cache/edgekit)."
    ),
]
Tarball = Annotated[
    Path | None,
    typer.Option(
        "--tarball", help="Also export the tree to this tarball (.tar, .tar.gz, .tar.zst)."
    ),
]


@image_app.command("build")
def image_build(recipe: Recipe = None, output: TreeDir = None, tarball: Tarball = None) -> None:
    """Build the appliance tree with debootstrap (reused when the recipe is unchanged)."""
    from edgekit.image import build_image, export_tarball

    image = build_image(recipe=recipe, output=output, progress=note)
    if tarball is not None:
        note(f"exporting {image.rootfs} to {tarball}")
        typer.echo(export_tarball(image, tarball))
        return
    typer.echo(image.rootfs)
