"""Read edge.yaml into a validated Inventory; every failure names file, line, key and value."""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from edgekit.errors import InputError
from edgekit.inventory.checks import Problem, check_inventory, check_password, did_you_mean
from edgekit.inventory.model import IFNAME_RE, NAME_RE, PATH_RE, STATS_USER_RE, Inventory

Loc = tuple[str | int, ...]

PATTERN_HELP = {
    NAME_RE: "must be a lowercase name: a-z, 0-9 and '-', at most 63 characters",
    IFNAME_RE: "must be an interface name of at most 15 characters",
    PATH_RE: "must be a path starting with '/'",
    STATS_USER_RE: "may hold only letters, digits, '_', '.' and '-'",
}


class InventoryError(InputError):
    """One or more problems in an inventory; str() gives one line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class Secrets:
    stats_password: str = field(repr=False)
    vrrp_auth: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Loaded:
    inventory: Inventory
    secrets: Secrets = field(repr=False)
    path: Path
    source_sha256: str


def format_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _line_map(
    node: yaml.Node, loc: Loc = (), lines: dict[Loc, int] | None = None
) -> dict[Loc, int]:
    """Map each key path to its 1-based line in the YAML source."""
    lines = {} if lines is None else lines
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*loc, str(key.value))
            lines[sub] = key.start_mark.line + 1
            _line_map(value, sub, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*loc, i), lines)
    return lines


def _line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unwrap(tp: Any) -> Any:
    """Strip Optional[...] and Annotated[...] down to the underlying type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp


def _fields_at(loc: Loc) -> list[str]:
    """Names of the keys allowed at `loc` (for did-you-mean on unknown keys)."""
    tp: Any = Inventory
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if origin in (list, dict):
            tp = typing.get_args(tp)[-1]  # an item of a list, a value of a dict
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[str(part)].annotation
        else:
            return []
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for e in exc.errors(include_url=False):
        loc: Loc = tuple(p for p in e["loc"] if p != "[key]")
        kind = e["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            msg = "unknown key" + did_you_mean(key, _fields_at(loc[:-1]))
            problems.append(Problem(format_path(loc), msg, None))
            continue
        if kind == "missing":
            problems.append(Problem(format_path(loc), "required key is missing", None))
            continue
        msg = PATTERN_HELP.get(str(e.get("ctx", {}).get("pattern")), e["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        msg = msg[:1].lower() + msg[1:]
        if "[key]" in e["loc"]:
            msg = f"bad name: {msg}"
        problems.append(Problem(format_path(loc), msg, e.get("input")))
    return problems


def _render(file: Path, lines: dict[Loc, int], problems: list[Problem]) -> list[str]:
    out = []
    for p in problems:
        loc = _parse_path(p.path)
        line = _line_of(lines, loc)
        where = f"{file}:{line}" if line else str(file)
        got = "" if p.value is None or isinstance(p.value, dict) else f" (got {_show(p.value)})"
        out.append(f"{where}: {p.path}: {p.message}{got}")
    return out


def _parse_path(path: str) -> Loc:
    loc: list[str | int] = []
    for chunk in path.replace("[", ".[").split("."):
        if not chunk or chunk == "(top level)":
            continue
        if chunk.startswith("["):
            loc.append(int(chunk[1:-1]))
        else:
            loc.append(chunk)
    return tuple(loc)


def _read_secret(
    base: Path, env: str | None, file: str | None, key: str
) -> tuple[str | None, Problem | None]:
    if env and file:
        return None, Problem(f"{key}_file", f"give {key}_env or {key}_file, not both", None)
    if env:
        value = os.environ.get(env)
        if not value:
            return None, Problem(f"{key}_env", f"environment variable {env} is not set or empty",
                                 None)
        return value, None
    if file:
        path = (base / os.path.expanduser(file)).resolve()
        try:
            return path.read_text().strip(), None
        except OSError as exc:
            return None, Problem(f"{key}_file", f"cannot read {path}: {exc.strerror}", None)
    return None, Problem(f"{key}_env", f"set {key}_env or {key}_file", None)


def _secrets(inv: Inventory, base: Path) -> tuple[Secrets | None, list[Problem]]:
    problems = []
    password, problem = _read_secret(base, inv.stats.password_env, inv.stats.password_file,
                                     "stats.password")
    if problem:
        problems.append(problem)
    else:
        weak = check_password(password, inv.stats.user, "stats.password_" +
                              ("env" if inv.stats.password_env else "file"))
        if weak:
            problems.append(weak)
    vrrp_auth = None
    if inv.vrrp.auth_pass_env or inv.vrrp.auth_pass_file:
        vrrp_auth, problem = _read_secret(base, inv.vrrp.auth_pass_env, inv.vrrp.auth_pass_file,
                                          "vrrp.auth_pass")
        if problem:
            problems.append(problem)
        elif vrrp_auth and not (1 <= len(vrrp_auth) <= 8 and vrrp_auth.isprintable()
                                and " " not in vrrp_auth):
            # keepalived truncates PASS authentication to 8 characters.
            problems.append(Problem("vrrp.auth_pass_env" if inv.vrrp.auth_pass_env
                                    else "vrrp.auth_pass_file",
                                    "VRRP PASS authentication takes 1 to 8 printable "
                                    "characters without spaces", None))
    if problems or password is None:
        return None, problems
    return Secrets(stats_password=password, vrrp_auth=vrrp_auth), []


def parse_peers_flag(text: str) -> list[dict[str, str]]:
    """`--peers NAME=ADDR,...` or `ADDR,...` (bare addresses become peer1, peer2, ...)."""
    peers = []
    for i, item in enumerate(filter(None, (s.strip() for s in text.split(","))), start=1):
        name, sep, addr = item.partition("=")
        peers.append({"name": name, "address": addr} if sep else
                     {"name": f"peer{i}", "address": item})
    if not peers:
        raise InputError("--peers: no peers given",
                         hint="--peers proxy1=10.0.0.11,proxy2=10.0.0.12")
    return peers


def load_inventory(path: str | Path, *, peers: list[dict[str, str]] | None = None) -> Loaded:
    """Read, validate and resolve secrets; raise InventoryError listing every problem."""
    import hashlib

    file = Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise InputError(f"{file}: no such file", hint="edgekit init writes an example") from None
    except OSError as exc:
        raise InputError(f"{file}: cannot read: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InventoryError([f"{where}: YAML syntax error: {what}"]) from None
    if not isinstance(data, dict):
        raise InventoryError([f"{file}: the inventory must be a YAML mapping "
                              f"(got {type(data).__name__})"])
    lines = _line_map(node) if node is not None else {}
    if peers is not None:
        data = {**data, "peers": peers}
    try:
        inv = Inventory.model_validate(data)
    except ValidationError as exc:
        raise InventoryError(_render(file, lines, _pydantic_problems(exc))) from None
    problems = list(check_inventory(inv))
    secrets, secret_problems = _secrets(inv, file.resolve().parent)
    problems += secret_problems
    if problems or secrets is None:
        raise InventoryError(_render(file, lines, problems))
    return Loaded(inventory=inv, secrets=secrets, path=file,
                  source_sha256=hashlib.sha256(text.encode()).hexdigest())
