"""init, validate, render: the commands that need no remote host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgekit import binaries, render
from edgekit.cli import app
from edgekit.errors import ExitCode, InputError
from edgekit.inventory import load_inventory

Inv = Annotated[Path, typer.Option("--inventory", "-i", help="The inventory file (edge.yaml).")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def note(message: str) -> None:
    """Human progress and messages go to stderr; stdout is for data."""
    typer.echo(message, err=True)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the example.")] = Path("edge.yaml"),
) -> None:
    """Write a commented example edge.yaml (refuses to overwrite)."""
    example = render.templates_dir() / "edge.example.yaml"
    try:
        with path.open("x") as fh:
            fh.write(example.read_text())
    except FileExistsError:
        raise InputError(f"{path}: already exists; not overwriting",
                         hint="choose another path or remove it") from None
    note(f"wrote {path}; edit it, then: edgekit validate -i {path}")


@app.command()
def validate(inventory: Inv = Path("edge.yaml"), json_out: Json = False) -> int:
    """Check the inventory, then run `haproxy -c` on the rendered config where haproxy exists."""
    loaded = load_inventory(inventory)
    results = []
    for peer, files in render.render_all(loaded).items():
        check = binaries.haproxy_check(peer, files)
        if check is not None:
            results.append(check)
    failed = [r for r in results if not r.ok]
    if json_out:
        echo_json({
            "inventory": str(inventory), "valid": not failed,
            "checks": [{"program": r.program, "peer": r.peer, "ok": r.ok, "output": r.output}
                       for r in results],
        })
    if failed:
        first = failed[0]
        reason = next((ln for ln in first.output.splitlines() if "ALERT" in ln), first.output)
        raise InputError(f"{inventory}: haproxy -c rejects the rendered config for peer "
                             f"{first.peer}: {reason.strip()}")
    if not json_out:
        tools = "haproxy -c passed" if results else "haproxy not installed: skipped haproxy -c"
        note(f"{inventory}: valid ({len(loaded.inventory.peers)} peers, "
             f"{len(loaded.inventory.vips)} VIPs, {len(loaded.inventory.services)} services; "
             f"{tools})")
    return int(ExitCode.OK)


@app.command("render")
def render_cmd(
    inventory: Inv = Path("edge.yaml"),
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write.")] = Path(
        "rendered"),
    json_out: Json = False,
) -> None:
    """Write DIR/<peer>/... with every file as it will sit on the host, plus DIR/manifest.json."""
    loaded = load_inventory(inventory)
    data = render.write_tree(loaded, output)
    if json_out:
        echo_json({"output": str(output), **data})
    else:
        note(f"rendered {len(loaded.inventory.peers)} peers into {output}/ "
             f"(manifest: {output / 'manifest.json'})")
