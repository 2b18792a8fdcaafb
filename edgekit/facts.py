"""Facts about a host: one command that prints sections, and a pure parser of its output."""

from __future__ import annotations

import base64
import ipaddress
import json
import shlex
from dataclasses import dataclass, field

PACKAGES = ("haproxy", "keepalived")
UNITS = ("haproxy", "keepalived")


@dataclass(frozen=True)
class LiveFile:
    path: str
    content: str | None  # None: the file does not exist
    mode: int | None = None
    owner: str | None = None


@dataclass
class HostFacts:
    os_id: str = ""
    os_version: str = ""
    packages: dict[str, bool] = field(default_factory=dict)  # installed?
    addresses: dict[str, list[ipaddress.IPv4Interface]] = field(default_factory=dict)
    files: dict[str, LiveFile] = field(default_factory=dict)
    units: dict[str, tuple[str, str]] = field(default_factory=dict)  # active, enabled
    haproxy_pids: list[int] = field(default_factory=list)
    haproxy_master: int | None = None
    vrrp_states: dict[str, str] = field(default_factory=dict)  # VI_51 -> MASTER

    def holds(self, vip: ipaddress.IPv4Interface) -> bool:
        return any(a.ip == vip.ip for addrs in self.addresses.values() for a in addrs)

    def interface_addresses(self, interface: str) -> list[ipaddress.IPv4Interface]:
        return self.addresses.get(interface, [])


def gather_command(paths: list[str]) -> str:
    """A POSIX shell script (run with sudo) that prints every fact in marked sections."""
    quoted = " ".join(shlex.quote(p) for p in paths)
    units = " ".join(UNITS)
    return f"""
echo '@os'; ( . /etc/os-release 2>/dev/null; echo "${{ID:-unknown}} ${{VERSION_ID:-}}" )
echo '@packages'; dpkg-query -W -f='${{Package}} ${{db:Status-Status}}\\n' {" ".join(PACKAGES)} 2>/dev/null || true
echo '@addresses'; ip -j -4 addr show 2>/dev/null || echo '[]'
echo '@files'
for f in {quoted}; do
  if [ -f "$f" ]; then printf '%s %s %s\\n' "$f" "$(stat -c '%a %U:%G' "$f")" "$(base64 -w0 < "$f")"
  else printf '%s -\\n' "$f"; fi
done
echo '@units'
for u in {units}; do printf '%s %s %s\\n' "$u" "$(systemctl is-active "$u" 2>/dev/null)" "$(systemctl is-enabled "$u" 2>/dev/null)"; done
echo '@haproxy'; cat /run/haproxy.pid 2>/dev/null || echo '-'; pgrep -x haproxy | tr '\\n' ' '; echo
echo '@vrrp'
for f in /run/edgekit/*.state; do [ -f "$f" ] && printf '%s %s\\n' "$(basename "$f" .state)" "$(cat "$f")"; done
echo '@end'
"""


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@") and " " not in line:
            current = line[1:]
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def parse_addresses(data: str) -> dict[str, list[ipaddress.IPv4Interface]]:
    result: dict[str, list[ipaddress.IPv4Interface]] = {}
    for link in json.loads(data or "[]"):
        addrs = result.setdefault(link.get("ifname", "?"), [])
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                addrs.append(ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}"))
    return result


def parse_facts(text: str) -> HostFacts:
    s = _sections(text)
    facts = HostFacts()
    os_line = (s.get("os") or [""])[0].split()
    facts.os_id = os_line[0] if os_line else ""
    facts.os_version = os_line[1] if len(os_line) > 1 else ""
    for line in s.get("packages", []):
        name, _, status = line.partition(" ")
        facts.packages[name] = status.strip() == "installed"
    for name in PACKAGES:
        facts.packages.setdefault(name, False)
    facts.addresses = parse_addresses("\n".join(s.get("addresses", [])))
    for line in s.get("files", []):
        parts = line.split(" ")
        if len(parts) == 2 and parts[1] == "-":
            facts.files[parts[0]] = LiveFile(parts[0], None)
        elif len(parts) >= 3:
            content = base64.b64decode(parts[3]).decode() if len(parts) > 3 else ""
            facts.files[parts[0]] = LiveFile(parts[0], content, int(parts[1], 8), parts[2])
    for line in s.get("units", []):
        parts = line.split()
        if parts:
            facts.units[parts[0]] = (parts[1] if len(parts) > 1 else "unknown",
                                     parts[2] if len(parts) > 2 else "unknown")
    hap = s.get("haproxy", [])
    if hap and hap[0].strip().isdigit():
        facts.haproxy_master = int(hap[0].strip())
    if len(hap) > 1:
        facts.haproxy_pids = sorted(int(p) for p in hap[1].split() if p.isdigit())
    for line in s.get("vrrp", []):
        name, _, state = line.partition(" ")
        if name:
            facts.vrrp_states[name] = state.strip()
    return facts
