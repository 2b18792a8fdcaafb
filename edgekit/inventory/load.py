"""Read edge.yaml into a validated Inventory; every failure names file, line, key and value."""

from __future__ import annotations

import hashlib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from edgekit.errors import InputError, InventoryError, Located
from edgekit.inventory import source
from edgekit.inventory.advice import advise
from edgekit.inventory.checks import (
    Problem,
    check_inventory,
    check_password,
    check_vrrp_auth,
    did_you_mean,
)
from edgekit.inventory.model import (
    ENV_RE,
    HOST_HEADER_RE,
    HOST_RE,
    NAME_RE,
    PATH_RE,
    STATS_USER_RE,
    Inventory,
)
from edgekit.inventory.source import Loc, format_path

__all__ = [
    "InventoryError",
    "Loaded",
    "Secrets",
    "format_path",
    "load_inventory",
    "parse_peers_flag",
]

PATTERN_HELP = {
    NAME_RE: "must be a lowercase name: a-z, 0-9 and '-', at most 63 characters; write "
    "e.g. boston-edge",
    PATH_RE: "must be a path starting with '/', without spaces, '#', quotes or backslashes; "
    "write e.g. /healthz",
    STATS_USER_RE: "may hold only letters, digits, '_', '.' and '-'; write e.g. admin",
    HOST_RE: "must be an IPv4 address or a host name; write e.g. 10.10.0.125 or "
    "controller0.internal",
    HOST_HEADER_RE: "must be a host name, optionally with :port; write e.g. api.example.net",
    ENV_RE: "must name an environment variable (letters, digits and '_'), not hold the "
    "secret itself; write e.g. EDGEKIT_STATS_PASSWORD and export the secret there",
}
# What to write instead, by pydantic's error type.
TYPE_HINTS = {
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "int_type": "write a whole number",
    "int_parsing": "write a whole number",
    "int_from_float": "write a whole number",
    "float_type": "write a number",
    "float_parsing": "write a number",
    "string_type": "write text (quote it if YAML reads it as a number, date or boolean)",
    "list_type": "write a list ('- item' lines or [a, b])",
    "dict_type": "write a mapping of keys",
    "model_type": "write a mapping of keys",
    "model_attributes_type": "write a mapping of keys",
    "ip_v4_address": "write four numbers 0-255 with dots between them, without leading "
    "zeros or a prefix, e.g. 10.10.0.11",
    "ip_v4_interface": "write an IPv4 address and its prefix, e.g. 10.10.0.100/24",
}
# What to add to a range's hint, by key path.
RANGE_HINTS = {
    "haproxy.maxconn": "or leave maxconn out for haproxy to derive it from its open-files limit",
}


def _range_hint(kind: str, ctx: dict[str, Any], path: str) -> str | None:
    """'write at most N' and the like, for a number outside its range."""
    words = {
        "less_than_equal": ("at most", "le"),
        "greater_than_equal": ("at least", "ge"),
        "less_than": ("less than", "lt"),
        "greater_than": ("more than", "gt"),
        "too_short": ("at least", "min_length"),
        "too_long": ("at most", "max_length"),
    }.get(kind)
    if words is None or words[1] not in ctx:
        return None
    bound = ctx[words[1]]
    what = str(bound)
    if kind.startswith("too_"):
        what += " item" if bound == 1 else " items"
    extra = f", {RANGE_HINTS[path]}" if path in RANGE_HINTS else ""
    return f"write {words[0]} {what}{extra}"


# Keys whose value may be a secret typed in the wrong place: never echo it.
_HIDE_VALUE = frozenset({"password_env", "password_file", "auth_pass_env", "auth_pass_file"})


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
    # "FILE:LINE: KEY.PATH: message" lines: accepted, but probably not what was meant.
    warnings: list[str] = field(default_factory=list, compare=False)
    # Key path -> line in the file, to point later errors (haproxy -c) at the inventory.
    lines: dict[Loc, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return source.display_name(self.path)

    def locate(self, path: str, message: str) -> Located:
        """A problem found after loading (e.g. by haproxy -c), placed in the file."""
        return Located(self.name, _line_of(self.lines, _parse_path(path)), path, message)


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
            allowed = _fields_at(loc[:-1])
            close = did_you_mean(key, allowed)
            # Without a close match: what the place takes (the value is never shown: it
            # may be a secret typed under the wrong key).
            hint = (
                None
                if close
                else "remove it" + (f" (the keys here are {', '.join(allowed)})" if allowed else "")
            )
            problems.append(Problem(format_path(loc), "unknown key" + close, None, hint))
            continue
        if kind == "missing":
            problems.append(Problem(format_path(loc), "required key is missing", None, "add it"))
            continue
        msg = PATTERN_HELP.get(str(e.get("ctx", {}).get("pattern")), e["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        msg = msg[:1].lower() + msg[1:]
        if "[key]" in e["loc"]:
            msg = f"bad name: {msg}"
        hide = bool(loc) and str(loc[-1]) in _HIDE_VALUE
        hint = TYPE_HINTS.get(kind) or _range_hint(kind, e.get("ctx", {}), format_path(loc))
        problems.append(Problem(format_path(loc), msg, None if hide else e.get("input"), hint))
    return _misspelt_is_not_missing(problems)


def _misspelt_is_not_missing(problems: list[Problem]) -> list[Problem]:
    """`Services:` is one mistake: the unknown key says "did you mean 'services'?", so
    the required key it stands for is not also reported missing."""
    meant = set()
    for p in problems:
        if p.message.startswith("unknown key; did you mean '"):
            parent = p.path.rpartition(".")[0] if "." in p.path else ""
            key = p.message.split("'")[1]
            meant.add(f"{parent}.{key}" if parent else key)
    return [p for p in problems if not (p.message == "required key is missing" and p.path in meant)]


def _locate(
    name: str, lines: dict[Loc, int], problems: list[Problem], peers_flag: bool = False
) -> list[Located]:
    out = []
    for p in problems:
        loc = _parse_path(p.path)
        if peers_flag and loc[:1] == ("peers",):
            where, line = "--peers", None  # the peers came from the flag, not from the file
        else:
            where, line = name, _line_of(lines, loc)
        got = "" if p.value is None or isinstance(p.value, dict) else f" (got {_show(p.value)})"
        hint = f"; {p.hint}" if p.hint else ""
        out.append(Located(where, line, p.path, f"{p.message}{got}{hint}"))
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
            return None, Problem(
                f"{key}_env",
                f"environment variable {env} is not set or empty",
                None,
                f"export {env}=... before running edgekit",
            )
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
    password, problem = _read_secret(
        base, inv.stats.password_env, inv.stats.password_file, "stats.password"
    )
    if problem:
        problems.append(problem)
    else:
        weak = check_password(
            password,
            inv.stats.user,
            "stats.password_" + ("env" if inv.stats.password_env else "file"),
        )
        if weak:
            problems.append(weak)
    vrrp_auth = None
    # With version 3, checks.py already reports the auth keys; reading them adds noise.
    if (inv.vrrp.auth_pass_env or inv.vrrp.auth_pass_file) and inv.vrrp.version == 2:
        vrrp_auth, problem = _read_secret(
            base, inv.vrrp.auth_pass_env, inv.vrrp.auth_pass_file, "vrrp.auth_pass"
        )
        if problem:
            problems.append(problem)
        elif vrrp_auth is not None:
            key = "vrrp.auth_pass_env" if inv.vrrp.auth_pass_env else "vrrp.auth_pass_file"
            bad = check_vrrp_auth(vrrp_auth, key)
            if bad:
                problems.append(bad)
    if problems or password is None:
        return None, problems
    return Secrets(stats_password=password, vrrp_auth=vrrp_auth), []


def _ssh_files(inv: Inventory, base: Path) -> list[Problem]:
    out = []
    for key in ("identity_file", "known_hosts"):
        value = getattr(inv.ssh, key)
        if value and not (base / os.path.expanduser(value)).is_file():
            out.append(
                Problem(
                    f"ssh.{key}",
                    "no such file on this machine",
                    value,
                    "write the path of the file (relative paths start at "
                    "edge.yaml's directory), or leave the key out",
                )
            )
    return out


def parse_peers_flag(text: str) -> list[dict[str, str]]:
    """`--peers NAME=ADDR,...` or `ADDR,...` (bare addresses become peer1, peer2, ...)."""
    peers = []
    for i, item in enumerate(filter(None, (s.strip() for s in text.split(","))), start=1):
        name, sep, addr = item.partition("=")
        peers.append(
            {"name": name.strip(), "address": addr.strip()}
            if sep
            else {"name": f"peer{i}", "address": item}
        )
    if not peers:
        raise InputError(
            "--peers: no peers given", hint="--peers proxy1=10.0.0.11,proxy2=10.0.0.12"
        )
    return peers


def load_inventory(
    path: str | Path, *, peers: list[dict[str, str]] | None = None, for_ssh: bool = False
) -> Loaded:
    """Read (`-`: standard input), validate and resolve secrets; raise InventoryError
    listing every problem. With `for_ssh`, the SSH key and known_hosts files named must
    exist (a command that connects needs them); otherwise their absence is a warning."""
    file = Path(path)
    name = source.display_name(file)
    text = source.read_text(file)
    doc = source.parse(text, name)
    data = doc.data if peers is None else {**doc.data, "peers": peers}
    flag = peers is not None
    try:
        inv = Inventory.model_validate(data)
    except ValidationError as exc:
        raise InventoryError(_locate(name, doc.lines, _pydantic_problems(exc), flag)) from None
    except RecursionError:  # a self-referencing alias where a collection is expected
        raise InventoryError(
            [
                Located(
                    name, None, "(top level)", "a YAML alias refers to itself; write the value out"
                )
            ]
        ) from None
    base = Path.cwd() if name == source.STDIN_NAME else file.resolve().parent
    problems = list(check_inventory(inv))
    secrets, secret_problems = _secrets(inv, base)
    problems += secret_problems
    ssh_files = _ssh_files(inv, base)
    if for_ssh:
        problems += ssh_files
    if problems or secrets is None:
        raise InventoryError(_locate(name, doc.lines, problems, flag))
    advice = list(advise(inv)) + (
        []
        if for_ssh
        else [Problem(p.path, p.message, p.value, "deploy and status need it") for p in ssh_files]
    )
    warnings = [w.text() for w in _locate(name, doc.lines, advice, flag)]
    return Loaded(
        inventory=inv,
        secrets=secrets,
        path=file,
        source_sha256=hashlib.sha256(text.encode()).hexdigest(),
        warnings=warnings,
        lines=doc.lines,
    )
