"""haproxy.cfg read the way haproxy reads it, for `edgekit import`: sections start at a
section keyword whatever the indentation, `#` outside quotes starts a comment, quotes and
escapes are removed (fields.haproxy_words). Pure: text in, sections out."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgekit.errors import InputError
from edgekit.inventory import fields, limits

DIRECTIVES = ".directives"  # the pseudo-section of conditional lines before the first section
PROXIES = ("frontend", "backend", "listen")
ANY_ADDRESS = frozenset({"", "*", "0.0.0.0", "::", "[::]"})


@dataclass(frozen=True)
class CfgLine:
    number: int
    words: list[str]

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def key(self, n: int = 2) -> str:
        return " ".join(self.words[:n])


@dataclass
class Section:
    kind: str
    name: str
    number: int
    lines: list[CfgLine] = field(default_factory=list)
    defaults: Section | None = None  # the defaults section in force for a proxy

    def find(self, *keys: str) -> list[CfgLine]:
        return [ln for ln in self.lines if ln.words[0] in keys]

    @property
    def mode(self) -> str:
        for section in (self, self.defaults):
            found = section.find("mode") if section else []
            if found and len(found[-1].words) > 1:
                return found[-1].words[1]
        return "tcp"

    @property
    def is_stats(self) -> bool:
        """A proxy that only serves haproxy's stats page (no servers, no backend)."""
        forwards = self.find("server", "default_backend", "use_backend")
        return (
            self.kind != "backend"
            and not forwards
            and any(ln.words[0] == "stats" and ln.key() != "stats socket" for ln in self.lines)
        )


def _without_comment(raw: str) -> tuple[str, bool]:
    """The line up to an unquoted '#', and whether a quote is left open."""
    squote = dquote = False
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and not squote:
            i += 2
            continue
        if c == "'" and not dquote:
            squote = not squote
        elif c == '"' and not squote:
            dquote = not dquote
        elif c == "#" and not squote and not dquote:
            return raw[:i], False
        i += 1
    return raw, squote or dquote


def decode(data: bytes, name: str) -> str:
    """haproxy.cfg's text; a binary or non-UTF-8 file is refused in one line."""
    if len(data) > limits.MAX_FILE_BYTES:
        raise InputError(f"{name}: larger than {limits.MAX_FILE_BYTES} bytes: not a haproxy.cfg")
    if b"\0" in data:
        raise InputError(f"{name}: a binary file, not a haproxy.cfg", hint="give haproxy.cfg")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{name}:{line}: not UTF-8 text: not a haproxy.cfg") from None


def parse_config(text: str, name: str) -> list[Section]:
    """The sections of a haproxy.cfg, each with its lines' words; what haproxy itself
    would refuse to read (a line outside any section, an open quote) is an InputError."""
    sections: list[Section] = []
    defaults: Section | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        body, open_quote = _without_comment(raw)
        if open_quote:
            raise InputError(f"{name}:{number}: a quote is not closed (haproxy refuses the line)")
        words = fields.haproxy_words(body.strip())
        if not words:
            continue
        if words[0] in fields.SECTION_KEYWORDS:
            section = Section(words[0], words[1] if len(words) > 1 else "", number)
            if section.kind in PROXIES:
                section.defaults = defaults
            if section.kind in ("frontend", "listen") and len(words) > 2:
                # haproxy 1.x's `listen NAME ADDR:PORT`: a bind on the header line.
                section.lines.append(CfgLine(number, ["bind", *words[2:]]))
            elif section.kind == "defaults":
                defaults = section
            sections.append(section)
        elif not sections and words[0].startswith("."):
            # .if/.alert/... before any section: kept, and reported as not imported.
            sections.append(Section(DIRECTIVES, "", number, [CfgLine(number, words)]))
        elif not sections:
            raise InputError(
                f"{name}:{number}: '{words[0]}' outside any section (haproxy refuses it)",
                hint="a haproxy.cfg starts with a section: global, defaults, frontend, ...",
            )
        else:
            sections[-1].lines.append(CfgLine(number, words))
    if not sections:
        raise InputError(f"{name}: empty: no haproxy section in it", hint="give haproxy.cfg")
    if not any(s.kind in ("frontend", "listen") for s in sections):
        raise InputError(
            f"{name}: no frontend or listen section: nothing to import",
            hint="give the haproxy.cfg that serves the services",
        )
    return sections


def endpoint(spec: str) -> tuple[str, int] | None:
    """(address, port) of `ADDR:PORT`, `*:PORT`, `:PORT`, `[::]:PORT`; None for what has
    no single port (a range, a socket, a variable port)."""
    for prefix in ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"):
        spec = spec.removeprefix(prefix)
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    return host.strip("[]"), int(port)


def endpoints(sections: list[Section]) -> tuple[set[int], set[str]]:
    """Every listen port and every server address:port (address alone without a port) of
    a haproxy.cfg's proxies: what the equivalence check compares."""
    ports: set[int] = set()
    servers: set[str] = set()
    for section in sections:
        if section.kind not in PROXIES:
            continue
        for ln in section.find("bind"):
            for spec in ln.words[1].split(",") if len(ln.words) > 1 else []:
                found = endpoint(spec)
                if found:
                    ports.add(found[1])
        for ln in section.find("server"):
            if len(ln.words) > 2 and "@" not in ln.words[2] and "/" not in ln.words[2]:
                found = endpoint(ln.words[2])
                servers.add(f"{found[0]}:{found[1]}" if found else ln.words[2])
    return ports, servers
