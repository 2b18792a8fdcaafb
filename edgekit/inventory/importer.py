"""`edgekit import`: an existing haproxy.cfg read into a commented edge.yaml. Pure: text in,
the inventory's YAML text and notes out (the CLI reads and writes the files).

haproxy.cfg is read the way haproxy reads it: sections start at a section keyword
whatever the indentation, `#` outside quotes starts a comment, quotes and escapes are
removed (fields.haproxy_words). What edgekit has a key for maps to it; lines valid in a
backend that edgekit has no key for go to the service's haproxy_options when edgekit's
own validation takes them; everything else is "not imported", with its line.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from edgekit.errors import InputError
from edgekit.inventory import fields, limits
from edgekit.inventory.checks import COMMON_PASSWORDS, check_inventory, check_password
from edgekit.inventory.haproxy_cfg import (
    ANY_ADDRESS,
    DIRECTIVES,
    PROXIES,
    CfgLine,
    Section,
    endpoint,
    endpoints,
    parse_config,
)
from edgekit.inventory.model import NAME_RE, HaproxyOption, Health, Inventory

PLACEHOLDER = "REPLACE-ME"
STATS_ENV = "EDGEKIT_STATS_PASSWORD"
DEFAULT_PREFIX = 24


def _keys(text: str) -> frozenset[str]:
    """A set of haproxy keywords (or keyword pairs), written as one comma-separated text."""
    return frozenset(k.strip() for k in text.split(","))


_OPTION = TypeAdapter(HaproxyOption)
_SERVICE_ORDER = (
    "port",
    "balance",
    "timeout",
    "proxy_protocol",
    "health",
    "check",
    "haproxy_options",
)
_NAME = re.compile(NAME_RE)
# A proxy's timeouts that a service's `timeout` (client, server and tunnel at once) covers.
_SERVICE_TIMEOUTS = ("client", "server", "tunnel")
# Lines edgekit's haproxy.cfg has already (global, defaults, the TCP proxies).
_IMPLIED = _keys(
    "log, chroot, pidfile, user, group, daemon, stats socket, stats timeout, mode tcp, "
    "option tcplog, option dontlognull, option redispatch, master-worker"
)
# Only HTTP-mode proxies read these; edgekit's services forward TCP.
_HTTP_ONLY = _keys(
    "http-request, http-response, http-after-response, http-reuse, option forwardfor, "
    "option http-server-close, option httplog, option http-keep-alive, option httpclose, "
    "option http-buffer-request, cookie, compression, redirect, capture, timeout "
    "http-request, timeout http-keep-alive, unique-id-format, unique-id-header"
)
# Keywords a backend section takes (haproxy's keyword matrix) that edgekit has no key for.
_BACKEND_KEYWORDS = _keys(
    "acl, option, tcp-check, http-check, tcp-request, tcp-response, timeout, stick-table, "
    "stick, hash-type, hash-balance-factor, fullconn, retry-on, use-server, "
    "force-persist, ignore-persist, persist, source, max-keep-alive-queue, description, "
    "retries, errorfile, errorfiles, filter, external-check"
)
# Server options that take one argument.
_SERVER_ARGS = _keys(
    "weight, inter, fastinter, downinter, fall, rise, maxconn, minconn, maxqueue, cookie, "
    "port, addr, resolvers, init-addr, resolve-prefer, verify, sni, check-sni, slowstart, "
    "id, on-error, on-marked-down, on-marked-up, error-limit, observe, alpn, check-alpn, "
    "proto, source, track, pool-max-conn, pool-purge-delay, agent-port, agent-inter, "
    "agent-send, ssl-min-ver, ssl-max-ver, ca-file, crt, ciphers"
)


@dataclass(frozen=True)
class Note:
    line: int | None
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "message": self.message}


@dataclass
class ImportResult:
    """The inventory (its data and its YAML text) and what the import has to say."""

    data: dict[str, Any]
    yaml_text: str
    notes: list[Note]
    not_imported: list[Note]
    placeholders: bool
    sections: list[Section]


# --- mapping -------------------------------------------------------------------------


def _name(text: str, fallback: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name if _NAME.match(name) else fallback


def _duration(value: str) -> str:
    """A haproxy time as edgekit writes it: a bare number is milliseconds."""
    return f"{value}ms" if value.isdigit() else value


def _ms(value: str) -> float:
    match = re.fullmatch(r"([0-9]+)(us|ms|s|m|h|d)?", value)
    if not match:
        return 0
    unit = {"us": 0.001, "ms": 1, "s": 1e3, "m": 6e4, "h": 3.6e6, "d": 8.64e7}
    return int(match.group(1)) * unit[match.group(2) or "ms"]


def _valid_duration(value: str) -> bool:
    try:
        fields.duration(value)
    except ValueError:
        return False
    return True


class _Importer:
    def __init__(self, sections: list[Section], name: str) -> None:
        self.sections = sections
        self.name = name
        self.notes: list[Note] = []
        self.skipped: list[Note] = []
        self.comments: dict[tuple[str | int, ...], str] = {}
        self.backends: dict[str, list[dict[str, Any]]] = {}
        self.services: list[dict[str, Any]] = []
        self.bind_addresses: set[str] = set()
        self.http_proxies = False
        self.imported: dict[str, tuple[str, dict[str, Any]]] = {}  # backend -> name, keys
        self.listens: dict[int, int] = {}  # imported listen port -> its bind line

    def note(self, line: int | None, message: str) -> None:
        self.notes.append(Note(line, message))

    def skip(self, line: CfgLine | int | None, message: str) -> None:
        number = line.number if isinstance(line, CfgLine) else line
        text = f"'{line.text}': " if isinstance(line, CfgLine) else ""
        self.skipped.append(Note(number, f"{text}{message}"))

    def renamed(self, line: CfgLine | int, name: str, fallback: str) -> str:
        """`name` as edgekit takes names (lowercase a-z, 0-9, '-'), with a note if changed."""
        new = _name(name, fallback)
        if new != name:
            number = line.number if isinstance(line, CfgLine) else line
            self.note(number, f"'{name}' is named {new} (edgekit's names are a-z, 0-9 and '-')")
        return new

    def implied(self, section: Section, lines: list[CfgLine]) -> None:
        if lines:
            shown = ", ".join(dict.fromkeys(ln.key() for ln in lines))
            self.note(
                lines[0].number,
                f"{section.kind} {section.name}".strip()
                + f": edgekit's haproxy.cfg has these already: {shown}",
            )

    # - global and defaults -

    def global_section(self, section: Section, data: dict[str, Any]) -> None:
        implied = []
        for ln in section.lines:
            if ln.words[0] == "maxconn" and len(ln.words) == 2 and ln.words[1].isdigit():
                if 1 <= int(ln.words[1]) <= limits.MAX_MAXCONN:
                    data.setdefault("haproxy", {})["maxconn"] = int(ln.words[1])
                    self.comments[("haproxy", "maxconn")] = f"{self.name}:{ln.number}"
                else:
                    self.skip(ln, f"edgekit takes maxconn 1..{limits.MAX_MAXCONN}")
            elif ln.words[0] in _IMPLIED or ln.key() in _IMPLIED:
                implied.append(ln)
            else:
                self.skip(ln, "a global setting edgekit has no key for")
        self.implied(section, implied)

    def defaults_section(self, section: Section, data: dict[str, Any], http_used: bool) -> None:
        implied = []
        keys = {
            "connect": "connect_timeout",
            "client": "client_timeout",
            "server": "server_timeout",
        }
        for ln in section.lines:
            kind = ln.words[1] if ln.words[0] == "timeout" and len(ln.words) > 2 else None
            if kind in keys:
                value = _duration(ln.words[2])
                if not _valid_duration(value):
                    self.skip(ln, "not a duration edgekit takes")
                    continue
                data.setdefault("haproxy", {})[keys[kind]] = value
                self.comments[("haproxy", keys[kind])] = f"{self.name}:{ln.number}" + (
                    " (a bare number: milliseconds)" if value != ln.words[2] else ""
                )
            elif kind == "tunnel" or ln.words[0] in ("balance", "default-server", "mode"):
                continue  # read by each proxy that uses these defaults
            elif ln.words[0] in _IMPLIED or ln.key() in _IMPLIED:
                implied.append(ln)
            elif ln.words[0] in _HTTP_ONLY or ln.key() in _HTTP_ONLY:
                if http_used:
                    self.skip(ln, "HTTP mode only: edgekit forwards TCP")
                else:
                    self.note(ln.number, f"'{ln.text}': HTTP mode only; no imported proxy used it")
            else:
                self.skip(ln, "a default edgekit has no key for")
        self.implied(section, implied)

    # - the stats page -

    def stats(self, section: Section, data: dict[str, Any]) -> None:
        stats: dict[str, Any] = {}
        implied = []
        for ln in section.lines:
            words = ln.words
            if words[0] == "bind" and len(words) > 1 and endpoint(words[1]):
                stats["port"] = endpoint(words[1])[1]  # type: ignore[index]
                self.comments[("stats", "port")] = f"{self.name}:{ln.number}"
            elif ln.key() == "stats uri" and len(words) == 3:
                stats["uri"] = words[2]
                self.comments[("stats", "uri")] = f"{self.name}:{ln.number}"
            elif ln.key() == "stats auth" and len(words) == 3:
                self.stats_auth(ln)
            elif ln.key() in (
                "stats enable",
                "stats refresh",
                "stats realm",
                "stats hide-version",
                "stats show-legends",
                "mode http",
                "option httplog",
            ) or (words[0] in _IMPLIED or ln.key() in _IMPLIED):
                implied.append(ln)
            elif "prometheus-exporter" in words:
                self.note(ln.number, "edgekit's stats page serves Prometheus /metrics already")
            else:
                self.skip(ln, "edgekit's stats page has no key for it")
        self.implied(section, implied)
        stats["user"] = "admin"
        stats["password_env"] = STATS_ENV
        self.comments[("stats", "password_env")] = (
            "export the NEW password here; the old one is never copied"
        )
        data["stats"] = {**data.get("stats", {}), **stats}

    def stats_auth(self, ln: CfgLine) -> None:
        user, _, password = ln.words[2].partition(":")
        # Neither half of the old credentials is copied: the new page gets new ones.
        self.comments[("stats", "user")] = "REVIEW: the old page's user and password are not copied"
        never = (
            "edgekit never copies the old user or password (edge.yaml is read by whoever "
            f"reviews it): choose a user and export a new strong password in {STATS_ENV} "
            "(openssl rand -base64 18)"
        )
        if password.lower() in COMMON_PASSWORDS or password.lower() == user.lower():
            self.comments[("stats",)] = (
                "WARNING: the old stats page's password was a well-known default; set a new one"
            )
            self.note(
                ln.number,
                f"WARNING: the old stats page's password is a well-known default "
                f"({user}:{password}): anyone who reached the page could log in (and with "
                f"`stats admin`, take servers out). {never}",
            )
        elif check_password(password, user, "stats") is not None:
            self.note(ln.number, f"WARNING: the old stats password is weak. {never}")
        else:
            self.note(ln.number, f"the old stats password is not copied: {never}")

    # - services -

    def binds(self, section: Section) -> list[tuple[int, CfgLine]]:
        ports: list[tuple[int, CfgLine]] = []
        for ln in section.find("bind"):
            specs = ln.words[1].split(",") if len(ln.words) > 1 else []
            for spec in specs:
                found = endpoint(spec)
                if found is None or "$" in found[0] or "/" in found[0]:
                    self.skip(ln, f"'{spec}' is not ADDRESS:PORT with one port")
                    continue
                host, port = found
                self.bind_addresses.add("*" if host in ANY_ADDRESS else host)
                ports.append((port, ln))
            extra = ln.words[2:]
            if "ssl" in extra:
                self.skip(
                    ln,
                    "WARNING: haproxy terminated TLS here; edgekit forwards TCP, so the "
                    "clients' TLS now reaches the servers: terminate TLS on them (the "
                    "ingress controller) or keep this service off the pair",
                )
            elif extra:
                self.skip(ln, f"bind options {' '.join(extra)} are not imported")
        return ports

    def backend_of(self, section: Section) -> Section | None:
        if section.kind == "listen":
            return section
        chosen: Section | None = None
        for ln in section.lines:
            target = ln.words[1] if len(ln.words) > 1 else ""
            if ln.words[0] == "default_backend" or (
                ln.words[0] == "use_backend" and len(ln.words) == 2
            ):
                chosen = self.find_backend(target) or chosen
                if chosen is None:
                    self.skip(ln, f"no backend {target} in the file")
            elif ln.words[0] == "use_backend":
                self.skip(
                    ln,
                    "a use_backend with a condition: edgekit maps one frontend to one "
                    "backend (its default_backend); add a service on its own port for it",
                )
        return chosen

    def find_backend(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.kind == "backend" and s.name == name), None)

    def proxy(self, section: Section, taken: set[str]) -> None:
        backend = self.backend_of(section)
        ports = self.binds(section)
        if section.mode == "http" or (backend and backend.mode == "http"):
            self.http_proxies = True
            self.note(
                section.number,
                f"WARNING: {section.kind} {section.name} is mode http: edgekit forwards "
                "TCP, so its ports and servers are imported, but HTTP rules, headers "
                "and HTTP logging are not",
            )
        if backend is None:
            self.skip(section.number, f"{section.kind} {section.name}: no backend to forward to")
            return
        if not ports:
            self.skip(section.number, f"{section.kind} {section.name}: no port to listen on")
            return
        if backend.name not in self.imported:  # a backend two frontends use: read once
            servers, backend_svc = self.backend(backend, ports[0][0])
            if not servers:
                self.skip(backend.number, f"backend {backend.name}: no server imported")
                return
            backend_name = self.renamed(
                backend.number, backend.name, f"backend{len(self.backends) + 1}"
            )
            self.backends[backend_name] = servers
            self.imported[backend.name] = (backend_name, backend_svc)
        backend_name, backend_svc = self.imported[backend.name]
        svc = dict(backend_svc)
        frontend_lines = [] if section.kind == "listen" else section.lines
        self.frontend_lines(section, frontend_lines, svc)
        base = self.renamed(section.number, section.name, f"service{len(self.services) + 1}")
        for port, ln in ports:
            if port in self.listens:
                self.skip(
                    ln,
                    f"port {port} is imported already (line {self.listens[port]}): edgekit "
                    "binds each port once, on every VIP",
                )
                continue
            self.listens[port] = ln.number
            name = base if base not in taken and base != "stats" else f"{base}-{port}"
            taken.add(name)
            entry = {"name": name, "listen": port, "backend": backend_name}
            entry.update(sorted(svc.items(), key=lambda kv: _SERVICE_ORDER.index(kv[0])))
            self.comments[("services", len(self.services))] = f"{self.name}:{ln.number}"
            self.services.append(entry)

    def frontend_lines(self, section: Section, lines: list[CfgLine], svc: dict[str, Any]) -> None:
        implied = []
        for ln in lines:
            key = ln.key()
            if ln.words[0] in ("bind", "default_backend", "use_backend"):
                continue
            if ln.words[0] == "timeout" and len(ln.words) == 3 and ln.words[1] == "client":
                self.timeout(svc, ln)
            elif key == "mode http":
                continue  # the mode http warning says it
            elif ln.words[0] == "log" or key in _IMPLIED:
                implied.append(ln)
            elif ln.words[0] in _HTTP_ONLY or key in _HTTP_ONLY:
                self.skip(ln, "HTTP mode only: edgekit forwards TCP")
            else:
                self.skip(ln, "a frontend line edgekit has no key for")
        self.implied(section, implied)

    def timeout(self, svc: dict[str, Any], ln: CfgLine) -> None:
        value = _duration(ln.words[2])
        if not _valid_duration(value):
            self.skip(ln, "not a duration edgekit takes")
            return
        if _ms(value) >= _ms(svc.get("timeout", "0ms")):
            if svc.get("timeout") not in (None, value):
                self.note(ln.number, f"the service's timeout is the longest given: {value}")
            svc["timeout"] = value

    def backend(self, section: Section, listen: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The servers and the service keys a backend (or listen) section gives."""
        svc: dict[str, Any] = {}
        options: list[tuple[str, int]] = []
        defaults = section.defaults.lines if section.defaults else []
        server_lines = [ln for ln in section.lines if ln.words[0] == "server"]
        base = [
            ln.words[1:] for ln in [*defaults, *section.lines] if ln.words[0] == "default-server"
        ]
        health = self.health(section)
        checks: list[dict[str, Any]] = []
        servers = [
            s
            for s in (
                self.server(ln, [w for b in base for w in b], svc, checks) for ln in server_lines
            )
            if s
        ]
        if health["type"]:
            svc["health"] = health["model"]
        self.check_settings(section, checks, svc)
        names: set[str] = set()
        for s in servers:
            name = s["name"]
            s["name"] = next(
                n for n in (name, *(f"{name}-{i}" for i in range(2, 1000))) if n not in names
            )
            names.add(s["name"])
        implied = []
        for ln in [*(ln for ln in defaults if ln.words[0] == "balance"), *section.lines]:
            word, key = ln.words[0], ln.key()
            if word in ("server", "default-server", "bind"):
                continue
            if word == "stats":
                if ln.key() == "stats auth" and len(ln.words) == 3:
                    self.stats_auth(ln)  # the loud line about a default password
                self.skip(
                    ln,
                    "a stats page on a service: edgekit serves its stats page apart, on "
                    "each proxy's own address with a password (stats:)",
                )
            elif word == "balance":
                if ln.words[1:] and ln.words[1] in ("roundrobin", "leastconn", "source"):
                    svc["balance"] = ln.words[1]
                elif ln in section.lines:
                    self.skip(ln, "edgekit balances roundrobin, leastconn or source")
            elif word == "timeout" and len(ln.words) == 3 and ln.words[1] in _SERVICE_TIMEOUTS:
                self.timeout(svc, ln)
            elif key in ("option httpchk",) or (word == "http-check" and ln in health["lines"]):
                continue
            elif key == "mode http":
                continue  # the mode http warning says it
            elif word == "log" or key in _IMPLIED:
                implied.append(ln)
            elif word in _HTTP_ONLY or key in _HTTP_ONLY:
                self.skip(ln, "HTTP mode only: edgekit forwards TCP")
            elif word in _BACKEND_KEYWORDS or word in ("http-check",):
                self.option(ln, options)
            elif word in ("default_backend", "use_backend") and section.kind == "listen":
                self.skip(ln, "edgekit maps one listen section to its own servers")
            else:
                self.skip(ln, f"not a backend line edgekit can carry ({section.kind})")
        self.implied(section, implied)
        if section.defaults:
            tunnel = [ln for ln in section.defaults.lines if ln.key() == "timeout tunnel"]
            if tunnel and "timeout" not in svc and len(tunnel[-1].words) == 3:
                self.timeout(svc, tunnel[-1])
        if options:
            svc["haproxy_options"] = options
        ports = Counter(s.get("port", listen) for s in servers)
        svc["port"] = ports.most_common(1)[0][0] if ports else listen
        for s in servers:
            if s.get("port", svc["port"]) == svc["port"]:
                s.pop("port", None)
        return servers, svc

    def option(self, ln: CfgLine, options: list[tuple[str, int]]) -> None:
        try:
            _OPTION.validate_python(ln.text)
        except ValidationError as exc:
            reason = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
            self.skip(ln, f"edgekit refuses it in haproxy_options: {reason}")
            return
        options.append((ln.text, ln.number))

    def health(self, section: Section) -> dict[str, Any]:
        """The HTTP check of a backend (option httpchk, http-check send/expect)."""
        found: dict[str, Any] = {"type": None, "lines": [], "model": {}}
        model: dict[str, Any] = {}
        ssl = any("check-ssl" in ln.words for ln in section.find("server"))
        for ln in section.lines:
            w = ln.words
            if ln.key() == "option httpchk":
                found["type"] = "http"
                uri = [x for x in w[2:] if x.startswith("/")]
                if uri:
                    model["path"] = uri[0]
            elif ln.key() == "http-check send" and "uri" in w:
                model["path"] = w[w.index("uri") + 1] if w.index("uri") + 1 < len(w) else "/"
                if "hdr" in w and w[w.index("hdr") + 1 :][:1] == ["Host"]:
                    model["host"] = w[w.index("hdr") + 2]
                found["lines"].append(ln)
            elif ln.key(3) == "http-check expect status" and len(w) == 4 and w[3].isdigit():
                model["expect_status"] = int(w[3])
                found["lines"].append(ln)
            elif ln.key(3) == "http-check connect ssl" and len(w) == 3:
                ssl = True
                found["lines"].append(ln)
        if found["type"]:
            model = {"type": "https" if ssl else "http", **model}
            try:
                Health.model_validate(model)
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in first["loc"])
                self.skip(
                    section.number,
                    f"{section.kind} {section.name}: its HTTP check ({where}: {first['msg']})",
                )
                found["type"] = None
            found["model"] = model
        elif ssl:
            self.note(
                section.number,
                f"{section.kind} {section.name}: check-ssl without an HTTP check: edgekit's "
                "tcp health check connects without TLS (health: {type: https} checks over "
                "TLS with an HTTP request)",
            )
        return found

    def server(
        self,
        ln: CfgLine,
        base: list[str],
        svc: dict[str, Any],
        checks: list[dict[str, Any]],
    ) -> dict[str, Any] | None:
        words = ln.words
        if len(words) < 3:
            self.skip(ln, "a server needs a name and an address")
            return None
        found = endpoint(words[2])
        address, port = found if found else (words[2], None)
        try:
            fields.server_address(address)
            ok = fields.HOST_RE.match(address) is not None
        except ValueError:
            ok = False
        if not ok:
            self.skip(ln, f"'{words[2]}' is not an IPv4 address or host name with a port")
            return None
        server: dict[str, Any] = {"name": self.renamed(ln, words[1], f"server{len(checks) + 1}")}
        server["address"] = address
        if port is not None:
            server["port"] = port
        opts = [*base, *words[3:]]
        check: dict[str, Any] = {"line": ln.number, "checked": False, "name": server["name"]}
        dropped: list[str] = []
        i = 0
        while i < len(opts):
            opt = opts[i]
            arg = opts[i + 1] if i + 1 < len(opts) and opt in _SERVER_ARGS else None
            i += 2 if opt in _SERVER_ARGS else 1
            if opt == "check":
                check["checked"] = True
            elif opt == "backup":
                server["backup"] = True
            elif opt == "weight" and arg and arg.isdigit() and int(arg) <= 256:
                server["weight"] = int(arg)
            elif opt in ("inter", "fall", "rise") and arg:
                check[opt] = arg
            elif opt in ("send-proxy-v2", "send-proxy"):
                svc["proxy_protocol"] = "v2" if opt.endswith("v2") else "v1"
            elif (opt, arg) == ("verify", "none") or opt in ("check-ssl", "check-send-proxy"):
                continue  # edgekit's check line carries them (https health, proxy_protocol)
            elif opt in ("init-addr", "resolvers", "resolve-prefer"):
                continue  # edgekit resolves host names when haproxy starts
            else:
                dropped.append(opt if arg is None else f"{opt} {arg}")
        if dropped:
            self.skip(ln, f"server options not imported: {', '.join(dropped)}")
        checks.append(check)
        return server

    def check_settings(
        self, section: Section, checks: list[dict[str, Any]], svc: dict[str, Any]
    ) -> None:
        check: dict[str, Any] = {}
        for key in ("inter", "fall", "rise"):
            values = Counter(c[key] for c in checks if key in c)
            if not values:
                continue
            value = values.most_common(1)[0][0]
            if len(values) > 1:
                self.note(
                    checks[0]["line"],
                    f"backend {section.name}: servers differ in {key}; edgekit uses one for "
                    f"all: {value}",
                )
            if key == "inter" and _valid_duration(_duration(value)):
                check[key] = _duration(value)
            elif key != "inter" and value.isdigit() and 1 <= int(value) <= 100:
                check[key] = int(value)
            else:
                self.skip(checks[0]["line"], f"server option {key} {value}: out of edgekit's range")
        if check:
            svc["check"] = check
        unchecked = [c for c in checks if not c["checked"]]
        if unchecked:
            kind = svc.get("health", {}).get("type", "tcp")
            self.note(
                unchecked[0]["line"],
                f"{section.kind} {section.name}: servers without `check` now get health "
                f"checks ({kind}, every {check.get('inter', '2s')}): "
                + ", ".join(f"{c['name']} (line {c['line']})" for c in unchecked),
            )

    # - the whole file -

    def run(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        proxies = [s for s in self.sections if s.kind in ("frontend", "listen") and not s.is_stats]
        used = {
            ln.words[1]
            for s in proxies
            for ln in s.find("default_backend", "use_backend")
            if len(ln.words) > 1
        }
        taken: set[str] = set()
        for section in proxies:
            self.proxy(section, taken)
        for section in self.sections:
            if section.kind == "global":
                self.global_section(section, data)
            elif section.kind == "defaults":
                self.defaults_section(section, data, self.http_proxies)
            elif section.is_stats:
                self.stats(section, data)
            elif section.kind == "backend" and section.name not in used:
                self.skip(section.number, f"backend {section.name}: no frontend uses it")
            elif section.kind == DIRECTIVES:
                for ln in section.lines:
                    self.skip(ln, "a conditional directive: edgekit writes its own")
            elif section.kind not in PROXIES:
                self.skip(section.number, f"a {section.kind} section: edgekit has none")
        if "stats" not in data:
            data["stats"] = {"user": "admin", "password_env": STATS_ENV}
            self.note(
                None,
                "the old config had no stats page; edgekit serves one on each proxy's own "
                f"address: export its password in {STATS_ENV}",
            )
        port = data["stats"].get("port", 8404)
        if port in self.listens:
            free = next(p for p in range(8404, 65536) if p not in self.listens)
            data["stats"]["port"] = free
            self.comments[("stats", "port")] = f"{port} is a service's port here"
            self.note(
                self.listens[port],
                f"the stats page moves to port {free}: a service listens on {port}",
            )
        data["backends"] = self.backends
        data["services"] = self.services
        return data


# --- the inventory -------------------------------------------------------------------


def _vip(importer: _Importer, vip: str | None) -> tuple[str, str]:
    if vip:
        return vip, "--vip"
    if len(importer.bind_addresses) == 1 and "*" not in importer.bind_addresses:
        address = next(iter(importer.bind_addresses))
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            pass
        else:
            importer.note(
                None,
                f"the VIP is the address the services bound, {address}, with the prefix "
                f"/{DEFAULT_PREFIX} assumed: write the segment's own prefix if it differs",
            )
            return (
                f"{address}/{DEFAULT_PREFIX}",
                f"the services' bind address (/{DEFAULT_PREFIX} assumed)",
            )
    why = (
        "the services bind every address"
        if importer.bind_addresses == {"*"}
        else "the services do not all bind one address"
    )
    importer.note(None, f"no VIP: {why}; give --vip ADDR/PREFIX or fill the placeholder")
    return PLACEHOLDER, f"{PLACEHOLDER}: the VIP with its prefix, e.g. 10.10.0.100/24"


def _check_vip_flag(vip: str) -> None:
    try:
        ipaddress.IPv4Interface(vip)
    except ValueError:
        ok = False
    else:
        ok = "/" in vip
    if not ok:
        raise InputError(
            f"--vip: {vip!r} is not an IPv4 address with its prefix", hint="--vip 10.10.0.100/24"
        )


def import_config(
    text: str,
    name: str,
    *,
    peers: list[dict[str, str]] | None = None,
    vip: str | None = None,
    cluster: str = "edge",
) -> ImportResult:
    """haproxy.cfg's text -> the inventory, its YAML and the notes. Raises InputError on
    what is not a haproxy.cfg (see parse_config)."""
    if vip is not None:
        _check_vip_flag(vip)
    sections = parse_config(text, name)
    importer = _Importer(sections, name)
    body = importer.run()
    vip_address, vip_comment = _vip(importer, vip)
    placeholders = vip_address == PLACEHOLDER or not peers
    if not peers:
        peers = [{"name": f"proxy{i}", "address": PLACEHOLDER} for i in (1, 2)]
        importer.note(None, "no --peers: the peers' addresses are placeholders to fill")
    data: dict[str, Any] = {
        "cluster": cluster,
        "vrrp": {"interface": "eth0"},
        "vips": [{"address": vip_address, "vrid": 51}],
        "peers": peers,
        "ssh": {"user": "root", "port": 22},
        **body,
    }
    importer.comments[("vips",)] = vip_comment
    if placeholders:
        importer.note(
            None,
            f"the inventory has {PLACEHOLDER} placeholders: it does not validate until "
            "they are filled",
        )
    yaml_text = _emit(data, importer.comments, name)

    def by_line(n: Note) -> int:
        return n.line if n.line is not None else 1 << 30

    notes = sorted(importer.notes, key=by_line)
    skipped = sorted(importer.skipped, key=by_line)
    return ImportResult(data, yaml_text, notes, skipped, placeholders, sections)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    plain = re.fullmatch(
        r"[A-Za-z/][A-Za-z0-9_./-]*|[0-9]+(\.[0-9]+){3}(/[0-9]+)?|[0-9]+(us|ms|s|m|h|d)", text
    )
    is_number = re.fullmatch(r"[0-9]*\.?[0-9]*", text)
    reserved = text.lower() in ("yes", "no", "on", "off", "true", "false", "null", "y", "n")
    if plain and not is_number and not reserved:
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _flow(mapping: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in mapping.items()) + "}"


def _comment(comments: dict[tuple[str | int, ...], str], *key: str | int) -> str:
    text = comments.get(tuple(key))
    return f"   # {text}" if text else ""


def _emit(data: dict[str, Any], comments: dict[tuple[str | int, ...], str], name: str) -> str:
    """The inventory as commented YAML, in edge.example.yaml's order and style."""
    out = [
        "# edge.yaml written by `edgekit import` from",
        f"#   {name}",
        "# Review every line (REVIEW, REPLACE-ME), then: edgekit validate -i edge.yaml",
        "# The comments name the haproxy.cfg line each value came from.",
        f"cluster: {data['cluster']}          # REVIEW: a lowercase name for this edge",
        "",
        "vrrp:",
        "  interface: eth0        # REVIEW: the NIC that carries the VIPs",
        "",
        "vips:",
        f"  - address: {_scalar(data['vips'][0]['address'])}{_comment(comments, 'vips')}",
        "    vrid: 51             # REVIEW: unique among the VRRP routers on the segment",
        "",
        "peers:",
    ]
    for peer in data["peers"]:
        note = "   # REPLACE-ME: the proxy's address" if peer["address"] == PLACEHOLDER else ""
        out += [
            f"  - name: {_scalar(peer['name'])}",
            f"    address: {_scalar(peer['address'])}{note}",
        ]
    out += ["", "ssh:", "  user: root             # REVIEW: who deploys", "  port: 22", ""]
    if "haproxy" in data:
        out.append("haproxy:")
        for key, value in data["haproxy"].items():
            out.append(f"  {key}: {_scalar(value)}{_comment(comments, 'haproxy', key)}")
        out.append("")
    out.append("backends:")
    for backend, servers in data["backends"].items():
        out.append(f"  {backend}:")
        out += [f"    - {_flow(s)}" for s in servers]
    out += ["", "services:"]
    for i, svc in enumerate(data["services"]):
        out.append(f"  - name: {svc['name']}{_comment(comments, 'services', i)}")
        for key, value in svc.items():
            if key == "name":
                continue
            if key == "haproxy_options":
                out.append("    haproxy_options:")
                out += [f"      - {_scalar(t)}   # {name}:{n}" for t, n in value]
            elif isinstance(value, dict):
                out.append(f"    {key}: {_flow(value)}")
            else:
                out.append(f"    {key}: {_scalar(value)}")
    out.append("")
    if ("stats",) in comments:
        out.append(f"# {comments[('stats',)]}")
    out.append("stats:")
    for key, value in data["stats"].items():
        out.append(f"  {key}: {_scalar(value)}{_comment(comments, 'stats', key)}")
    return "\n".join(out) + "\n"


def model_data(data: dict[str, Any]) -> dict[str, Any]:
    """The inventory as the model takes it (haproxy_options without their line numbers)."""
    services = [
        {
            **s,
            **(
                {"haproxy_options": [t for t, _ in s["haproxy_options"]]}
                if "haproxy_options" in s
                else {}
            ),
        }
        for s in data["services"]
    ]
    return {**data, "services": services}


# --- equivalence ---------------------------------------------------------------------


def equivalence(result: ImportResult, name: str) -> dict[str, Any]:
    """Render the imported inventory and compare its listen ports and servers with the old
    config's, both read by parse_config: what one has and the other lacks."""
    from edgekit import render
    from edgekit.inventory.load import Loaded, Secrets

    if result.placeholders:
        return {"checked": False, "reason": f"the inventory has {PLACEHOLDER} placeholders"}
    try:
        inv = Inventory.model_validate(model_data(result.data))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return {
            "checked": False,
            "reason": f"the inventory does not validate: {where}: {first['msg']}",
        }
    problem = next(iter(check_inventory(inv)), None)
    if problem is not None:
        return {
            "checked": False,
            "reason": f"the inventory does not validate: {problem.path}: {problem.message}",
        }
    loaded = Loaded(inv, Secrets(stats_password="unused-for-comparison"), Path(name), "")
    files = next(iter(render.render_all(loaded).values()))
    cfg = next(f.content for f in files if f.path == render.HAPROXY_CFG)
    old_ports, old_servers = endpoints(result.sections)
    new_ports, new_servers = endpoints(parse_config(cfg, render.HAPROXY_CFG))
    if not any(s.is_stats for s in result.sections):
        new_ports.discard(inv.stats.port)  # edgekit's own stats page, which the old lacked
    # A server without a port (the client's port) in the old config matches its address.
    new_addresses = {s.rpartition(":")[0] for s in new_servers}
    missing = {
        "listen_ports": sorted(old_ports - new_ports),
        "servers": sorted(
            s for s in old_servers - new_servers if ":" in s or s not in new_addresses
        ),
    }
    bare = {s for s in old_servers if ":" not in s}
    extra = {
        "listen_ports": sorted(new_ports - old_ports),
        "servers": sorted(s for s in new_servers - old_servers if s.rpartition(":")[0] not in bare),
    }
    same = not any(missing.values()) and not any(extra.values())
    return {"checked": True, "equivalent": same, "missing_in_new": missing, "only_in_new": extra}
