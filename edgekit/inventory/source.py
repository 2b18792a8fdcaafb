"""Read edge.yaml's text into plain data and a map of key paths to lines, safely.

Bounded: the file's size is capped; a long file's values are counted on the parser's
event stream before any node is built; nesting depth and the number of values
aliases expand to are checked on the composed node graph (where an alias is one
shared node) before anything walks it as a tree, so a few KB of alias bomb is
refused in milliseconds. YAML 1.1 readings that surprise (0443 is 291, 1:20 is 80,
`yes` is true) and YAML tags beyond the plain types are refused, with the plain
spelling to write instead.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgekit.errors import InputError, InventoryError, Located
from edgekit.inventory import limits

Loc = tuple[str | int, ...]
STDIN = "-"
STDIN_NAME = "<stdin>"

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_NULL = "tag:yaml.org,2002:null"
# What plain YAML resolves to (PyYAML's timestamp included: a date is then a type error).
_TAGS = frozenset({_INT, _FLOAT, _BOOL, _STR, _NULL, "tag:yaml.org,2002:timestamp"})
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
_OCTAL = re.compile(r"^[-+]?0[0-9_]+$")
_YAML11_BOOLS = {"yes", "no", "on", "off"}


_TOO_BIG = (
    f"the file is larger than {limits.MAX_FILE_BYTES} bytes; an inventory is a few KB: "
    "is this the right file?"
)
_BOMB = (
    f"the file expands to more than {limits.MAX_VALUES} values (its YAML aliases multiply: "
    "an alias bomb?); write the values out or use fewer aliases"
)
_TOO_MANY = (
    f"the file holds more than {limits.MAX_VALUES} values; an inventory of 5,000 servers "
    "holds about 40,000: is this the right file?"
)


@dataclass(frozen=True)
class Document:
    data: dict[str, Any]
    lines: dict[Loc, int]  # key path -> 1-based line of its key (or list item)


def format_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def display_name(path: Path) -> str:
    return STDIN_NAME if str(path) == STDIN else str(path)


def read_text(path: Path) -> str:
    """The file's text (`-`: standard input), refusing what is too big or not UTF-8."""
    name = display_name(path)
    try:
        if str(path) == STDIN:
            stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
            raw: bytes | str = (
                stream.read(limits.MAX_FILE_BYTES + 1)
                if stream
                else sys.stdin.read(limits.MAX_FILE_BYTES + 1)
            )
        else:
            if path.is_dir():
                raise InputError(
                    f"{name}: is a directory, not an inventory file",
                    hint="give the path of edge.yaml",
                )
            with path.open("rb") as fh:
                raw = fh.read(limits.MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file", hint="edgekit init writes an example") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror}") from None
    if len(raw) > limits.MAX_FILE_BYTES:
        raise InventoryError([Located(name, None, "(top level)", _TOO_BIG)])
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(
            [Located(name, None, "(top level)", f"not UTF-8 text (byte {exc.start})")]
        ) from None


# What to write instead, for the YAML syntax errors an inventory most often has.
_SYNTAX_HINTS = [
    ("tab character", "indent with spaces"),
    ("another document", "keep one document: remove the '---' line and what follows"),
    ("undefined alias", "define the anchor (&name) before the alias (*name) that uses it"),
    ("maximum nesting depth", "write edge.yaml's keys as edgekit init's example does"),
]


def _syntax_error(name: str, text: str, exc: Exception) -> InventoryError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    position = getattr(exc, "position", None)
    if isinstance(exc, yaml.reader.ReaderError) and position is not None:
        line = text.count("\n", 0, position) + 1
        char = getattr(exc, "character", None)
        code = ord(char) if isinstance(char, str) else char
        what = (
            f"a control character (U+{code:04X}) is not allowed; remove it"
            if isinstance(code, int)
            else "a character YAML does not allow"
        )
    else:
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "maximum nesting depth" in what:
            what += f" (edgekit reads at most {limits.MAX_DEPTH} levels)"
    hint = next((h for part, h in _SYNTAX_HINTS if part in what), None)
    what += f"; {hint}" if hint else ""
    return InventoryError([Located(name, line, None, f"YAML syntax error: {what}")])


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many values the document has once aliases are expanded (stops past `limit`).

    Memoised on the node graph, so the work is linear in the file, not in the expansion;
    an alias that refers to its own anchor counts once.
    """
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size.get(id(c), 1) for c in _children(node))
            if size[key] > limit:
                return size[key]
            continue
        if key in size or key in open_nodes:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    return size[id(root)]


def _tag_problem(tag: str) -> str:
    shown = tag.replace("tag:yaml.org,2002:", "!!")
    return f"the YAML tag {shown} has no place in edge.yaml: write the value plainly"


def _scalar_surprise(node: yaml.ScalarNode) -> str | None:
    """Why a plain scalar must be written differently, or None."""
    try:
        return _surprise(node)
    except ValueError:  # an explicitly tagged scalar that is no number at all (!!int "0x")
        return f"{node.value} is not a number: write it in plain decimal"


def _surprise(node: yaml.ScalarNode) -> str | None:
    if node.tag not in _TAGS:
        return _tag_problem(node.tag)
    if node.style and node.tag == _STR:  # quoted or a block scalar: text, as written
        return None
    text = str(node.value)
    if node.tag in (_INT, _FLOAT):
        if len(text) > limits.MAX_NUMBER_CHARS:
            return (
                f"a number of {len(text)} characters is not a value edgekit takes; write "
                f"at most {limits.MAX_NUMBER_CHARS} digits"
            )
        if _OCTAL.match(text):
            if node.tag == _INT:
                return (
                    f"YAML 1.1 reads {text} as an octal number "
                    f"({int(text.replace('_', ''), 8)}); write {int(text.replace('_', ''))}"
                    " without the leading zero"
                )
        if ":" in text:
            value = 0.0
            for part in text.lstrip("+-").split(":"):
                value = value * 60 + float(part.replace("_", ""))
            shown = f"{value:g}"
            return (
                f"YAML 1.1 reads {text} as a base-60 (sexagesimal) number ({shown}); "
                f"write {shown}, or quote it if you meant text"
            )
        if text.lower().lstrip("+-").startswith(("0x", "0b")):
            base = 16 if "x" in text.lower() else 2
            value_i = int(text.replace("_", ""), 0)
            return (
                f"YAML 1.1 reads {text} as a base-{base} number ({value_i}); "
                f"write {value_i} in plain decimal"
            )
        if "_" in text:
            plain = text.replace("_", "")
            return (
                f"YAML 1.1 reads {text} as the number {plain}, YAML 1.2 as text; "
                f"write {plain} without underscores"
            )
        _scalar(node)  # raises ValueError for no number at all (an explicit !!int "abc")
    elif node.tag == _STR and _OCTAL.match(text) and text.lstrip("+-").isdigit():
        return (
            f"{text} has a leading zero, which YAML 1.1 reads as octal (and as text "
            f"when a digit is 8 or 9); write {int(text)} without the leading zero"
        )
    elif node.tag == _BOOL and text.lower() in _YAML11_BOOLS:
        meaning = "true" if text.lower() in ("yes", "on") else "false"
        return (
            f"YAML 1.1 reads {text} as {meaning}; write true or false (or quote "
            "it if you meant text)"
        )
    return None


def _walk(root: yaml.Node, name: str) -> tuple[dict[Loc, int], list[Located]]:
    """Lines of every key path; repeated keys, odd scalars, keys that are not text and
    nesting too deep. Each node is visited once, however many aliases share it."""
    lines: dict[Loc, int] = {(): root.start_mark.line + 1}
    problems: list[Located] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, Loc, int]] = [(root, (), 0)]
    while stack:
        node, loc, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if len(seen) > limits.MAX_VALUES:  # no aliases needed: a long list does it too
            return lines, [Located(name, None, "(top level)", _TOO_MANY)]
        if depth > limits.MAX_DEPTH:
            # The path's first two levels say where; all of it would fill the screen.
            problems.append(
                Located(
                    name,
                    lines.get(loc, node.start_mark.line + 1),
                    format_path(loc[:2]),
                    f"nested more than {limits.MAX_DEPTH} levels deep "
                    "below here; edge.yaml needs about 5: write its keys as edgekit "
                    "init's example does",
                )
            )
            continue
        if not isinstance(node, yaml.ScalarNode) and node.tag not in _COLLECTION_TAGS:
            problems.append(
                Located(
                    name,
                    lines.get(loc, node.start_mark.line + 1),
                    format_path(loc),
                    _tag_problem(node.tag),
                )
            )
            continue
        if isinstance(node, yaml.ScalarNode):
            why = _scalar_surprise(node)
            if why:
                problems.append(Located(name, node.start_mark.line + 1, format_path(loc), why))
        elif isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            todo: list[tuple[yaml.Node, Loc, int]] = []
            for key, value in node.value:
                line = key.start_mark.line + 1
                if key.tag == _MERGE:
                    todo.append((value, loc, depth + 1))
                    continue
                if not isinstance(key, yaml.ScalarNode) or (key.tag != _STR and not key.style):
                    shown = key.value if isinstance(key, yaml.ScalarNode) else "a collection"
                    sub = (*loc, str(shown))
                    lines.setdefault(sub, line)
                    why = _scalar_surprise(key) if isinstance(key, yaml.ScalarNode) else None
                    problems.append(
                        Located(
                            name, line, format_path(sub), why or ("a key must be text; quote it")
                        )
                    )
                    continue
                text = str(key.value)
                sub = (*loc, text)
                if text in first:
                    # PyYAML silently keeps the last value; the user meant one of them.
                    problems.append(
                        Located(
                            name,
                            line,
                            format_path(sub),
                            f"key repeated (first at line {first[text]}): keep one of them",
                        )
                    )
                first.setdefault(text, line)
                lines.setdefault(sub, line)
                todo.append((value, sub, depth + 1))
            stack.extend(reversed(todo))  # popped in document order
        elif isinstance(node, yaml.SequenceNode):
            items = [(item, (*loc, i), depth + 1) for i, item in enumerate(node.value)]
            for item, sub, _ in items:
                lines.setdefault(sub, item.start_mark.line + 1)
            stack.extend(reversed(items))
    problems.sort(key=lambda p: p.line or 0)
    return lines, problems


def _scalar(node: yaml.ScalarNode) -> Any:
    value = str(node.value)
    if node.tag == _STR:
        return value
    if node.tag == _INT:  # plain decimal: _walk refused octal, hex, base 60 and '_'
        return int(value)
    if node.tag == _BOOL:
        return value.lower() == "true"
    if node.tag == _NULL:
        return None
    if node.tag == _FLOAT:
        low = value.lower()
        if low.lstrip("+-") in (".inf", ".nan"):
            return float(low.replace(".", "", 1))
        return float(value)
    return yaml.constructor.SafeConstructor().construct_object(node)  # dates and the like


def _plain_data(node: yaml.Node) -> Any:
    """The data of a document without aliases, merges or explicit tags, built directly
    (several times faster than PyYAML's constructor; depth is bounded by _walk)."""
    if isinstance(node, yaml.MappingNode):
        return {str(k.value): _plain_data(v) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_plain_data(item) for item in node.value]
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(node)


def _too_many_values(text: str) -> bool:
    """Whether the text holds more than MAX_VALUES values, counted on the parser's event
    stream (constant memory) before the node graph is built. Every value takes at least
    two characters ('a,' or 'a' and a line break), so shorter text cannot."""
    if len(text) <= 2 * limits.MAX_VALUES:
        return False
    count = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent | yaml.AliasEvent):
            count += 1
            if count > limits.MAX_VALUES:
                return True
    return False


def parse(text: str, name: str) -> Document:
    """The document as data; InventoryError for anything that is not a sound inventory."""
    try:
        if _too_many_values(text):
            raise InventoryError([Located(name, None, "(top level)", _TOO_MANY)])
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise _syntax_error(name, text, exc) from None
    except RecursionError:  # the pure-Python parser, on deep nesting
        raise InventoryError(
            [Located(name, None, "(top level)", f"nested more than {limits.MAX_DEPTH} levels deep")]
        ) from None
    if node is None or node.tag == _NULL:  # nothing, only comments, or an empty document
        raise InventoryError(
            [
                Located(
                    name,
                    None,
                    "(top level)",
                    "the file has no inventory in it (edgekit init writes an example)",
                )
            ]
        )
    # Without an alias ('*name') nothing is shared and nothing multiplies: skip the count.
    size = _expanded_size(node, limits.MAX_VALUES) if "*" in text else 0
    if size > limits.MAX_VALUES:
        raise InventoryError([Located(name, node.start_mark.line + 1, "(top level)", _BOMB)])
    lines, problems = _walk(node, name)
    if problems:
        raise InventoryError(problems)
    if not isinstance(node, yaml.MappingNode):
        kind = "list" if isinstance(node, yaml.SequenceNode) else None
        if kind is None:
            try:
                kind = type(yaml.constructor.SafeConstructor().construct_object(node)).__name__
            except (yaml.YAMLError, ValueError):
                kind = "a scalar"
        raise InventoryError(
            [
                Located(
                    name,
                    node.start_mark.line + 1,
                    "(top level)",
                    f"the inventory must be a mapping of keys (got {kind}); write "
                    "cluster:, vips:, peers: ... at the top level (edgekit init writes "
                    "an example)",
                )
            ]
        )
    try:
        if "*" in text or "<<" in text or "!" in text:  # aliases, merges, tags: PyYAML's way
            data = yaml.constructor.SafeConstructor().construct_document(node)
        else:
            data = _plain_data(node)
    except yaml.YAMLError as exc:
        raise _syntax_error(name, text, exc) from None
    except (RecursionError, ValueError) as exc:
        what = (
            "merge keys (<<) chained too deep"
            if isinstance(exc, RecursionError)
            else str(exc).splitlines()[0]
        )
        raise InventoryError(
            [Located(name, None, "(top level)", f"cannot read the YAML: {what}")]
        ) from None
    return Document(data=data, lines=lines)
