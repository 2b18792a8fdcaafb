"""Read edge.yaml into a validated Inventory; every failure names file, line, key and value."""

from __future__ import annotations

import os
import re
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
from edgekit.inventory.model import (
    ENV_RE,
    HOST_HEADER_RE,
    HOST_RE,
    IFNAME_RE,
    NAME_RE,
    PATH_RE,
    STATS_USER_RE,
    Inventory,
)

Loc = tuple[str | int, ...]

PATTERN_HELP = {
    NAME_RE: "must be a lowercase name: a-z, 0-9 and '-', at most 63 characters",
    IFNAME_RE: "must be an interface name of at most 15 characters",
    PATH_RE: "must be a path starting with '/', without spaces, '#', quotes or backslashes",
    STATS_USER_RE: "may hold only letters, digits, '_', '.' and '-'",
    HOST_RE: "must be an IPv4 address or a host name",
    HOST_HEADER_RE: "must be a host name, optionally with :port",
    ENV_RE: "must name an environment variable (letters, digits and '_'), not hold the "
            "secret itself",
}
# Keys whose value may be a secret typed in the wrong place: never echo it.
_HIDE_VALUE = frozenset({"password_env", "password_file", "auth_pass_env", "auth_pass_file"})


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
    node: yaml.Node,
    loc: Loc = (),
    lines: dict[Loc, int] | None = None,
    duplicates: list[Problem] | None = None,
    parents: frozenset[int] = frozenset(),
) -> dict[Loc, int]:
    """Map each key path to its 1-based line in the YAML source; note repeated keys."""
    lines = {} if lines is None else lines
    lines.setdefault(loc, node.start_mark.line + 1)
    if id(node) in parents:  # a recursive alias (&a [*a]); pydantic reports it
        return lines
    parents = parents | {id(node)}
    if isinstance(node, yaml.MappingNode):
        first: dict[Loc, int] = {}
        for key, value in node.value:
            sub = (*loc, str(key.value))
            line = key.start_mark.line + 1
            if sub in first and duplicates is not None:
                # PyYAML silently keeps the last value; the user meant one of them.
                duplicates.append(Problem(format_path(sub),
                                          f"key repeated (first at line {first[sub]})"))
            first.setdefault(sub, line)
            lines[sub] = line
            _line_map(value, sub, lines, duplicates, parents)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*loc, i), lines, duplicates, parents)
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
        hide = bool(loc) and str(loc[-1]) in _HIDE_VALUE
        problems.append(Problem(format_path(loc), msg, None if hide else e.get("input")))
    return problems


def _render(file: Path, lines: dict[Loc, int], problems: list[Problem],
            peers_flag: bool = False) -> list[str]:
    out = []
    for p in problems:
        loc = _parse_path(p.path)
        line = _line_of(lines, loc)
        if peers_flag and loc[:1] == ("peers",):
            where = "--peers"  # the peers came from the flag, not from the file
        else:
            where = f"{file}:{line}" if line else str(file)
        got = "" if p.value is None or isinstance(p.value, dict) else f" (got {_show(p.value)})"
        out.append(f"{where}: {p.path}: {p.message}{got}")
    return out


_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _parse_path(path: str) -> Loc:
    """Inverse of format_path, for the line lookup. A key holding '.' or '[' (always an
    invalid key) parses to a path with no line; _line_of then falls back to its parent."""
    if path == "(top level)":
        return ()
    return tuple(int(index) if index else name for index, name in _PATH_PART.findall(path))


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
            return path.read_text(encoding="utf-8").strip(), None
        except OSError as exc:
            return None, Problem(f"{key}_file", f"cannot read {path}: {exc.strerror}", None)
        except UnicodeDecodeError:
            return None, Problem(f"{key}_file", f"{path} is not UTF-8 text", None)
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
    # With version 3, checks.py already reports the auth keys; reading them adds noise.
    if (inv.vrrp.auth_pass_env or inv.vrrp.auth_pass_file) and inv.vrrp.version == 2:
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
        peers.append({"name": name.strip(), "address": addr.strip()} if sep else
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
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{file}: no such file", hint="edgekit init writes an example") from None
    except UnicodeDecodeError as exc:
        raise InventoryError([f"{file}: (top level): not UTF-8 text (byte {exc.start})"]) from None
    except OSError as exc:
        raise InputError(f"{file}: cannot read: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InventoryError([f"{where}: YAML syntax error: {what}"]) from None
    if data is None:  # nothing, only comments, or an empty document
        raise InventoryError([f"{file}: (top level): the file has no inventory in it "
                              "(edgekit init writes an example)"])
    if not isinstance(data, dict):
        assert node is not None
        raise InventoryError([f"{file}:{node.start_mark.line + 1}: (top level): the inventory "
                              f"must be a mapping of keys (got {type(data).__name__})"])
    duplicates: list[Problem] = []
    assert node is not None
    lines = _line_map(node, duplicates=duplicates)
    if duplicates:
        raise InventoryError(_render(file, lines, duplicates))
    if peers is not None:
        data = {**data, "peers": peers}
    flag = peers is not None
    try:
        inv = Inventory.model_validate(data)
    except ValidationError as exc:
        raise InventoryError(_render(file, lines, _pydantic_problems(exc), flag)) from None
    problems = list(check_inventory(inv))
    secrets, secret_problems = _secrets(inv, file.resolve().parent)
    problems += secret_problems
    if problems or secrets is None:
        raise InventoryError(_render(file, lines, problems, flag))
    return Loaded(inventory=inv, secrets=secrets, path=file,
                  source_sha256=hashlib.sha256(text.encode()).hexdigest())
