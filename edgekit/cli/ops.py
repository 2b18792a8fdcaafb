"""deploy, status, failover-test: the commands that act on the proxy hosts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgekit.cli import LIVE_HELP, app
from edgekit.cli.inventory import Inv, Json, echo_json, note, warn
from edgekit.errors import ExitCode, InputError, OperationError
from edgekit.inventory import Loaded, load_inventory, parse_peers_flag

if TYPE_CHECKING:
    from edgekit.deploy import DeployPlan, DeployReport
    from edgekit.status import ClusterStatus

Peers = Annotated[
    str | None,
    typer.Option(
        "--peers", help="Replace the inventory's peers: NAME=ADDR,... or ADDR,... (peer1, ...)."
    ),
]
Limit = Annotated[
    str | None, typer.Option("--limit", help="Only these peers (comma-separated names).")
]
AcceptNew = Annotated[
    bool,
    typer.Option(
        "--accept-new-host-keys",
        help="Trust and record unknown SSH host keys (like ssh's "
        "accept-new); changed keys are still refused.",
    ),
]


def _load(inventory: Path, peers: str | None) -> Loaded:
    """The inventory of a command that connects: its SSH key and known_hosts files must
    exist. Advice goes to stderr, so stdout stays data (--json)."""
    loaded = load_inventory(
        inventory, peers=parse_peers_flag(peers) if peers else None, for_ssh=True
    )
    warn(loaded)
    return loaded


@app.command()
def deploy(
    inventory: Inv = Path("edge.yaml"),
    peers: Peers = None,
    limit: Limit = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Show the diff per host and stop; exit 3 when changes are pending."
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
    accept_new: AcceptNew = False,
    json_out: Json = False,
) -> int:
    """Make every peer an identical haproxy + keepalived proxy: preflight, plan, roll out."""
    from contextlib import nullcontext

    from edgekit import deploy as rollout
    from edgekit.deploy.lock import local_lock
    from edgekit.hosts import close_all, peer_hosts

    loaded = _load(inventory, peers)
    names = [n.strip() for n in limit.split(",")] if limit else None
    progress = (lambda _m: None) if json_out else note
    # One deploy of a cluster at a time from this machine (hosts have their own locks).
    locked = nullcontext() if dry_run else local_lock(loaded.inventory.cluster)
    with locked:
        hosts = rollout.select(peer_hosts(loaded, accept_new=accept_new), names)
        try:
            plan = rollout.plan(loaded, hosts, progress=progress)
            if not json_out:
                _show_plan(plan)
            if dry_run or not plan.pending:
                if json_out:
                    report = rollout.DeployReport(plan, holders=plan.holders())
                    echo_json({**report.to_dict(), "dry_run": dry_run, "pending": plan.pending})
                if not plan.pending and not json_out:
                    note("no changes")
                return int(ExitCode.PENDING if plan.pending and dry_run else ExitCode.OK)
            if not yes and not typer.confirm("apply these changes?", err=True):
                note("nothing applied")
                return int(ExitCode.INTERRUPTED)
            # Exactly what was shown: apply() plans nothing again.
            report = rollout.apply(plan, hosts, progress=progress)
        finally:
            close_all(hosts)
    if json_out:
        echo_json({**report.to_dict(), "dry_run": False})
    else:
        _summary(report)
    if report.error:
        raise OperationError(report.error)
    return int(ExitCode.OK)


def _show_plan(plan: DeployPlan) -> None:
    for name, host_plan in plan.hosts.items():
        if host_plan.changed:
            typer.echo(
                f"--- {name}: {', '.join(host_plan.paths()) or 'no file changes'}"
                + (
                    f"; install {' '.join(host_plan.missing_packages)}"
                    if host_plan.missing_packages
                    else ""
                )
                + (f"; start {' '.join(host_plan.start_units)}" if host_plan.start_units else "")
            )
            typer.echo(host_plan.diff(), nl=False)
        elif not plan.touches(name):
            note(f"{name}: no changes")
        stale = plan.stale(name)
        if stale:
            typer.echo(
                f"--- {name}: {' and '.join(stale)} run(s) an older config than installed "
                "(a deploy stopped before reloading); will reload"
            )
        elif plan.unfinished(name):
            typer.echo(f"--- {name}: a stopped deploy did not finish here; will finish it")
    for move in plan.moves:
        typer.echo(f"--- {move.line()}: will move, make-before-break")


def _summary(report: DeployReport) -> None:
    typer.echo(f"{'host':<16} {'result':<12} files")
    for name, plan in report.plans.items():
        if name in report.applied:
            result = "applied"
        elif name == report.failed:
            result = "FAILED"
        elif report.plan.touches(name):
            result = "not reached"
        else:
            result = "unchanged"
        typer.echo(f"{name:<16} {result:<12} {len(plan.changes)}")
    for vip, holders in report.holders.items():
        typer.echo(f"VIP {vip}: held by {', '.join(holders) or 'nobody'}")


@app.command()
def status(
    inventory: Inv = Path("edge.yaml"),
    peers: Peers = None,
    json_out: Json = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every 2 s until Ctrl-C.")] = False,
) -> int:
    """Who holds each VIP, haproxy and keepalived health, servers, drift, split brain."""
    import time

    from edgekit.hosts import close_all, peer_hosts
    from edgekit.status import cluster_status

    loaded = _load(inventory, peers)
    hosts = peer_hosts(loaded)
    try:
        while True:
            st = cluster_status(loaded, hosts)
            if json_out:
                echo_json(st.to_dict())
            else:
                if watch:
                    typer.echo("\033[2J\033[H", nl=False)
                _status_table(st)
            if not watch:
                break
            time.sleep(2)
    finally:
        close_all(hosts)
    return int(ExitCode.OK if st.healthy else ExitCode.FAILED)


def _status_table(st: ClusterStatus) -> None:
    typer.echo(
        f"{'peer':<14} {'ssh':<5} {'haproxy':<8} {'keepalived':<11} {'vrrp':<22} "
        f"{'vips':<18} {'servers up':<11} {'drain':<8} drift"
    )
    for p in st.peers:
        if not p.reachable:
            typer.echo(f"{p.name:<14} {'DOWN':<5} {p.error}")
            continue
        vrrp = " ".join(f"{i.removeprefix('VI_')}:{s}" for i, s in p.vrrp.items())
        total = sum(len(s) for s in p.servers.values())
        up = sum(1 for s in p.servers.values() for v in s.values() if v == "UP")
        typer.echo(
            f"{p.name:<14} {'ok':<5} {'up' if p.haproxy_up else 'DOWN':<8} "
            f"{'up' if p.keepalived_up else 'DOWN':<11} {vrrp:<22} "
            f"{','.join(p.vips) or '-':<18} {f'{up}/{total}':<11} "
            f"{'DRAINED' if p.drained else '-':<8} {','.join(p.drift) or '-'}"
        )
    typer.echo(f"verdict: {st.verdict}")


def _scenario_help() -> str:
    from edgekit.failover.scenarios import help_text

    return help_text()


LIVE_HELP[("failover-test", "scenario")] = _scenario_help


@app.command("failover-test")
def failover_test(
    inventory: Inv = Path("edge.yaml"),
    scenario: Annotated[
        list[str] | None, typer.Option("--scenario", "-s", help=_scenario_help())
    ] = None,
    list_only: Annotated[
        bool,
        typer.Option(
            "--list", help="List the scenarios (name, budget, needs, description) and exit."
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", help="Also write results.json and an SVG timeline per scenario run here."
        ),
    ] = None,
    hold: Annotated[float, typer.Option("--hold", help="Seconds each fault lasts.")] = 3.0,
    move_wait: Annotated[
        float,
        typer.Option(
            "--move-wait", help="Keep a fault up to this many seconds while the VIP has not moved."
        ),
    ] = 15.0,
    stable: Annotated[
        float,
        typer.Option("--stable", help="Seconds the VIPs must stay on one holder before a fault."),
    ] = 3.0,
    allow_host_down: Annotated[
        bool,
        typer.Option(
            "--allow-host-down", help="Run host-down on real hosts (powers the holder off)."
        ),
    ] = False,
    allow_drift: Annotated[
        bool,
        typer.Option("--allow-drift", help="Run although live configs differ from the inventory."),
    ] = False,
    json_out: Json = False,
) -> int:
    """Break the holder of each VIP in realistic ways under live traffic; measure what
    clients of every VIP saw."""
    from edgekit.deploy.placement import place_vips
    from edgekit.deploy.placement import wanted as placement_wanted
    from edgekit.failover import scenarios as registry
    from edgekit.failover.faults import driver_for
    from edgekit.failover.report import results_json, table_lines, write_report
    from edgekit.failover.run import Options, run
    from edgekit.hosts import close_all, peer_hosts

    if list_only:
        return _list_scenarios(json_out)
    try:
        registry.check_names(scenario)  # a typo is reported before the inventory is read
    except ValueError as exc:
        raise InputError(f"--scenario: {exc}") from None
    loaded = _load(inventory, None)
    hosts = peer_hosts(loaded)
    driver = driver_for(inventory, hosts, allow_host_down, loaded.inventory.peers)
    try:
        chosen, skipped = registry.select(scenario, driver)
    except ValueError as exc:
        close_all(hosts)
        hint = "pass --allow-host-down to power real hosts off" if "power" in str(exc) else None
        raise InputError(f"--scenario: {exc}", hint=hint) from None
    for entry in skipped:
        power = "; real hosts need --allow-host-down" if "power" in entry.reason else ""
        note(f"{entry.line()}{power} (the run fails unless -s names the scenarios to run)")
    progress = (lambda _m: None) if json_out else note
    try:
        outcome = run(
            loaded,
            hosts,
            chosen,
            driver,
            Options(hold_s=hold, allow_drift=allow_drift, move_wait_s=move_wait, stable_s=stable),
            progress,
            # Each run starts with the VIPs on their preferred peers, as deploy leaves them.
            place=(lambda: place_vips(loaded, hosts, progress, timeout=30.0))
            if placement_wanted(loaded)
            else None,
        )
    finally:
        close_all(hosts)
    skipped = [*skipped, *outcome.skipped]
    data = results_json(outcome.results, skipped)
    if report:
        write_report(report, outcome.results, [p.name for p in loaded.inventory.peers], skipped)
    if json_out:
        echo_json(data)
    else:
        for line in table_lines(outcome.results, skipped):
            typer.echo(line)
        if report:
            note(f"report written to {report}/")
    return int(ExitCode.OK if data["passed"] else ExitCode.FAILED)


def _list_scenarios(json_out: bool) -> int:
    from edgekit.failover.scenarios import SCENARIOS

    if json_out:
        echo_json({"scenarios": [s.to_dict() for s in SCENARIOS.values()]})
        return int(ExitCode.OK)
    for s in SCENARIOS.values():
        needs = f" [needs {', '.join(sorted(s.needs))}]" if s.needs else ""
        typer.echo(f"{s.name:<18} budget {s.budget_s:>4.1f} s  {s.description}{needs}")
    return int(ExitCode.OK)
