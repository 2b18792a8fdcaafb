"""init, validate, render: the commands that need no remote host."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import typer

from edgekit import binaries, render
from edgekit.cli import app
from edgekit.errors import ExitCode, InputError, InventoryError, PrerequisiteError, printable
from edgekit.inventory import Loaded, load_inventory

Inv = Annotated[
    Path,
    typer.Option(
        "--inventory", "-i", help="The inventory file (edge.yaml); - reads standard input."
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
Strict = Annotated[
    bool,
    typer.Option(
        "--strict", help="Fail (exit 1) when haproxy -c or keepalived -t could not run here."
    ),
]


def echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def note(message: str) -> None:
    """Human progress and messages go to stderr; stdout is for data. Control characters
    (from a file name, an inventory, a host) are shown as escapes."""
    typer.echo(printable(message, keep_newlines=True), err=True)


def warn(loaded: Loaded) -> None:
    for line in loaded.warnings:
        note(f"edgekit: warning: {line}")


@app.command()
def init(
    path: Annotated[
        str, typer.Argument(help="Where to write the example.", metavar="PATH")
    ] = "edge.yaml",
) -> None:
    """Write a commented example edge.yaml (refuses to overwrite)."""
    example = render.templates_dir() / "edge.example.yaml"
    target = Path(path)
    # pathlib drops a trailing '/' (and '/.'): DIR/ names a directory even when it is missing.
    if target.is_dir() or path.endswith(("/", "/.", "/..")) or path in (".", ".."):
        if not target.is_dir():
            raise InputError(
                f"{path}: the directory {target} does not exist",
                hint=f"mkdir -p {target}, or choose another path",
            )
        target = target / "edge.yaml"
    try:
        with target.open("x") as fh:
            fh.write(example.read_text())
    except FileExistsError:
        raise InputError(
            f"{target}: already exists; not overwriting", hint="choose another path or remove it"
        ) from None
    except FileNotFoundError:
        raise InputError(
            f"{target}: the directory {target.parent} does not exist",
            hint=f"mkdir -p {target.parent}, or choose another path",
        ) from None
    except OSError as exc:
        raise InputError(f"{target}: cannot write: {exc.strerror}") from None
    note(f"wrote {target}; edit it, then: edgekit validate -i {target}")


def _rejection(
    loaded: Loaded, check: binaries.BinaryCheck, files: list[render.RenderedFile]
) -> InputError:
    """The program's complaint, placed at the inventory key the rendered line came from."""
    what, line = binaries.first_error(check)
    program = "haproxy -c" if check.program == "haproxy" else "keepalived -t"
    message = f"{program} rejects the rendered config for peer {check.peer}: {what}"
    path = None
    if line is not None:
        inv = loaded.inventory
        if check.program == "haproxy":
            text = next(f.content for f in files if f.path == render.HAPROXY_CFG)
            path = render.haproxy_sources(inv, text).get(line)
        else:
            text = next(f.content for f in files if f.path == render.KEEPALIVED_CONF)
            path = render.keepalived_sources(inv, text).get(line)
    if path is None:
        return InputError(f"{loaded.name}: {message}")
    return InventoryError([loaded.locate(path, message)])


def run_checks(loaded: Loaded) -> tuple[list[binaries.BinaryCheck], list[binaries.Skipped]]:
    """haproxy -c and keepalived -t on every peer's rendered files, where they can run
    (all at once: each is a process of its own); the first rejection is raised."""
    results: list[binaries.BinaryCheck] = []
    skipped: list[binaries.Skipped] = []
    inv = loaded.inventory
    files = render.render_all(loaded)
    reason = binaries.keepalived_skip_reason()
    with ThreadPoolExecutor(max_workers=4) as pool:
        haproxy = {
            peer: pool.submit(binaries.haproxy_check, peer, peer_files, isolated=True)
            for peer, peer_files in files.items()
        }
        keepalived = (
            {}
            if reason
            else {
                p.name: pool.submit(
                    binaries.keepalived_check_isolated,
                    p.name,
                    files[p.name],
                    render.peer_interfaces(inv, p),
                )
                for p in inv.peers
            }
        )
        for peer, future in haproxy.items():
            check = future.result()
            if check is None:
                skipped.append(binaries.Skipped("haproxy -c", "haproxy not installed"))
                break
            results.append(check)
            if not check.ok:
                raise _rejection(loaded, check, files[peer])
        if reason:
            skipped.append(binaries.Skipped("keepalived -t", reason))
        for peer, kfuture in keepalived.items():
            outcome = kfuture.result()
            if isinstance(outcome, binaries.Skipped):
                skipped.append(outcome)
                break
            results.append(outcome)
            if not outcome.ok:
                raise _rejection(loaded, outcome, files[peer])
    return results, skipped


@app.command()
def validate(
    inventory: Inv = Path("edge.yaml"), json_out: Json = False, strict: Strict = False
) -> int:
    """Check the inventory, then `haproxy -c` and `keepalived -t` on every peer's rendered
    config where those programs are installed."""
    loaded = load_inventory(inventory)
    warn(loaded)
    results, skipped = run_checks(loaded)
    if json_out:
        echo_json(
            {
                "inventory": loaded.name,
                "valid": True,
                "checks": [
                    {"program": r.program, "peer": r.peer, "ok": r.ok, "output": r.output}
                    for r in results
                ],
                "skipped": [{"program": s.program, "reason": s.reason} for s in skipped],
                "warnings": loaded.warnings,
            }
        )
    for s in skipped:
        note(f"edgekit: warning: {s.program} did not run: {s.reason}")
    if skipped and strict:
        raise PrerequisiteError(
            f"{loaded.name}: only partly validated: "
            + "; ".join(f"{s.program} did not run ({s.reason})" for s in skipped),
            hint="install haproxy and keepalived and run as root, or drop --strict",
        )
    if not json_out:
        ran = sorted({"haproxy -c" if r.program == "haproxy" else "keepalived -t" for r in results})
        tools = f"{' and '.join(ran)} passed" if ran else "no real-binary check ran"
        if skipped:
            tools += "; skipped: " + ", ".join(s.program for s in skipped)
        inv = loaded.inventory
        note(
            f"{loaded.name}: valid ({len(inv.peers)} peers, {len(inv.vips)} VIPs, "
            f"{len(inv.services)} services; {tools})"
        )
    return int(ExitCode.OK)


@app.command("render")
def render_cmd(
    inventory: Inv = Path("edge.yaml"),
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write.")] = Path(
        "rendered"
    ),
    json_out: Json = False,
) -> None:
    """Write DIR/<peer>/... with every file as it will sit on the host, DIR/_nodes/ (the
    nodes' NodePort fence), DIR/_monitoring/ (Prometheus and Grafana) and DIR/manifest.json."""
    if output.exists() and not output.is_dir():
        raise InputError(
            f"{output}: exists and is not a directory",
            hint="-o names a directory to write the files into",
        )
    loaded = load_inventory(inventory)
    warn(loaded)
    try:
        data = render.write_tree(loaded, output)
    except OSError as exc:
        raise InputError(
            f"{output}: cannot write: {exc.strerror}"
            + (f" ({exc.filename})" if exc.filename else "")
        ) from None
    if json_out:
        echo_json({"output": str(output), **data})
    else:
        note(
            f"rendered {len(loaded.inventory.peers)} peers into {output}/ "
            f"(manifest: {output / 'manifest.json'}; Prometheus and Grafana: "
            f"{output / '_monitoring'}/)"
        )
