"""Single-value rules whose message must say which rule was broken and what to write.

Each function raises ValueError with that message (pydantic reports it against the
key) and returns the value unchanged when it is sound.
"""

from __future__ import annotations

import ipaddress
import re

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


def duration(value: object) -> str:
    """A haproxy time: whole number and unit, at least 1 ms, at most haproxy's maximum."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration; {_DURATION_HELP}")
    if not isinstance(value, str):
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        raise ValueError(
            f"a bare number is milliseconds to haproxy, not seconds: write the "
            f"unit, e.g. {shown}s or {shown}ms"
        )
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


def interface_name(value: object) -> object:
    """A Linux interface name, by the kernel's rules (dev_valid_name), and one that
    keepalived.conf can carry unquoted."""
    if not isinstance(value, str):
        return value  # pydantic reports the type
    if not value:
        raise ValueError("an interface name cannot be empty: write the NIC's name, e.g. eth1")
    if value in (".", ".."):
        raise ValueError(
            f"the kernel refuses '{value}' as an interface name: write the NIC's name, e.g. eth1"
        )
    if len(value.encode()) > limits.MAX_IFNAME:
        raise ValueError(
            f"an interface name has at most {limits.MAX_IFNAME} characters "
            f"(the kernel's limit; this one has {len(value.encode())})"
        )
    for char, why in (("/", "'/'"), (":", "':' (alias labels such as eth0:1 are not interfaces)")):
        if char in value:
            raise ValueError(f"the kernel does not allow {why} in an interface name")
    if any(c.isspace() for c in value):
        raise ValueError("the kernel does not allow whitespace in an interface name")
    if not value.isascii() or not value.isprintable():
        raise ValueError(
            "an interface name must be printable ASCII (letters, digits, '-', '_', '.', '@')"
        )
    if value.startswith("-"):
        raise ValueError(
            "an interface name cannot start with '-' (ip and other tools would read an option)"
        )
    bad = sorted({c for c in value if c in "{}#!\"'\\;$`"})
    if bad:
        raise ValueError(
            f"{' '.join(bad)} in an interface name would be syntax in "
            "keepalived.conf: use letters, digits, '-', '_', '.' and '@'"
        )
    return value


def ssh_user(value: object) -> object:
    if not isinstance(value, str):
        return value
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
        raise ValueError("a user name cannot contain control characters")
    if value.startswith("-"):
        raise ValueError("a user name cannot start with '-' (ssh would read an option)")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}\$?", value):
        raise ValueError("a user name takes letters, digits, '_', '.', '-' and '@' (at most 64)")
    return value


def ssh_host(value: object) -> object:
    """Where SSH reaches a peer: an IP address or a host name."""
    if not isinstance(value, str):
        return value
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
        raise ValueError("must be a host name (letters, digits, '-', '.') or an IP address")
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
                "zeros) nor a host name"
            )
        return value
    first = int(match.group(1))
    if first == 0 or first >= 224:  # 0.0.0.0/8, multicast, reserved, broadcast
        raise ValueError(
            "not an address a server can have (0.0.0.0/8, multicast, "
            "broadcast or reserved): write the server's own address"
        )
    return value


def _first_word(line: str) -> str:
    word = line.split(None, 1)[0] if line.split() else ""
    return re.sub(r"[\"'\\]", "", word)  # haproxy unquotes before it reads the keyword


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


def _reads_a_file(line: str) -> bool:
    """`return ... file PATH` / `lf-file PATH` (http-request, http-response, http-error)."""
    words = [w.lower() for w in line.split()]
    returns = words[:1] == ["http-error"] or words[1:2] == ["return"]
    return returns and any(w in ("file", "lf-file") for w in words[2:])


def haproxy_option(value: object) -> object:
    """One raw line for a service's backend section: it must stay inside that section."""
    if not isinstance(value, str):
        return value
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
            f"longer than {limits.MAX_OPTION_CHARS} characters: haproxy refuses such lines"
        )
    if len(value.split()) > limits.MAX_OPTION_WORDS:
        raise ValueError(f"more than {limits.MAX_OPTION_WORDS} words: haproxy refuses such lines")
    word = _first_word(value)
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
    if word.lower() == "errorfile" or _reads_a_file(value):
        raise ValueError(
            "reads a file on the proxy into the response (any file haproxy can "
            "read as root, such as /etc/shadow): write the content inline "
            "(http-request return ... string or lf-string) instead"
        )
    if word.lower() in REFUSED_KEYWORDS:
        raise ValueError(
            f"'{word}' would serve haproxy's stats page on the service, "
            "without the stats password: use the stats section instead"
        )
    if _env_reference(value):
        raise ValueError(
            "'$' inside double quotes makes haproxy insert an environment "
            "variable, such as the stats password: write the value itself"
        )
    return value
