"""The Vagrant lab back end: drives vagrant/Vagrantfile and writes its inventory.

The parsers and `build_inventory` are pure; the functions at the bottom run
`vagrant` in the lab directory (the checkout's vagrant/, or EDGEKIT_VAGRANT_DIR).
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgekit.errors import InputError, OperationError, PrerequisiteError
from edgekit.lab.base import Capability, HostStatus, Role, inventory_ssh_argv, marker_line
from edgekit.remote.ssh import ssh_config_hosts

PROVIDER = "vagrant"
DEFAULT_SUBNET = "192.168.56"
MAX_PROXIES = 9  # proxies sit at .11-.19, below the nodes at .21-.23
NODES = ("node1", "node2", "node3")
STATE_DIR = ".edgekit"
KEY_COMMENT = "edgekit-vagrant-lab"


# --- pure: parsing vagrant's output --------------------------------------------


@dataclass(frozen=True)
class SshHost:
    """One `Host` block of `vagrant ssh-config`."""

    name: str
    hostname: str
    user: str
    port: int = 22
    identity_files: tuple[str, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)  # other keys, lower-cased

    @property
    def identity_file(self) -> str | None:
        return self.identity_files[0] if self.identity_files else None


@dataclass(frozen=True)
class MachineState:
    """One machine of `vagrant status --machine-readable`."""

    name: str
    state: str  # vagrant's id: running, shutoff, poweroff, not_created, ...
    provider: str = ""
    short: str = ""  # state-human-short, e.g. "not created"

    @property
    def up(self) -> bool:
        return self.state == "running"


def parse_ssh_config(text: str) -> dict[str, SshHost]:
    """Parse `vagrant ssh-config` output (one or many Host blocks), with paramiko's
    ssh_config reader."""
    return {name: _ssh_host(name, options) for name, options in ssh_config_hosts(text).items()}


def _ssh_host(name: str, options: dict[str, Any]) -> SshHost:
    options = dict(options)
    if "hostname" not in options:
        raise OperationError(f"vagrant ssh-config: Host {name} has no HostName")
    port = str(options.pop("port", "22"))
    if not port.isdigit():
        raise OperationError(f"vagrant ssh-config: Host {name} has a bad Port {port!r}")
    keys = options.pop("identityfile", [])
    return SshHost(
        name=name,
        hostname=options.pop("hostname"),
        user=options.pop("user", "vagrant"),
        port=int(port),
        identity_files=tuple(keys),
        options={k: v if isinstance(v, str) else " ".join(v) for k, v in options.items()},
    )


def _unescape_machine_readable(value: str) -> str:
    return value.replace("%!(VAGRANT_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")


def parse_machine_readable_status(text: str) -> dict[str, MachineState]:
    """Parse `vagrant status --machine-readable` into machines, in vagrant's order."""
    fields: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split(",", 3)
        if len(parts) < 4 or not parts[1]:
            continue  # ui lines have no target
        _, target, kind, data = parts
        entry = fields.setdefault(target, {})
        if kind == "metadata" and data.startswith("provider,"):
            entry.setdefault("provider-name", data.split(",", 1)[1])
        else:
            entry[kind] = _unescape_machine_readable(data)
    return {
        name: MachineState(
            name=name,
            state=entry.get("state", "unknown"),
            provider=entry.get("provider-name", ""),
            short=entry.get("state-human-short", entry.get("state", "unknown")),
        )
        for name, entry in fields.items()
    }


def machine_readable_error(text: str) -> str | None:
    """The message of an `error-exit` line (with --machine-readable, errors go to stdout)."""
    for line in reversed(text.splitlines()):
        parts = line.split(",", 4)
        if len(parts) == 5 and parts[2] == "error-exit":
            return " ".join(_unescape_machine_readable(parts[4]).split())
    return None


def parse_host_key(text: str) -> str:
    """The `TYPE BASE64` of a host public key file's content (drops the comment)."""
    for line in text.splitlines():
        words = line.strip().split()
        if len(words) >= 2 and words[0].startswith(("ssh-", "ecdsa-")):
            return f"{words[0]} {words[1]}"
    raise OperationError(
        "no SSH host key in the VM's answer: is /etc/ssh/ssh_host_ed25519_key.pub there?"
    )


# --- pure: the lab's addresses and inventory ------------------------------------


def subnet_prefix(raw: str | None) -> str:
    """'192.168.56', '192.168.56.0' or '192.168.56.0/24' -> '192.168.56', as the Vagrantfile."""
    value = (raw or DEFAULT_SUBNET).strip()
    value = value.removesuffix("/24")
    octets = value.split(".")
    if len(octets) == 4 and octets[3] == "0":
        octets = octets[:3]
    if len(octets) != 3 or not all(o.isdigit() and len(o) <= 3 and int(o) <= 255 for o in octets):
        raise InputError(f"EDGEKIT_VAGRANT_SUBNET={raw!r} must look like {DEFAULT_SUBNET}")
    return ".".join(octets)


def proxy_names(peers: int) -> list[str]:
    return [f"edge{i}" for i in range(1, peers + 1)]


def lab_address(prefix: str, name: str) -> str:
    """The private-network address the Vagrantfile gives a machine: edgeN .10+N, nodeN .20+N."""
    match = re.fullmatch(r"(edge|node)(\d+)", name)
    if not match:
        raise InputError(f"{name!r} is not a machine of the Vagrant lab (edgeN or nodeN)")
    base = 10 if match.group(1) == "edge" else 20
    return f"{prefix}.{base + int(match.group(2))}"


def check_peers(peers: int) -> None:
    if not 2 <= peers <= MAX_PROXIES:
        raise InputError(f"the Vagrant lab takes 2 to {MAX_PROXIES} proxies, not {peers}")


def _retarget(address: str, old: str, new: str) -> str:
    return new + address[len(old) :] if address.startswith(old + ".") else address


def _with_subnet(inv: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Move the template's VIPs and backends to the lab's /24 (EDGEKIT_VAGRANT_SUBNET)."""
    old = ".".join(str(inv["vips"][0]["address"]).split("/")[0].split(".")[:3])
    for vip in inv.get("vips", []):
        vip["address"] = _retarget(str(vip["address"]), old, prefix)
    for servers in (inv.get("backends") or {}).values():
        for server in servers:
            server["address"] = _retarget(str(server["address"]), old, prefix)
    return inv


def _common(values: Sequence[str | None], what: str) -> str | None:
    distinct = set(values)
    if len(distinct) > 1:
        raise OperationError(
            f"vagrant ssh-config reports different {what} for the proxies: "
            f"{sorted(map(str, distinct))}"
        )
    return values[0] if values else None


def build_inventory(
    base: Mapping[str, Any],
    ssh_hosts: Mapping[str, SshHost],
    peers: int,
    *,
    subnet: str | None = None,
    identity_file: str | None = None,
    known_hosts: str | None = None,
) -> dict[str, Any]:
    """The inventory `edgekit deploy` uses against the lab's VMs.

    Peers get their private-network address (VRRP and VIP live there) and,
    where it differs, `ssh_host`/`ssh_port` from ssh-config: edgekit then
    manages a host over Vagrant's management NIC, so a failover test that
    cuts the VRRP link does not cut its own control connection.
    """
    check_peers(peers)
    inv = copy.deepcopy(dict(base))
    prefix = subnet_prefix(subnet)
    _with_subnet(inv, prefix)
    names = proxy_names(peers)
    missing = [name for name in names if name not in ssh_hosts]
    if missing:
        raise OperationError(
            f"vagrant ssh-config has no entry for {', '.join(missing)}: "
            "is it running? (vagrant status)"
        )
    hosts = [ssh_hosts[name] for name in names]
    for host in hosts:
        if "proxycommand" in host.options:
            raise OperationError(
                f"{host.name} is reached through a ProxyCommand, which edgekit does not support"
            )

    ssh = dict(inv.get("ssh") or {})
    ssh["user"] = _common([h.user for h in hosts], "users")
    ssh.setdefault("port", 22)
    key = identity_file or _common([h.identity_file for h in hosts], "keys")
    if key:
        ssh["identity_file"] = key
    if known_hosts:
        ssh["known_hosts"] = known_hosts
    inv["ssh"] = ssh

    template = {str(p.get("name")): p for p in inv.get("peers") or []}
    inv["peers"] = [
        _peer(template.get(h.name, {}), h, lab_address(prefix, h.name), ssh["port"]) for h in hosts
    ]
    _admit_management(inv, hosts, prefix)
    return inv


def _admit_management(inv: dict[str, Any], hosts: Sequence[SshHost], prefix: str) -> None:
    """edgekit reaches the VMs over Vagrant's management network, outside the private
    subnet that the firewall's admin_cidrs default to: admit that network too."""
    cidrs = [f"{prefix}.0/24"]
    for host in hosts:
        try:
            address = ipaddress.ip_address(host.hostname)
        except ValueError:
            continue  # a host name: nothing to derive; admin_cidrs can be set by hand
        # VirtualBox forwards a port on 127.0.0.1; the guest sees its NAT gateway.
        net = (
            "10.0.2.0/24"
            if address.is_loopback
            else str(ipaddress.ip_network(f"{address}/24", strict=False))
        )
        if net not in cidrs:
            cidrs.append(net)
    firewall = dict(inv.get("firewall") or {})
    firewall.setdefault("admin_cidrs", cidrs)
    inv["firewall"] = firewall


def _peer(
    template: Mapping[str, Any], host: SshHost, address: str, ssh_port: int
) -> dict[str, Any]:
    peer = {**template, "name": host.name, "address": address}
    if host.hostname != address:
        peer["ssh_host"] = host.hostname
    if host.port != ssh_port:
        peer["ssh_port"] = host.port
    return peer


def known_hosts_text(inventory: Mapping[str, Any], host_keys: Mapping[str, str]) -> str:
    """known_hosts lines for each peer, under every name edgekit may dial it by."""
    port = int(inventory["ssh"]["port"])
    lines = []
    for peer in inventory["peers"]:
        patterns = []
        for host, host_port in (
            (peer.get("ssh_host"), peer.get("ssh_port", port)),
            (peer["address"], 22),
        ):
            if host:
                patterns.append(host if host_port == 22 else f"[{host}]:{host_port}")
        lines.append(f"{','.join(dict.fromkeys(patterns))} {host_keys[peer['name']]}")
    return "\n".join(lines) + "\n"


def host_statuses(machines: Mapping[str, MachineState], prefix: str) -> list[HostStatus]:
    statuses = []
    for m in machines.values():
        role: Role = "proxy" if m.name.startswith("edge") else "backend"
        detail = f"{m.short} ({m.provider})" if m.provider else m.short
        statuses.append(HostStatus(m.name, role, lab_address(prefix, m.name), m.up, detail))
    return statuses


# --- running vagrant ------------------------------------------------------------


def _lab_dir() -> Path:
    configured = os.environ.get("EDGEKIT_VAGRANT_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "vagrant"


def vagrant_dir() -> Path:
    """The folder holding the lab's Vagrantfile."""
    path = _lab_dir()
    if not (path / "Vagrantfile").is_file():
        raise PrerequisiteError(
            f"no Vagrantfile in {path}: "
            "set EDGEKIT_VAGRANT_DIR to the vagrant/ folder of an edgekit checkout"
        )
    return path


def state_dir() -> Path:
    return vagrant_dir() / STATE_DIR


def inventory_path() -> Path:
    """Where `up` writes the generated inventory (never raises: callers compare paths)."""
    return _lab_dir() / STATE_DIR / "edge.yaml"


def _lab_subnet() -> str:
    return subnet_prefix(os.environ.get("EDGEKIT_VAGRANT_SUBNET"))


def _failure_line(proc: subprocess.CompletedProcess[str]) -> str:
    # vagrant prints an error as a wrapped paragraph: its last paragraph, as
    # one line, says what went wrong where the very last line often does not.
    error = machine_readable_error(proc.stdout or "")
    if error:
        return error
    paragraphs = [p for p in re.split(r"\n\s*\n", (proc.stderr or "").strip()) if p.strip()]
    text = " ".join(paragraphs[-1].split()) if paragraphs else "(no error output)"
    return text if len(text) <= 300 else text[:297] + "..."


def _vagrant(
    *args: str, env: Mapping[str, str] | None = None, stream: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run vagrant in the lab folder; raise OperationError with its own message on failure."""
    program = shutil.which("vagrant")
    if program is None:
        raise PrerequisiteError("vagrant not found: apt-get install vagrant")
    full_env = {**os.environ, **(env or {})}
    # The version check is a network call: on a machine without internet it only stalls.
    full_env.setdefault("VAGRANT_CHECKPOINT_DISABLE", "1")
    proc = subprocess.run(
        [program, *args],
        cwd=vagrant_dir(),
        env=full_env,
        text=True,
        # `up` takes minutes: show its progress on our stderr (fd 2), as stdout is for data.
        stdout=2 if stream else subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if stream and proc.stderr:
        sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise OperationError(
            f"vagrant {args[0]} failed (exit {proc.returncode}): {_failure_line(proc)}"
        )
    return proc


def machines() -> dict[str, MachineState]:
    return parse_machine_readable_status(_vagrant("status", "--machine-readable").stdout)


def status() -> list[HostStatus]:
    return host_statuses(machines(), _lab_subnet())


def _ensure_lab_key(directory: Path) -> Path:
    """The lab's own SSH key: one identity for every proxy, unlike Vagrant's per-VM keys."""
    key = directory / "id_ed25519"
    if not key.exists():
        if shutil.which("ssh-keygen") is None:
            raise PrerequisiteError("ssh-keygen not found: apt-get install openssh-client")
        made = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", KEY_COMMENT, "-f", str(key)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if made.returncode != 0:
            raise OperationError(f"ssh-keygen could not write {key}: {made.stderr.strip()}")
    return key


def _authorize_and_read_host_key(name: str, public_key: str) -> str:
    """Add the lab key to the VM's vagrant user; return the VM's ed25519 host key.

    Read over Vagrant's own SSH session (which trusts the VM on first use):
    the lab has no other source of truth for a fresh VM's host key.
    """
    quoted = shlex.quote(public_key)
    command = (
        "set -e; umask 077; mkdir -p ~/.ssh; touch ~/.ssh/authorized_keys; "
        f"grep -qxF {quoted} ~/.ssh/authorized_keys"
        f" || printf '%s\\n' {quoted} >> ~/.ssh/authorized_keys; "
        "cat /etc/ssh/ssh_host_ed25519_key.pub"
    )
    return parse_host_key(_vagrant("ssh", name, "-c", command).stdout)


def _check_no_extra_proxies(peers: int) -> None:
    extra = [
        m.name
        for m in machines().values()
        if m.name.startswith("edge")
        and m.name not in proxy_names(peers)
        and m.state != "not_created"
    ]
    if extra:
        raise InputError(
            f"the Vagrant lab already has {', '.join(extra)}: run "
            f"`edgekit lab down --provider vagrant` before changing the proxy count to {peers}"
        )


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def up(peers: int = 2) -> Path:
    """Start the lab's VMs, then write the inventory for them and return its path."""
    check_peers(peers)
    _check_no_extra_proxies(peers)
    _vagrant("up", env={"EDGEKIT_PROXIES": str(peers)}, stream=True)

    directory = state_dir()
    directory.mkdir(mode=0o700, exist_ok=True)
    key = _ensure_lab_key(directory)
    names = proxy_names(peers)
    ssh_hosts = parse_ssh_config(_vagrant("ssh-config", *names).stdout)
    base = yaml.safe_load((vagrant_dir() / "edge.yaml").read_text())
    known_hosts = directory / "known_hosts"
    inventory = build_inventory(
        base,
        ssh_hosts,
        peers,
        subnet=os.environ.get("EDGEKIT_VAGRANT_SUBNET"),
        identity_file=str(key),
        known_hosts=str(known_hosts),
    )
    public_key = key.with_suffix(".pub").read_text().strip()
    host_keys = {name: _authorize_and_read_host_key(name, public_key) for name in names}
    _write(known_hosts, known_hosts_text(inventory, host_keys))

    path = inventory_path()
    identity = uuid.uuid4().hex
    _write(directory / "lab-id", identity + "\n")
    header = marker_line(PROVIDER, identity)
    header += "# Written by `edgekit lab up --provider vagrant` from vagrant/edge.yaml.\n"
    _write(path, header + yaml.safe_dump(inventory, sort_keys=False))
    return path


def down() -> None:
    """Destroy every VM of the lab and forget its generated inventory and keys."""
    _vagrant("destroy", "-f", stream=True)
    directory = state_dir()
    if directory.is_dir():
        shutil.rmtree(directory)


def _check_machine(host: str) -> None:
    lab_address(DEFAULT_SUBNET, host)  # raises InputError for a name the lab does not have


def halt_force(host: str) -> None:
    """Power the VM off at once, like pulling its plug (failover-test's host-down)."""
    _check_machine(host)
    _vagrant("halt", "--force", host)


def start(host: str) -> None:
    """Boot a halted VM again, without re-running its provisioners."""
    _check_machine(host)
    _vagrant("up", "--no-provision", host, stream=True)


# --- the provider ----------------------------------------------------------------

LAB_NETWORK = "edgekit-lab"  # the private network's libvirt name (vagrant/Vagrantfile)


def lab_id() -> str | None:
    try:
        return (state_dir() / "lab-id").read_text().strip() or None
    except OSError:
        return None


def domain_name(machine: str) -> str:
    """vagrant-libvirt's domain for a machine: the project directory's name, `_`, the
    machine (its default_prefix, which the Vagrantfile leaves alone)."""
    return f"{vagrant_dir().name}_{machine}"


def lab_interface(domiflist: str, network: str = LAB_NETWORK) -> str:
    """The MAC of the domain's NIC on `network`, from `virsh domiflist DOMAIN`."""
    for line in domiflist.splitlines():
        words = line.split()
        # Interface  Type  Source  Model  MAC
        if len(words) >= 5 and words[1] == "network" and words[2] == network:
            return words[4]
    raise OperationError(f"no interface on libvirt network {network} in `virsh domiflist`")


def set_link(machine: str, *, up: bool) -> None:
    """Cut or restore a VM's lab NIC from the host side, like unplugging its cable."""
    _check_machine(machine)
    virsh = shutil.which("virsh")
    if virsh is None:
        raise PrerequisiteError("link control of Vagrant VMs needs virsh (libvirt-clients)")
    domain = domain_name(machine)
    listing = subprocess.run([virsh, "domiflist", domain], capture_output=True, text=True)
    if listing.returncode != 0:
        raise OperationError(
            f"{machine}: virsh domiflist {domain} failed: {listing.stderr.strip()}"
        )
    mac = lab_interface(listing.stdout)
    done = subprocess.run(
        [virsh, "domif-setlink", domain, mac, "up" if up else "down"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise OperationError(f"{machine}: virsh domif-setlink failed: {done.stderr.strip()}")


class VagrantLab:
    """The Vagrant lab (real VMs) as a LabProvider."""

    name = PROVIDER

    def up(self, *, peers: int, backends: int, subnet: str | None) -> Path:
        if backends != 3 or subnet is not None:
            raise InputError(
                "the Vagrant lab always has 3 nodes; its subnet is EDGEKIT_VAGRANT_SUBNET",
                hint="drop --backends/--subnet",
            )
        return up(peers=peers)

    def down(self) -> None:
        down()

    def status(self) -> list[HostStatus]:
        return status()

    def inventory(self) -> Path:
        path = inventory_path()
        if not path.is_file():
            raise OperationError(
                f"{path} does not exist: no Vagrant lab is running",
                hint="edgekit lab up --provider vagrant",
            )
        return path

    def lab_id(self) -> str | None:
        return lab_id()

    def ssh_argv(self, host: str, command: list[str]) -> list[str]:
        inventory = yaml.safe_load(self.inventory().read_text())
        if any(p.get("name") == host for p in inventory.get("peers", [])):
            return inventory_ssh_argv(inventory, host, command)
        _check_machine(host)  # a node: only vagrant reaches it
        return [
            "env",
            f"VAGRANT_CWD={vagrant_dir()}",
            "vagrant",
            "ssh",
            host,
            *(["-c", shlex.join(command)] if command else []),
        ]

    def capabilities(self) -> frozenset[Capability]:
        link = {Capability.LINK} if _provider_name() == "libvirt" else set()
        return frozenset({Capability.POWER, *link})

    def power_off(self, host: str) -> None:
        halt_force(host)

    def power_on(self, host: str) -> None:
        start(host)

    def link_down(self, host: str) -> None:
        set_link(host, up=False)

    def link_up(self, host: str) -> None:
        set_link(host, up=True)


def _provider_name() -> str:
    return os.environ.get("VAGRANT_DEFAULT_PROVIDER") or "libvirt"
