"""The inventory model: the shape of edge.yaml, checked by pydantic.

Only shape and single-field rules live here; rules that relate several
fields (duplicates, subnets, references) live in checks.py so each failure
can name its exact key path.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from edgekit.inventory import fields, limits

NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# No spaces, '#' (haproxy's comment), quotes or backslashes: these land unquoted in haproxy.cfg.
PATH_RE = r"^/[^\s#\"'\\]*$"
STATS_USER_RE = r"^[A-Za-z0-9_.-]+$"
HOST_RE = fields.HOST_RE.pattern
HOST_HEADER_RE = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?$"
ENV_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"

# strict: YAML's `true` must not pass as port 1 or VRID 1, nor 1 or 'yes' as true.
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
Bool = Annotated[bool, Field(strict=True)]
Name = Annotated[str, Field(pattern=NAME_RE)]
IfName = Annotated[str, BeforeValidator(fields.interface_name)]
EnvName = Annotated[str, Field(pattern=ENV_RE)]
# haproxy reads a bare number as milliseconds: a unit is required.
Duration = Annotated[str, BeforeValidator(fields.duration)]
HaproxyOption = Annotated[str, BeforeValidator(fields.haproxy_option)]
# Free text (file paths, references): any character but controls and invisible ones.
Text = Annotated[str, AfterValidator(fields.printable_text)]
UrlPath = Annotated[
    str,
    Field(pattern=PATH_RE),
    AfterValidator(fields.printable_text),
    AfterValidator(fields.url_path),
]


def _ip_text(value: object, example: str = "10.10.0.11") -> object:
    """An IPv4 address as text: the mistakes pydantic would only call invalid, named."""
    # pydantic would turn an integer into an address (12 -> 0.0.0.12).
    if not isinstance(value, str):
        raise ValueError(f"expected an IPv4 address such as {example}")
    if value != value.strip() and value.strip():
        raise ValueError(f"spaces around the address: write {value.strip()} without them")
    if ":" in value:
        address, _, prefix = value.partition("/")
        try:
            mapped = ipaddress.IPv6Address(address).ipv4_mapped
        except ValueError:
            mapped = None
        if mapped is None:
            raise ValueError(
                f"the VIPs and peers are IPv4, not IPv6: write an IPv4 address such as {example}"
            )
        suggestion = str(mapped)
        if prefix.isdigit() and 96 <= int(prefix) <= 128:
            suggestion += f"/{int(prefix) - 96}"
        raise ValueError(
            f"an IPv4-mapped IPv6 address: the VIPs and peers are IPv4; write {suggestion}"
        )
    return value


def _cidr(value: object) -> object:
    """A network in CIDR notation; a bare address is its /32 (or /128)."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a network such as 10.10.0.0/24 or an address such as 192.0.2.7")
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(
            "expected a network such as 10.10.0.0/24 or an address such as 192.0.2.7"
        ) from None
    raise ValueError(
        f"host bits set: did you mean {loose} (or {value.split('/')[0]}/"
        f"{loose.max_prefixlen} for one address)?"
    )


def _cidr4(value: object) -> object:
    net = _cidr(value)
    if isinstance(net, ipaddress.IPv6Network):
        raise ValueError("the VIPs are IPv4: an IPv6 network would never match")
    return net


Cidr = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_cidr)]
Cidr4 = Annotated[ipaddress.IPv4Network, BeforeValidator(_cidr4)]


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Vrrp(Strict):
    interface: IfName = "eth0"
    # 0.25 s with VRRPv3 moves the VIP within a second on a hard failure and
    # did not flap under full CPU load in the lab (shared/notes/lab-facts.md).
    advert_int: Annotated[float, Field(strict=True, gt=0, le=40)] = 0.25
    version: Literal[2, 3] = 3
    unicast: Bool = True
    preempt: Bool = False
    # VRRPv2 only (VRRPv3 has no authentication); read from the environment or a file.
    auth_pass_env: EnvName | None = None
    auth_pass_file: Text | None = None
    garp_refresh: Annotated[int, Field(strict=True, ge=0, le=3600)] = 60


class Vip(Strict):
    address: ipaddress.IPv4Interface
    vrid: Annotated[int, Field(strict=True)]
    preferred: Name | None = None
    interface: IfName | None = None

    @field_validator("address", mode="before")
    @classmethod
    def _needs_prefix(cls, value: object) -> object:
        _ip_text(value, "10.10.0.100/24")
        if isinstance(value, str) and "/" not in value:
            raise ValueError("a VIP needs its subnet prefix, e.g. 10.10.0.100/24")
        return value


class Peer(Strict):
    name: Name
    address: ipaddress.IPv4Address
    interface: IfName | None = None
    # Where SSH reaches the host when that differs from its VRRP address
    # (e.g. Vagrant's management network or a forwarded port).
    ssh_host: Annotated[str, BeforeValidator(fields.ssh_host)] | None = None
    ssh_port: Port | None = None

    _address = field_validator("address", mode="before")(_ip_text)


class Ssh(Strict):
    user: Annotated[str, BeforeValidator(fields.ssh_user)] = "root"
    port: Port = 22
    identity_file: Text | None = None
    known_hosts: Text | None = None
    connect_timeout: Annotated[float, Field(strict=True, gt=0, le=300)] = 10


class Server(Strict):
    name: Name
    # An IPv4 address or a host name (resolved by the proxies, not here).
    address: Annotated[str, Field(pattern=HOST_RE), AfterValidator(fields.server_address)]
    port: Port | None = None
    weight: Annotated[int, Field(strict=True, ge=0, le=256)] | None = None
    backup: Bool = False


class Health(Strict):
    type: Literal["tcp", "http", "https"] = "tcp"
    path: UrlPath = "/healthz"
    expect_status: Annotated[int, Field(strict=True, ge=100, le=599)] = 200
    host: str | None = Field(default=None, pattern=HOST_HEADER_RE)


class Check(Strict):
    inter: Duration = "2s"
    fall: Annotated[int, Field(strict=True, ge=1, le=100)] = 3
    rise: Annotated[int, Field(strict=True, ge=1, le=100)] = 2


class Service(Strict):
    name: Name
    listen: Port
    backend: Text
    port: Port
    balance: Literal["roundrobin", "leastconn", "source"] = "roundrobin"
    sticky: Bool = False
    proxy_protocol: Literal["v1", "v2"] | None = None
    timeout: Duration | None = None
    health: Health = Health()
    check: Check = Check()
    # How failover-test probes it: an HTTP GET or a bare TCP connect (default: HTTP on
    # port 80 and 8080, TCP elsewhere).
    probe: Literal["http", "tcp"] | None = None
    # Extra haproxy lines appended to the service's backend section. Each must stay in
    # that section (fields.haproxy_option); `haproxy -c` checks the rest.
    haproxy_options: list[HaproxyOption] = []
    # Who may connect to the service on the VIPs (the firewall); unset: anyone.
    client_cidrs: list[Cidr4] | None = None


class Stats(Strict):
    port: Port = 8404
    user: str = Field(default="admin", pattern=STATS_USER_RE)
    password_env: EnvName | None = None
    password_file: Text | None = None
    uri: UrlPath = "/stats"


class Haproxy(Strict):
    # Unset, haproxy derives it from the open-files limit it is given, which fits
    # every host; a fixed value above what the limit allows stops haproxy from starting.
    # A set value also raises haproxy's LimitNOFILE to match (render.nofile_limit).
    maxconn: Annotated[int, Field(strict=True, ge=1, le=limits.MAX_MAXCONN)] | None = None
    connect_timeout: Duration = "5s"
    client_timeout: Duration = "1m"
    server_timeout: Duration = "1m"
    peers_port: Port = 10000


class Firewall(Strict):
    """nftables on the proxies (table inet edgekit). On unless `enabled: false`."""

    enabled: Bool = True
    # SSH and the stats page. Unset: the VIPs' subnets (where the peers live), never
    # "anywhere" unless written as 0.0.0.0/0.
    admin_cidrs: list[Cidr] | None = None
    # Extra sources the nodes' NodePort fence admits besides the proxies (e.g. the
    # cluster's node and pod networks, which reach the API on 6443 directly).
    node_allow_cidrs: list[Cidr] = []


class Inventory(Strict):
    cluster: Name
    vrrp: Vrrp = Vrrp()
    vips: list[Vip] = Field(min_length=1)
    peers: list[Peer]
    ssh: Ssh = Ssh()
    backends: dict[Name, list[Server]]
    services: list[Service] = Field(min_length=1)
    stats: Stats
    haproxy: Haproxy = Haproxy()
    firewall: Firewall = Firewall()
