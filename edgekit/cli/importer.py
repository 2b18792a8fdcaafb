"""import: an existing haproxy.cfg into a commented edge.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekit.cli import app, err
from edgekit.cli.inventory import Json, echo_json, note
from edgekit.errors import ExitCode, InputError
from edgekit.inventory import parse_peers_flag
from edgekit.inventory.haproxy_cfg import decode
from edgekit.inventory.importer import equivalence, import_config


def _read(path: Path) -> str:
    name = str(path)
    if path.is_dir():
        raise InputError(f"{name}: a directory, not a haproxy.cfg", hint="give the file's path")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{name}: no such file", hint="give haproxy.cfg's path") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror}") from None
    return decode(data, name)


def _target(output: str) -> Path:
    """Where to write: -o FILE, or DIR/edge.yaml (like init, DIR/ names a directory)."""
    target = Path(output)
    if target.is_dir():
        return target / "edge.yaml"
    if output.endswith("/"):
        raise InputError(
            f"{output}: the directory {target} does not exist",
            hint=f"mkdir -p {target}, or choose another path",
        )
    if not target.parent.is_dir():
        raise InputError(
            f"{target}: the directory {target.parent} does not exist",
            hint=f"mkdir -p {target.parent}, or choose another path",
        )
    return target


def _write(target: Path, text: str, force: bool) -> None:
    try:
        with target.open("w" if force else "x") as fh:
            fh.write(text)
    except FileExistsError:
        raise InputError(
            f"{target}: already exists; not overwriting",
            hint="choose another path, remove it, or add --force",
        ) from None
    except OSError as exc:
        raise InputError(f"{target}: cannot write: {exc.strerror}") from None


def _equivalence_lines(eq: dict[str, object]) -> list[str]:
    if not eq.get("checked"):
        return [f"note: equivalence not checked: {eq['reason']}"]
    if eq["equivalent"]:
        return [
            "note: equivalence: every listen port and server of the old config is in the new one"
        ]
    lines = []
    for key, what in (("missing_in_new", "missing from"), ("only_in_new", "only in")):
        diff = eq[key]
        assert isinstance(diff, dict)
        for kind, items in diff.items():
            if items:
                shown = ", ".join(str(i) for i in items)
                lines.append(
                    f"warning: {kind.replace('_', ' ')} {what} the new haproxy.cfg: {shown}"
                )
    return lines


@app.command("import")
def import_cmd(
    haproxy_cfg: Annotated[
        Path, typer.Argument(help="The haproxy.cfg to import.", metavar="HAPROXY_CFG")
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="The inventory to write.")
    ] = "edge.yaml",
    peers: Annotated[
        str | None,
        typer.Option("--peers", help="The proxies: NAME=ADDR,... (else placeholders)."),
    ] = None,
    vip: Annotated[
        str | None,
        typer.Option(
            "--vip",
            help="The VIP, ADDR/PREFIX (default: the address the services bind, /24).",
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Exit 2, writing nothing, when a line is not imported."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the output file.")] = False,
    json_out: Json = False,
) -> int:
    """Write a commented edge.yaml from an existing haproxy.cfg; list what does not map."""
    name = str(haproxy_cfg)
    peer_list = parse_peers_flag(peers) if peers is not None else None
    result = import_config(_read(haproxy_cfg), name, peers=peer_list, vip=vip)
    target = _target(output)
    eq = equivalence(result, name)
    failed = strict and bool(result.not_imported)
    if not failed:
        _write(target, result.yaml_text, force)
    for n in result.notes:
        loud = n.message.startswith("WARNING: ")
        kind = "warning" if loud else "note"
        message = n.message.removeprefix("WARNING: ")
        note(
            f"edgekit: {kind}: {name}:{n.line}: {message}"
            if n.line
            else f"edgekit: {kind}: {message}"
        )
    for n in result.not_imported:
        note(f"edgekit: not imported: {name}:{n.line}: {n.message}")
    for line in _equivalence_lines(eq):
        note(f"edgekit: {line}")
    if json_out:
        echo_json(
            {
                "ok": not failed,
                "inventory": None if failed else str(target),
                "placeholders": result.placeholders,
                "notes": [n.as_dict() for n in result.notes],
                "not_imported": [n.as_dict() for n in result.not_imported],
                "equivalence": eq,
            }
        )
    if failed:
        err(f"{name}: {len(result.not_imported)} line(s) not imported (--strict); nothing written")
        return int(ExitCode.BAD_INPUT)
    then = "fill the REPLACE-ME placeholders, then " if result.placeholders else ""
    note(f"wrote {target}; review it, {then}edgekit validate -i {target}")
    return int(ExitCode.OK)
