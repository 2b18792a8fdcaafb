"""Every rendered file depends only on what it is made of.

Each row changes one inventory key and states exactly which rendered files change on
each peer (and in the nodes' _nodes/ tree) and what deploy would then do on each host:
the reloads and restarts (edgekit.deploy.apply.service_actions) and the firewall action
(edgekit.deploy._firewall_actions). Pure: rendered with edgekit's own functions, the
"live" host is the previous render, no host and no network.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgekit import firewall, render
from edgekit.deploy import _firewall_actions
from edgekit.deploy.apply import service_actions
from edgekit.deploy.plan import HostPlan, plan_host
from edgekit.facts import UNITS, FirewallFacts, HostFacts, LiveFile, TableState
from edgekit.inventory import Loaded, load_inventory
from edgekit.render import RenderedFile

STATS_PASSWORD = "Zq8-vLm3pRt7xW"
VRRP_PASS = "k3Vp9xQ2"

HA = render.HAPROXY_CFG
KA = render.KEEPALIVED_CONF
DEF_HA = "/etc/default/haproxy"
HA_DROPIN = "/etc/systemd/system/haproxy.service.d/edgekit.conf"
FW = firewall.RULESET
FW_UNIT = firewall.UNIT_PATH
FENCE = f"/{firewall.FENCE_FILE}"
NODES_README = "/README.md"
EXPORTER_CFG = "/etc/edgekit/exporter.json"  # keepalived's instances, for the exporter

RELOAD_HA = "systemctl reload haproxy"
RESTART_HA = "systemctl restart haproxy"
RELOAD_KA = "systemctl reload keepalived"
DAEMON_RELOAD = "systemctl daemon-reload"
FW_LOAD = "firewall load"
FW_REMOVE = "firewall remove"

# The inventory from issue 2: two peers, one VIP, three services on three controllers.
BASE: dict[str, Any] = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "data" / "good" / "issue-example.yaml").read_text()
)
PEERS = ("proxy1", "proxy2")
VRRP2 = {"vrrp.version": 2, "vrrp.advert_int": 1}
VRRP2_AUTH = {**VRRP2, "vrrp.auth_pass_env": "EDGEKIT_VRRP_PASS"}

Edit = Callable[[dict[str, Any]], None]


def _walk(data: Any, key: str) -> tuple[Any, str | int]:
    """The container holding `key` ("a.b[2].c") and the last step, made on the way."""
    steps: list[str | int] = []
    for part in key.split("."):
        name, *indexes = re.split(r"\[(\d+)\]", part)
        if name:
            steps.append(name)
        steps += [int(i) for i in indexes if i]
    for step in steps[:-1]:
        data = data.setdefault(step, {}) if isinstance(step, str) else data[step]
    return data, steps[-1]


def setting(values: dict[str, Any]) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        for key, value in values.items():
            holder, last = _walk(data, key)
            holder[last] = copy.deepcopy(value)

    return edit


def appending(key: str, item: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        holder, last = _walk(data, key)
        holder[last].append(copy.deepcopy(item))

    return edit


def dropping(key: str) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        holder, last = _walk(data, key)
        del holder[last]

    return edit


@dataclass(frozen=True)
class Case:
    id: str
    edit: Edit
    files: frozenset[str]  # changed on every peer
    actions: tuple[str, ...]  # on every peer
    nodes: frozenset[str] = frozenset()  # changed in _nodes/ (applied by the nodes' operator)
    # Per peer where peers differ: replaces `files` / `actions` for that peer.
    peer_files: dict[str, frozenset[str]] = field(default_factory=dict)
    peer_actions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    both: dict[str, Any] = field(default_factory=dict)  # set before and after
    env: dict[str, str] = field(default_factory=dict)  # secrets after the change


NOTHING: set[str] = set()


def case(
    id: str,
    edit: Edit | dict[str, Any],
    files: set[str],
    actions: tuple[str, ...] = (),
    nodes: set[str] = NOTHING,
    **kw: Any,
) -> Case:
    edit = setting(edit) if isinstance(edit, dict) else edit
    return Case(id, edit, frozenset(files), actions, frozenset(nodes), **kw)


SECOND_VIP = {"address": "10.10.0.101/24", "vrid": 52}
NEW_SERVER = {"name": "corea-controller3", "address": "10.10.0.128"}

CASES = [
    # --- cluster, vrrp, vips: keepalived's ---------------------------------------------
    case(
        "cluster name (each header names it)",
        {"cluster": "other-edge"},
        {HA, KA, FW, EXPORTER_CFG},
        (FW_LOAD, RELOAD_HA, RELOAD_KA),
        nodes={FENCE, NODES_README},
    ),
    case("vrrp.advert_int", {"vrrp.advert_int": 2}, {KA}, (RELOAD_KA,)),
    case("vrrp.interface", {"vrrp.interface": "eth2"}, {KA}, (RELOAD_KA,)),
    case("vrrp.preempt", {"vrrp.preempt": True}, {KA}, (RELOAD_KA,)),
    case("vrrp.garp_refresh", {"vrrp.garp_refresh": 30}, {KA}, (RELOAD_KA,)),
    case(
        "vrrp.unicast off (the firewall answers IGMP)",
        {"vrrp.unicast": False},
        {KA, FW},
        (FW_LOAD, RELOAD_KA),
    ),
    case("vrrp.version 3 -> 2", VRRP2, {KA}, (RELOAD_KA,)),
    case(
        "vrrp auth added (version 2)",
        {"vrrp.auth_pass_env": "EDGEKIT_VRRP_PASS"},
        {KA},
        (RELOAD_KA,),
        both=VRRP2,
    ),
    case(
        "vrrp auth password rotated",
        {},
        {KA},
        (RELOAD_KA,),
        both=VRRP2_AUTH,
        env={"EDGEKIT_VRRP_PASS": "n3wPass9"},
    ),
    case(
        "vip added",
        appending("vips", SECOND_VIP),
        {HA, KA, FW, EXPORTER_CFG},
        (FW_LOAD, RELOAD_HA, RELOAD_KA),
        nodes={FENCE, NODES_README},
    ),
    case(
        "vip removed",
        dropping("vips[1]"),
        {HA, KA, FW, EXPORTER_CFG},
        (FW_LOAD, RELOAD_HA, RELOAD_KA),
        nodes={FENCE, NODES_README},
        both={"vips": [{"address": "10.10.0.100/24", "vrid": 51}, SECOND_VIP]},
    ),
    case(
        "vip preferred peer",
        {"vips[0].preferred": "proxy2"},
        {KA, EXPORTER_CFG},
        (RELOAD_KA,),
    ),
    case("vip vrid", {"vips[0].vrid": 61}, {KA, EXPORTER_CFG}, (RELOAD_KA,)),
    # --- peers ---------------------------------------------------------------------------
    case("peer ssh_host", {"peers[1].ssh_host": "proxy2.example.net"}, NOTHING),
    case(
        "peer ssh_port (the firewall opens it)",
        {"peers[1].ssh_port": 2222},
        {FW},
        (FW_LOAD,),
    ),
    case("peer interface", {"peers[1].interface": "ens19"}, {KA}, (RELOAD_KA,)),
    case(
        "peer address (that peer's environment too)",
        {"peers[1].address": "10.10.0.13"},
        {KA, FW},
        (FW_LOAD, RELOAD_KA),
        peer_files={"proxy2": frozenset({KA, FW, DEF_HA})},
        peer_actions={"proxy2": (FW_LOAD, RESTART_HA, RELOAD_KA)},
        nodes={FENCE, NODES_README},
    ),
    # --- ssh: edgekit's own connection ------------------------------------------------
    case("ssh.user", {"ssh.user": "admin"}, NOTHING),
    case("ssh.identity_file", {"ssh.identity_file": "~/.ssh/id_other"}, NOTHING),
    case("ssh.known_hosts", {"ssh.known_hosts": "~/.ssh/other_hosts"}, NOTHING),
    case("ssh.connect_timeout", {"ssh.connect_timeout": 20.0}, NOTHING),
    case("ssh.port (the firewall opens it)", {"ssh.port": 2222}, {FW}, (FW_LOAD,)),
    # --- services ------------------------------------------------------------------------
    case("service timeout", {"services[2].timeout": "2h"}, {HA}, (RELOAD_HA,)),
    case(
        "service listen port",
        {"services[0].listen": 8080},
        {HA, FW},
        (FW_LOAD, RELOAD_HA),
    ),
    case(
        "service client_cidrs",
        {"services[0].client_cidrs": ["192.168.0.0/16"]},
        {FW},
        (FW_LOAD,),
    ),
    case(
        "service backend port",
        {"services[0].port": 30081},
        {HA},
        (RELOAD_HA,),
        nodes={FENCE, NODES_README},
    ),
    case(
        "service renamed (the firewall rule's comment names it)",
        {"services[0].name": "web"},
        {HA, FW},
        (FW_LOAD, RELOAD_HA),
    ),
    case("service balance", {"services[0].balance": "leastconn"}, {HA}, (RELOAD_HA,)),
    case(
        "service sticky (the firewall opens haproxy.peers_port)",
        {"services[0].sticky": True},
        {HA, FW},
        (FW_LOAD, RELOAD_HA),
    ),
    case(
        "service haproxy_options",
        {"services[0].haproxy_options": ["option abortonclose"]},
        {HA},
        (RELOAD_HA,),
    ),
    case("service proxy_protocol", {"services[1].proxy_protocol": "v2"}, {HA}, (RELOAD_HA,)),
    case("service probe (failover-test only)", {"services[2].probe": "tcp"}, NOTHING),
    case("health check type", {"services[0].health": {"type": "http"}}, {HA}, (RELOAD_HA,)),
    case("health check path", {"services[2].health.path": "/livez"}, {HA}, (RELOAD_HA,)),
    case("check inter", {"services[0].check": {"inter": "5s"}}, {HA}, (RELOAD_HA,)),
    case("check fall", {"services[0].check": {"fall": 5}}, {HA}, (RELOAD_HA,)),
    # --- backends ------------------------------------------------------------------------
    case("backend server added", appending("backends.controllers", NEW_SERVER), {HA}, (RELOAD_HA,)),
    case("backend server removed", dropping("backends.controllers[1]"), {HA}, (RELOAD_HA,)),
    case("backend server weight", {"backends.controllers[0].weight": 50}, {HA}, (RELOAD_HA,)),
    case(
        "backend server port",
        {"backends.controllers[0].port": 31080},
        {HA},
        (RELOAD_HA,),
        nodes={FENCE, NODES_README},
    ),
    # --- stats, haproxy ------------------------------------------------------------------
    case(
        "stats password",
        {},
        {DEF_HA},
        (RESTART_HA,),
        env={"EDGEKIT_STATS_PASSWORD": "Yt7-kWq2mNs9vB"},
    ),
    case("stats port", {"stats.port": 9000}, {HA, FW}, (FW_LOAD, RELOAD_HA)),
    case("stats user", {"stats.user": "ops"}, {HA}, (RELOAD_HA,)),
    case("stats uri", {"stats.uri": "/haproxy"}, {HA}, (RELOAD_HA,)),
    case(
        "haproxy.maxconn (the unit's LimitNOFILE)",
        {"haproxy.maxconn": 20000},
        {HA, HA_DROPIN},
        (DAEMON_RELOAD, RELOAD_HA),
    ),
    case("haproxy.connect_timeout", {"haproxy.connect_timeout": "3s"}, {HA}, (RELOAD_HA,)),
    case("haproxy.client_timeout", {"haproxy.client_timeout": "2m"}, {HA}, (RELOAD_HA,)),
    case("haproxy.server_timeout", {"haproxy.server_timeout": "2m"}, {HA}, (RELOAD_HA,)),
    case("haproxy.peers_port without a sticky service", {"haproxy.peers_port": 10001}, NOTHING),
    case(
        "haproxy.peers_port with a sticky service",
        {"haproxy.peers_port": 10001},
        {HA, FW},
        (FW_LOAD, RELOAD_HA),
        both={"services[0].sticky": True},
    ),
    # --- firewall ------------------------------------------------------------------------
    case("firewall.admin_cidrs", {"firewall.admin_cidrs": ["10.10.0.0/16"]}, {FW}, (FW_LOAD,)),
    case(
        "firewall.enabled off",
        {"firewall.enabled": False},
        {FW, FW_UNIT},
        (FW_REMOVE,),
    ),
    case(
        "firewall.node_allow_cidrs (the nodes' fence only)",
        {"firewall.node_allow_cidrs": ["10.20.0.0/16"]},
        NOTHING,
        nodes={FENCE, NODES_README},
    ),
]


@pytest.fixture(autouse=True)
def _secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", STATS_PASSWORD)
    monkeypatch.setenv("EDGEKIT_VRRP_PASS", VRRP_PASS)


def load(tmp_path: Path, name: str, data: dict[str, Any]) -> Loaded:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_inventory(path)


def by_path(files: list[RenderedFile]) -> dict[str, RenderedFile]:
    return {f.path: f for f in files}


def changed(old: list[RenderedFile], new: list[RenderedFile]) -> set[str]:
    """Paths created, removed, or whose content, mode or owner differ."""
    a, b = by_path(old), by_path(new)
    return {p for p in a.keys() | b.keys() if a.get(p) != b.get(p)}


def live_facts(files: list[RenderedFile]) -> HostFacts:
    """A healthy host running exactly `files`; its firewall table is trusted by its hash
    (TableState.LOADED: the facts did not compare it rule by rule)."""
    facts = HostFacts(
        os_id="debian",
        packages={"haproxy": True, "keepalived": True},
        units={u: ("active", "enabled") for u in UNITS},
    )
    facts.files = {f.path: LiveFile(f.path, f.content, f.mode, f.owner) for f in files}
    ruleset = by_path(files).get(FW)
    if ruleset is not None:
        # What templates/remote/fw-facts.sh.j2 reads from the loaded table.
        comment = re.search(r'comment "edgekit inventory sha256:([0-9a-f]*)"', ruleset.content)
        assert comment, "the ruleset carries its hash in the table comment"
        facts.firewall = FirewallFacts(TableState.LOADED, comment.group(1), "active", "enabled")
    else:
        facts.firewall = FirewallFacts(TableState.UNLOADED, "", "inactive", "")
    return facts


def deploy_actions(
    loaded: Loaded, files: dict[str, list[RenderedFile]], facts: dict[str, HostFacts]
) -> dict[str, list[str]]:
    """What deploy does on each host: its firewall action, then the unit commands."""
    plans: dict[str, HostPlan] = {n: plan_host(n, files[n], facts[n]) for n in files}
    fw = _firewall_actions(loaded, plans, facts, lambda _m: None)
    out = {}
    for name, plan in plans.items():
        actions = [f"firewall {fw[name]}"] if name in fw else []
        out[name] = actions + service_actions(plan, facts[name].units)
        assert not plan.missing_packages and not plan.enable_units
    return out


@pytest.mark.parametrize("row", CASES, ids=[c.id for c in CASES])
def test_a_change_touches_only_the_files_made_of_it(
    row: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_data = copy.deepcopy(BASE)
    setting(row.both)(before_data)
    after_data = copy.deepcopy(before_data)
    row.edit(after_data)
    assert row.env or after_data != before_data, "the row changes nothing"

    before = load(tmp_path, "before.yaml", before_data)
    for name, value in row.env.items():
        monkeypatch.setenv(name, value)
    after = load(tmp_path, "after.yaml", after_data)

    old, new = render.render_all(before), render.render_all(after)
    facts = {peer: live_facts(files) for peer, files in old.items()}
    files_changed = {peer: changed(old[peer], new[peer]) for peer in PEERS}
    assert files_changed == {p: set(row.peer_files.get(p, row.files)) for p in PEERS}
    nodes_changed = changed(render.render_nodes(before), render.render_nodes(after))
    assert nodes_changed == set(row.nodes)
    assert deploy_actions(after, new, facts) == {
        p: list(row.peer_actions.get(p, row.actions)) for p in PEERS
    }
    # The shared files stay byte-identical on every peer.
    for path in (HA, KA):
        assert len({by_path(new[p])[path].content for p in PEERS}) == 1, path


def test_an_unchanged_inventory_plans_nothing(tmp_path: Path) -> None:
    loaded = load(tmp_path, "edge.yaml", copy.deepcopy(BASE))
    files = render.render_all(loaded)
    facts = {peer: live_facts(fs) for peer, fs in files.items()}
    assert deploy_actions(loaded, files, facts) == {p: [] for p in PEERS}
