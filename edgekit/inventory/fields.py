"""Single-value rules whose message must say which rule was broken and what to write.

Each function raises ValueError with that message (pydantic reports it against the
key) and returns the value unchanged when it is sound.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections.abc import Callable

from edgekit.inventory import limits

HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_DURATION = re.compile(r"^([0-9]+)(us|ms|s|m|h|d)$")
_UNIT_MS = {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_HELP = "write a whole number with a unit: us, ms, s, m, h or d (e.g. 500ms, 30s, 1h)"

# Keywords that open a section in haproxy.cfg (every version up to 3.2): a line
# starting with one ends the service's backend and starts a proxy, userlist, ... of
# the inventory's making.
SECTION_KEYWORDS = frozenset(
    {
        "global",
        "defaults",
        "frontend",
        "backend",
        "listen",
        "peers",
        "userlist",
        "resolvers",
        "cache",
        "program",
        "mailers",
        "ring",
        "http-errors",
        "crt-store",
        "traces",
        "log-forward",
        "fcgi-app",
        "acme",
        "ruleset",
        "namespace_list",
        "spoe-agent",
        "spoe-message",
        "spoe-group",
        "dynamic-update",
    }
)
# Not sections, but the same reach: `stats` in a service's backend serves haproxy's
# stats page (and its admin actions) on the VIP, outside the password-protected page.
REFUSED_KEYWORDS = frozenset({"stats"})


def char_name(char: str) -> str:
    return {
        "\n": "a line break",
        "\r": "a carriage return",
        "\t": "a tab",
        "\x00": "a NUL byte",
    }.get(char, f"a control character (U+{ord(char):04X})")


def printable_text(value: str) -> str:
    bad = next((c for c in value if not c.isprintable()), None)
    if bad is not None:
        raise ValueError(f"holds {char_name(bad)}: write printable text only")
    return value


def url_path(value: str) -> str:
    """A URL path haproxy.cfg carries as it is: no sample expression, which a later
    template change could have haproxy evaluate (env() would reach the stats password)."""
    if _ENV_FETCH.search(value) or "%[" in value:
        raise ValueError(
            "a URL path cannot hold a haproxy expression (env(...), %[...]): write the "
            "plain path, e.g. /healthz"
        )
    return value


def _bare_number(value: int | float) -> str:
    """Why a YAML number is no duration, and the duration to write."""
    if not math.isfinite(value):
        return "not a duration: a duration needs a number and a unit, e.g. 30s or 500ms"
    if value < 0:
        return "a duration cannot be negative: write a positive whole number with a unit, e.g. 30s"
    if value == 0:
        return (
            "a bare number is milliseconds to haproxy, and a zero duration disables the "
            "timer or check: write a positive duration with a unit, e.g. 5s"
        )
    if value > limits.MAX_DURATION_MS:
        return (
            f"longer than haproxy's maximum, {limits.MAX_DURATION_MS} ms (about 24.8 days), "
            "and without a unit: write at most 24d"
        )
    bare = "a bare number is milliseconds to haproxy, not seconds"
    if value != int(value):
        ms = round(value * 1000)
        if ms < 1 or ms > limits.MAX_DURATION_MS:
            return f"{bare}, and haproxy takes whole numbers only: write e.g. 30s or 500ms"
        return (
            f"{bare}, and haproxy takes whole numbers only: write the unit, e.g. "
            f"{ms}ms for {value:g} seconds"
        )
    if int(value) * 1000 > limits.MAX_DURATION_MS:
        return f"{bare}: write the unit, e.g. {int(value)}ms"
    return f"{bare}: write the unit, e.g. {int(value)}s or {int(value)}ms"


def duration(value: object) -> str:
    """A haproxy time: whole number and unit, at least 1 ms, at most haproxy's maximum."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration; {_DURATION_HELP}")
    if not isinstance(value, str):
        raise ValueError(_bare_number(value))
    match = _DURATION.match(value)
    if not match:
        if value.isdigit():
            raise ValueError(
                f"a bare number is milliseconds to haproxy, not seconds: write "
                f"the unit, e.g. {value}s or {value}ms"
            )
        if re.fullmatch(r"[0-9]*\.[0-9]+ ?(us|ms|s|m|h|d)", value):
            raise ValueError("haproxy takes whole numbers only: write e.g. 1500ms rather than 1.5s")
        if re.fullmatch(r"[0-9]+\s+(us|ms|s|m|h|d)", value):
            raise ValueError(
                f"write the number and its unit without a space, e.g. {''.join(value.split())}"
            )
        raise ValueError(f"not a duration; {_DURATION_HELP}")
    ms = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if ms == 0:
        raise ValueError(
            "a zero duration disables the timer or check in haproxy; write "
            "a positive duration such as 5s"
        )
    if ms < limits.MIN_DURATION_MS:
        raise ValueError("haproxy's timers count milliseconds: write at least 1ms")
    if ms > limits.MAX_DURATION_MS:
        raise ValueError(
            f"longer than haproxy's maximum, {limits.MAX_DURATION_MS} ms "
            "(about 24.8 days): write at most 24d"
        )
    return value


def strings_only(check: Callable[[str], str]) -> Callable[[object], object]:
    """A validator for text: anything that is not a string passes through unchanged, so
    that pydantic reports its type."""

    @functools.wraps(check)
    def validate(value: object) -> object:
        return check(value) if isinstance(value, str) else value

    return validate


NIC = ": write the NIC's name, e.g. eth1"


@strings_only
def interface_name(value: str) -> str:
    """A Linux interface name, by the kernel's rules (dev_valid_name), and one that
    keepalived.conf can carry unquoted."""
    if not value:
        raise ValueError("an interface name cannot be empty: write the NIC's name, e.g. eth1")
    if value in (".", ".."):
        raise ValueError(
            f"the kernel refuses '{value}' as an interface name: write the NIC's name, e.g. eth1"
        )
    if value in ("all", "default"):
        what = "every interface at once" if value == "all" else "the defaults of new interfaces"
        raise ValueError(
            f"the kernel refuses '{value}' as an interface name (net.ipv4.conf.{value} "
            f"sets {what}): write the NIC's name, e.g. eth1"
        )
    if value == "lo":
        raise ValueError(
            "the loopback interface reaches no other peer, so VRRP cannot run on it: "
            "write the NIC on the VIPs' segment, e.g. eth1"
        )
    if len(value.encode()) > limits.MAX_IFNAME:
        raise ValueError(
            f"an interface name has at most {limits.MAX_IFNAME} characters "
            f"(the kernel's limit; this one has {len(value.encode())}){NIC}"
        )
    for char, why in (("/", "'/'"), (":", "':' (alias labels such as eth0:1 are not interfaces)")):
        if char in value:
            raise ValueError(f"the kernel does not allow {why} in an interface name{NIC}")
    if any(c.isspace() for c in value):
        raise ValueError(f"the kernel does not allow whitespace in an interface name{NIC}")
    if not value.isascii() or not value.isprintable():
        raise ValueError(
            "an interface name must be printable ASCII (letters, digits, '-', '_', '.', '@')" + NIC
        )
    if value.startswith("-"):
        raise ValueError(
            "an interface name cannot start with '-' (ip and other tools would read an "
            f"option){NIC}"
        )
    bad = sorted({c for c in value if c in "{}#!\"'\\;$`"})
    if bad:
        raise ValueError(
            f"{' '.join(bad)} in an interface name would be syntax in "
            "keepalived.conf: use letters, digits, '-', '_', '.' and '@'"
        )
    return value


@strings_only
def ssh_user(value: str) -> str:
    if not value:
        raise ValueError(
            "empty: fabric would quietly log in as your local user; write the "
            "remote user, e.g. debian or root"
        )
    if any(c.isspace() for c in value):
        raise ValueError(
            "a user name cannot contain whitespace: write the remote login name, e.g. debian"
        )
    if not value.isprintable():
        raise ValueError("a user name cannot contain control characters: write e.g. debian")
    if value.startswith("-"):
        raise ValueError(
            "a user name cannot start with '-' (ssh would read an option): write e.g. debian"
        )
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}\$?", value):
        raise ValueError(
            "a user name takes letters, digits, '_', '.', '-' and '@' (at most 64): "
            "write e.g. debian"
        )
    return value


@strings_only
def ssh_host(value: str) -> str:
    """Where SSH reaches a peer: an IP address or a host name."""
    if any(c.isspace() for c in value) or not value:
        raise ValueError(
            "a host cannot be empty or contain whitespace: write one host "
            "name or IP address (its port goes in ssh_port)"
        )
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if ":" in value:
        raise ValueError("write the port in ssh_port, not after the host")
    if not HOST_RE.match(value):
        raise ValueError(
            "must be a host name (letters, digits, '-', '.') or an IP address: write "
            "e.g. edge1.example.net or 192.168.56.11"
        )
    return value


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$")


def is_ipv4(text: str) -> bool:
    """Dotted-decimal IPv4, as ipaddress reads it (no leading zeros); fast, for the
    thousands of servers a large inventory has."""
    return _IPV4.match(text) is not None


def server_address(value: str) -> str:
    """A backend server: a dotted-decimal value must be a real IPv4 address."""
    match = _IPV4.match(value)
    if match is None:
        if all(label.isdigit() for label in value.split(".")):
            raise ValueError(
                "not a valid IPv4 address (four numbers 0-255, without leading "
                "zeros) nor a host name: write e.g. 10.10.0.125 or controller0.internal"
            )
        return value
    first = int(match.group(1))
    if first == 0 or first >= 224:  # 0.0.0.0/8, multicast, reserved, broadcast
        raise ValueError(
            "not an address a server can have (0.0.0.0/8, multicast, "
            "broadcast or reserved): write the server's own address"
        )
    return value


_HAPROXY_ESCAPES = {"t": "\t", "n": "\n", "r": "\r"}


def haproxy_words(line: str) -> list[str]:
    """The words haproxy reads in one config line, once it has removed the quotes and
    decoded the escapes (\\xNN, \\t, \\", ...), so that no spelling hides a keyword.

    haproxy keeps the backslash of an escape it does not know (\\l); here it goes, so a
    rule that refuses a word refuses that spelling too.
    """
    words: list[str] = []
    word: list[str] = []
    started = squote = dquote = False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "'" and not dquote:
            squote, started = not squote, True
        elif c == '"' and not squote:
            dquote, started = not dquote, True
        elif c == "\\" and not squote and i + 1 < len(line):
            following = line[i + 1]
            hex_digits = line[i + 2 : i + 4]
            if following == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", hex_digits):
                word.append(chr(int(hex_digits, 16)))
                i += 2
            else:
                word.append(_HAPROXY_ESCAPES.get(following, following))
            started = True
            i += 2
            continue
        elif c in " \t" and not squote and not dquote:
            if started:
                words.append("".join(word))
                word, started = [], False
        else:
            word.append(c)
            started = True
        i += 1
    if started:
        words.append("".join(word))
    return words


def _env_reference(line: str) -> bool:
    """Whether haproxy would substitute an environment variable (inside double quotes)."""
    in_double = in_single = False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and not in_single:
            i += 2
            continue
        if c == '"' and not in_single:
            in_double = not in_double
        elif c == "'" and not in_double:
            in_single = not in_single
        elif (
            c == "$"
            and in_double
            and i + 1 < len(line)
            and (line[i + 1] == "{" or line[i + 1].isalpha() or line[i + 1] == "_")
        ):
            return True
        i += 1
    return False


# What to write instead of a line that makes haproxy read a file of the proxy's disk.
_INLINE_CONTENT = "write the content inline (http-request return ... string or lf-string) instead"
_NO_CERTIFICATES = (
    "remove it: edgekit puts no certificates or keys on the proxies (for a server's CA, "
    "ca-file @system-ca uses the proxy's own CA bundle)"
)
# Keywords whose argument is a file (or a socket, a program) on the proxy, anywhere in a line.
_FILE_KEYWORDS = {
    "errorfile": _INLINE_CONTENT,
    "errorfiles": _INLINE_CONTENT,
    "crt": _NO_CERTIFICATES,
    "crt-list": _NO_CERTIFICATES,
    "ca-file": _NO_CERTIFICATES,
    "crl-file": _NO_CERTIFICATES,
    "ca-verify-file": _NO_CERTIFICATES,
    "ssl-dh-param-file": _NO_CERTIFICATES,
    "ca-base": _NO_CERTIFICATES,
    "crt-base": _NO_CERTIFICATES,
    "key-base": _NO_CERTIFICATES,
    "issuers-chain-path": _NO_CERTIFICATES,
    "lua-load": "remove it: edgekit runs no Lua on the proxies",
    "lua-load-per-thread": "remove it: edgekit runs no Lua on the proxies",
    "lua-prepend-path": "remove it: edgekit runs no Lua on the proxies",
    "load-server-state-from-file": "remove it: edgekit keeps no server-state file",
    "server-state-file-name": "remove it: edgekit keeps no server-state file",
    "server-state-file": "remove it: edgekit keeps no server-state file",
    "external-check": (
        "remove it: use health (tcp, http or https) or tcp-check / http-check lines"
    ),
}
# In http-request/-response/-error lines: the payload comes from a file.
_HTTP_FILE_WORDS = frozenset({"file", "lf-file"})
_HTTP_RULES = frozenset({"http-request", "http-response", "http-error", "http-after-response"})
_PATTERN_FILE = (
    "list the patterns in the line itself, e.g. acl admins src 10.0.0.0/8 192.168.0.0/16"
)
_MAP_HINT = (
    "write the values inline, one rule per entry, e.g. "
    "http-request set-var(txn.pool) str(blue) if { path_beg /blue }"
)
# map(FILE), map_str(FILE), ... and the actions that edit a map or an ACL file.
_MAP_CONVERTER = re.compile(r"(?<![A-Za-z0-9_.-])(map(?:_[a-z0-9_]+)?)\(", re.I)
_FILE_ACTION = re.compile(r"(?<![A-Za-z0-9_.])((?:set|del|add|clear)-(?:map|acl))\(", re.I)
_JWT_VERIFY = re.compile(r"jwt_verify\(\s*([^,)]*)", re.I)
_ENV_FETCH = re.compile(r"(?<![A-Za-z0-9_.])env\(", re.I)
# A server at a path (a Unix socket) instead of an address.
_SOCKET_PREFIXES = ("/", "unix@", "abns@", "fd@", "sockpair@", "uxst@", "uxdg@")


def _file_reference(words: list[str]) -> tuple[str, str] | None:
    """(what, what to write instead) when a line makes haproxy read a file of the proxy's
    disk (as root, at `haproxy -c` already, which prints the first line it cannot parse)."""
    lowered = [w.lower() for w in words]
    for i, word in enumerate(lowered):
        system_ca = lowered[i + 1 : i + 2] == ["@system-ca"]  # the CA bundle, no path
        if word in _FILE_KEYWORDS and not (word == "ca-file" and system_ca):
            return word, _FILE_KEYWORDS[word]
        if word == "-f":
            return "-f", _PATTERN_FILE
    if lowered[0] in _HTTP_RULES:
        hit = next((w for w in lowered[1:] if w in _HTTP_FILE_WORDS), None)
        if hit:
            return hit, _INLINE_CONTENT
    if lowered[0] == "filter" and "config" in lowered[2:]:
        return (
            f"filter {lowered[1]} ... config",
            "remove the filter: edgekit puts no filter configuration on the proxies",
        )
    if lowered[0] in ("server", "default-server", "server-template"):
        sock = next((w for w in words[1:] if w.lower().startswith(_SOCKET_PREFIXES)), None)
        if sock:
            return sock, "write the server's IP address and port, e.g. 10.10.0.130:8080"
    text = " ".join(words)
    match = _MAP_CONVERTER.search(text) or _FILE_ACTION.search(text)
    if match:
        return f"{match.group(1)}(...)", _MAP_HINT
    jwt = _JWT_VERIFY.search(text)
    if jwt and not jwt.group(1).strip().strip("\"'").upper().startswith("HS"):
        return "jwt_verify(...)", (
            "verify with an HS256, HS384 or HS512 secret, or on the backend: edgekit puts "
            "no certificates on the proxies"
        )
    return None


@strings_only
def haproxy_option(value: str) -> str:
    """One raw line for a service's backend section: it must stay inside that section."""
    bad = next((c for c in value if not c.isprintable()), None)
    if bad is not None:
        raise ValueError(
            f"holds {char_name(bad)}: write one haproxy line per list item, with spaces"
        )
    if not value.strip():
        raise ValueError("an empty line: remove the item")
    if "#" in value:
        raise ValueError(
            "'#' starts a comment in haproxy.cfg and would cut the line short: remove it"
        )
    if len(value) > limits.MAX_OPTION_CHARS:
        raise ValueError(
            f"longer than {limits.MAX_OPTION_CHARS} characters: haproxy refuses such lines; "
            "split it into several lines"
        )
    if len(value.split()) > limits.MAX_OPTION_WORDS:
        raise ValueError(
            f"more than {limits.MAX_OPTION_WORDS} words: haproxy refuses such lines; split "
            "it into several lines"
        )
    words = haproxy_words(value)
    if not words:
        raise ValueError("an empty line: remove the item")
    hidden = next((c for w in words for c in w if not c.isprintable()), None)
    if hidden is not None:
        raise ValueError(
            f"an escape (such as \\x0a or \\t) makes {char_name(hidden)}: write printable text only"
        )
    word = words[0]
    if word.lower() in SECTION_KEYWORDS:
        raise ValueError(
            f"'{word}' opens a new haproxy section: the lines after it would "
            "leave the service's backend. Write backend keywords only (e.g. "
            "'option tcp-check', 'timeout queue 30s'), or add a service"
        )
    if word.startswith("."):
        raise ValueError(
            f"'{word}' is a haproxy conditional or diagnostic directive "
            "(.if, .endif, ...), which can hide the rest of the config: write "
            "backend keywords only"
        )
    if word.lower() in REFUSED_KEYWORDS:
        raise ValueError(
            f"'{word}' would serve haproxy's stats page on the service, "
            "without the stats password: use the stats section instead"
        )
    reference = _file_reference(words)
    if reference is not None:
        what, instead = reference
        if what.lower().startswith(_SOCKET_PREFIXES):
            raise ValueError(
                f"'{what}' is a socket on the proxy itself: the service would let its "
                f"clients reach it; {instead}"
            )
        raise ValueError(
            f"'{what}' reads a file of the proxy's disk (haproxy reads its "
            "configuration as root, and haproxy -c prints the first line it cannot "
            f"parse): {instead}"
        )
    if _env_reference(value):
        raise ValueError(
            "'$' inside double quotes makes haproxy insert an environment "
            "variable, such as the stats password: write the value itself"
        )
    if any(_ENV_FETCH.search(w) for w in words):
        raise ValueError(
            "the env() fetch makes haproxy insert an environment variable, such as "
            "the stats password (EDGEKIT_STATS_PASSWORD), into what it sends: write "
            "the value itself"
        )
    return value
