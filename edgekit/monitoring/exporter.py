"""edgekit's VRRP exporter: runs on each proxy, served through haproxy's stats frontend.

This file is installed verbatim on the proxies (/usr/local/lib/edgekit/edgekit-exporter)
and runs there under Debian's python3: standard library only, no edgekit imports. It
listens on an abstract Unix socket (no TCP port), which haproxy's stats frontend forwards
/edgekit/metrics to, behind the stats page's password and the firewall's admin_cidrs.

What it reads, at every scrape (nothing is cached, nothing guessed):
- the records keepalived's notify script writes (STATE_DIR/<instance>.state): the VRRP
  state edgekit status reports;
- keepalived's own JSON dump (the JSON signal; /tmp/keepalived.json): effective priority
  and the become-master / release-master counters;
- `ip -j -4 addr`: which VIPs this host holds;
- /run/edgekit/haproxy-down (haproxy.service's drop-in writes it);
- /var/lib/edgekit/drained, the mark `edgekit drain` writes (keepalived tracks it);
- the deploy marks in /var/lib/edgekit (applied, pending) and the own-hash headers of
  haproxy.cfg and keepalived.conf, so config drift between peers is a query.

The parsing and formatting functions are pure; `collect` does the I/O.
"""

from __future__ import annotations

import argparse
import calendar
import ipaddress
import json
import os
import re
import signal
import socketserver
import subprocess
import sys
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

SOCKET_NAME = "edgekit-exporter"  # abstract: "\0edgekit-exporter"
METRICS_PATH = "/edgekit/metrics"
CONFIG = "/etc/edgekit/exporter.json"
KEEPALIVED_PID = "/run/keepalived.pid"
KEEPALIVED_JSON = "/tmp/keepalived.json"
JSON_WAIT_S = 1.0

# The encoding (also keepalived's own: VRRP_STATE_INIT..FAULT), plus 4 for a
# stopped keepalived.
STATES = {"INIT": 0, "BACKUP": 1, "MASTER": 2, "FAULT": 3, "STOP": 4}
_HASH = re.compile(r"sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class Instance:
    name: str  # VI_51
    vrid: int
    vip: str  # 10.10.0.100 (no prefix)
    preferred: str | None = None


@dataclass(frozen=True)
class Config:
    cluster: str
    instances: list[Instance]
    state_dir: str = "/run/edgekit"
    deploy_dir: str = "/var/lib/edgekit"
    haproxy_cfg: str = "/etc/haproxy/haproxy.cfg"
    keepalived_conf: str = "/etc/keepalived/keepalived.conf"


@dataclass
class KeepalivedInstance:
    """One vrrp_instance as keepalived's JSON dump has it."""

    state: int | None = None
    priority: int | None = None  # effective priority
    become_master: int = 0
    release_master: int = 0


@dataclass
class Sample:
    """Everything one scrape read from the host."""

    peer: str
    keepalived_up: bool = False
    records: dict[str, str] = field(default_factory=dict)  # VI_51 -> MASTER
    keepalived: dict[str, KeepalivedInstance] | None = None  # None: no dump read
    addresses: set[str] = field(default_factory=set)
    haproxy_down: str | None = None  # the file's content; None when absent
    applied: str | None = None  # "DEPLOY-ID TIME"
    pending: str | None = None  # "DEPLOY-ID UNIT..."
    drained: str | None = None  # the drain mark's content; None when absent
    haproxy_cfg_sha256: str = ""
    keepalived_conf_sha256: str = ""


def parse_config(text: str) -> Config:
    data = json.loads(text)
    instances = [
        Instance(str(i["name"]), int(i["vrid"]), str(i["vip"]), i.get("preferred"))
        for i in data["instances"]
    ]
    keys = ("state_dir", "deploy_dir", "haproxy_cfg", "keepalived_conf")
    return Config(str(data["cluster"]), instances, **{k: str(data[k]) for k in keys if k in data})


def parse_addresses(text: str) -> set[str]:
    """The IPv4 addresses in `ip -j -4 addr` output."""
    out: set[str] = set()
    for link in json.loads(text or "[]"):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet" and "local" in info:
                out.add(str(ipaddress.IPv4Address(info["local"])))
    return out


def parse_keepalived_json(text: str) -> dict[str, KeepalivedInstance]:
    """keepalived's JSON dump: a list of {"data": {...}, "stats": {...}} per instance."""
    out: dict[str, KeepalivedInstance] = {}
    for entry in json.loads(text):
        data, stats = entry.get("data", {}), entry.get("stats", {})
        name = data.get("iname")
        if not isinstance(name, str):
            continue
        prio = data.get("effective_priority", data.get("priority"))
        state = data.get("state")
        out[name] = KeepalivedInstance(
            state=state if isinstance(state, int) else None,
            priority=prio if isinstance(prio, int) else None,
            become_master=int(stats.get("become_master", 0)),
            release_master=int(stats.get("release_master", 0)),
        )
    return out


def own_hash(text: str | None) -> str:
    """The sha256 an edgekit header carries (the file's own, that hash left out)."""
    if not text:
        return ""
    for line in text.splitlines()[:5]:
        match = _HASH.search(line)
        if match:
            return match.group(1)
    return ""


def state_of(sample: Sample, instance: Instance) -> int:
    """keepalived stopped: 4; else the notify record's state (0 until there is one)."""
    if not sample.keepalived_up:
        return STATES["STOP"]
    return STATES.get(sample.records.get(instance.name, "INIT").strip().upper(), 0)


def _labels(**labels: object) -> str:
    def esc(value: object) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def _applied_time(applied: str | None) -> float | None:
    words = (applied or "").split()
    if len(words) < 2:
        return None
    try:
        return float(calendar.timegm(time.strptime(words[1], "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def format_metrics(config: Config, sample: Sample) -> str:
    """The Prometheus text exposition of one sample."""
    base = {"cluster": config.cluster, "peer": sample.peer}
    families: dict[str, tuple[str, str, list[str]]] = {}

    def add(name: str, kind: str, help_: str, value: float, **labels: object) -> None:
        family = families.setdefault(name, (kind, help_, []))
        number = int(value) if float(value).is_integer() else value
        family[2].append(f"{name}{_labels(**base, **labels)} {number}")

    for inst in config.instances:
        labels = {"vip": inst.vip, "vrid": inst.vrid, "vrrp_instance": inst.name}
        add(
            "edgekit_vrrp_state",
            "gauge",
            "VRRP state: 0 init, 1 backup, 2 master, 3 fault, 4 keepalived stopped.",
            state_of(sample, inst),
            **labels,
        )
        add(
            "edgekit_vip_held",
            "gauge",
            "1 while this peer holds the VIP (it is on one of its interfaces).",
            1 if inst.vip in sample.addresses else 0,
            **labels,
        )
        add(
            "edgekit_vip_preferred",
            "gauge",
            "1 on the VIP's preferred peer (vips[].preferred), 0 elsewhere.",
            1 if inst.preferred == sample.peer else 0,
            **labels,
        )
        ka = (sample.keepalived or {}).get(inst.name) if sample.keepalived_up else None
        if ka is not None:
            if ka.priority is not None:
                add(
                    "edgekit_vrrp_priority",
                    "gauge",
                    "The instance's effective VRRP priority, from keepalived.",
                    ka.priority,
                    **labels,
                )
            add(
                "edgekit_vrrp_transitions_total",
                "counter",
                "VRRP master transitions since keepalived started (became master plus "
                "released master), from keepalived.",
                ka.become_master + ka.release_master,
                **labels,
            )
    add("edgekit_keepalived_up", "gauge", "1 while keepalived runs.", int(sample.keepalived_up))
    add(
        "edgekit_keepalived_json_ok",
        "gauge",
        "1 when keepalived's JSON dump was read in this scrape (priority, transitions).",
        int(sample.keepalived is not None and sample.keepalived_up),
    )
    add(
        "edgekit_haproxy_up",
        "gauge",
        "0 while haproxy.service is stopped or dead (/run/edgekit/haproxy-down), else 1.",
        0 if (sample.haproxy_down or "").strip() == "1" else 1,
    )
    add(
        "edgekit_drained",
        "gauge",
        "1 while this peer is drained (edgekit drain): it takes no VIP while another peer can.",
        int(_number(sample.drained) != 0),
    )
    add(
        "edgekit_config_info",
        "gauge",
        "The sha256 headers of the installed haproxy.cfg and keepalived.conf: equal on "
        "every peer unless they drifted.",
        1,
        haproxy_cfg_sha256=sample.haproxy_cfg_sha256,
        keepalived_conf_sha256=sample.keepalived_conf_sha256,
    )
    add(
        "edgekit_deploy_pending",
        "gauge",
        "1 while a deploy that stopped before it finished left its pending mark.",
        int(sample.pending is not None),
    )
    stamp = _applied_time(sample.applied)
    if stamp is not None:
        add(
            "edgekit_config_applied_timestamp_seconds",
            "gauge",
            "When the last deploy finished on this peer (/var/lib/edgekit/applied).",
            stamp,
            deploy_id=(sample.applied or "").split()[0],
        )
    lines: list[str] = []
    for name, (kind, help_, samples) in families.items():
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *samples]
    return "\n".join(lines) + "\n"


def _number(text: str | None) -> int:
    """What keepalived reads from a tracked file: a number, 0 when absent or not one."""
    try:
        return int((text or "0").strip() or "0")
    except ValueError:
        return 0


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _keepalived_pid() -> int | None:
    text = _read(KEEPALIVED_PID)
    if not text or not text.strip().isdigit():
        return None
    pid = int(text.strip())
    return pid if Path(f"/proc/{pid}").exists() else None


_json_signal: int | None = None


def _keepalived_json(pid: int) -> dict[str, KeepalivedInstance] | None:
    """Ask keepalived for its JSON dump and read it (at most JSON_WAIT_S)."""
    global _json_signal
    if _json_signal is None:
        out = subprocess.run(
            ["keepalived", "--signum=JSON"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        if not out.isdigit():
            return None
        _json_signal = int(out)
    before = os.stat(KEEPALIVED_JSON).st_mtime_ns if os.path.exists(KEEPALIVED_JSON) else 0
    os.kill(pid, _json_signal)
    deadline = time.monotonic() + JSON_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.02)
        try:
            if os.stat(KEEPALIVED_JSON).st_mtime_ns == before:
                continue
            return parse_keepalived_json(Path(KEEPALIVED_JSON).read_text())
        except (OSError, ValueError):
            continue  # not written yet, or half written
    return None


def collect(config: Config, peer: str) -> Sample:
    sample = Sample(peer)
    pid = _keepalived_pid()
    sample.keepalived_up = pid is not None
    for inst in config.instances:
        record = _read(f"{config.state_dir}/{inst.name}.state")
        if record is not None:
            sample.records[inst.name] = record.strip()
    if pid is not None:
        try:
            sample.keepalived = _keepalived_json(pid)
        except (OSError, subprocess.SubprocessError):
            sample.keepalived = None
    ip = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, timeout=5)
    sample.addresses = parse_addresses(ip.stdout) if ip.returncode == 0 else set()
    sample.haproxy_down = _read(f"{config.state_dir}/haproxy-down")
    sample.applied = _read(f"{config.deploy_dir}/applied")
    sample.pending = _read(f"{config.deploy_dir}/pending")
    sample.drained = _read(f"{config.deploy_dir}/drained")
    sample.haproxy_cfg_sha256 = own_hash(_read(config.haproxy_cfg))
    sample.keepalived_conf_sha256 = own_hash(_read(config.keepalived_conf))
    return sample


def abstract_address(name: str) -> bytes:
    """The address haproxy's `abns@NAME` connects to: the whole of sun_path (108 bytes),
    the name after a NUL and NULs after it (Linux compares the address's full length)."""
    raw = b"\0" + name.encode()
    if len(raw) > 108:
        raise ValueError(f"abstract socket name too long: {name!r}")
    return raw.ljust(108, b"\0")


class _Handler(BaseHTTPRequestHandler):
    server_version = "edgekit-exporter"
    peer = ""
    config_path = CONFIG

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?", 1)[0] != METRICS_PATH:
            self._send(404, "not found\n")
            return
        try:
            config = parse_config(Path(self.config_path).read_text())
            body = format_metrics(config, collect(config, self.peer))
        except Exception as exc:  # one line, no traceback: a scrape error, not a crash
            self._send(500, f"edgekit-exporter: {type(exc).__name__}: {exc}\n")
            return
        self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")

    def _send(self, code: int, body: str, kind: str = "text/plain; charset=utf-8") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # haproxy's httplog already logs every request


class _Server(socketserver.UnixStreamServer):
    def server_bind(self) -> None:
        # haproxy's reload and ours overlap for a moment: wait for the old one to let go.
        for _ in range(50):
            try:
                super().server_bind()
                return
            except OSError:
                time.sleep(0.1)
        super().server_bind()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgekit-exporter")
    parser.add_argument("--peer", required=True)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--socket", default=SOCKET_NAME, help="abstract Unix socket name")
    args = parser.parse_args(argv)
    _Handler.peer = args.peer
    _Handler.config_path = args.config

    def reexec(_sig: int, _frame: object) -> None:
        # haproxy's reload reaches us as SIGHUP (ReloadPropagatedFrom): start again from
        # the installed file, so a new exporter takes effect with haproxy's reload.
        os.execv(sys.executable, [sys.executable, *sys.argv])

    signal.signal(signal.SIGHUP, reexec)
    server = _Server(abstract_address(args.socket), _Handler)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
