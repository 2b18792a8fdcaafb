"""Apply one host's plan: stage, validate on the host, swap atomically, reload, wait, or roll back."""

from __future__ import annotations

import hashlib
import os
import shlex
import time
from dataclasses import dataclass

from edgekit import firewall
from edgekit.deploy import confirm as fw_load
from edgekit.deploy.plan import HostPlan
from edgekit.errors import EdgekitError, OperationError
from edgekit.facts import APPLIED, BACKUP_ROOT, PENDING, UNITS, HostFacts
from edgekit.progress import Progress, wait_until
from edgekit.remote import Result, Transport
from edgekit.remote.scripts import script
from edgekit.render import HAPROXY_CFG, KEEPALIVED_CONF, STATE_DIR, RenderedFile

RELOADED = ("haproxy", "keepalived")  # what a pending mark can name
# Exit code of the install script when a live file is not what the plan read.
CHANGED_SINCE_PLAN = 17


@dataclass(frozen=True)
class Timing:
    """How long a rollout waits for things; tests shorten them."""

    health_s: float = 20.0  # a host to become healthy after its reload
    verify_s: float = 15.0  # one holder per VIP after the rollout
    firewall_window_s: float = fw_load.WINDOW_S
    firewall_reconnect_s: float = fw_load.RECONNECT_S


class ApplyError(OperationError):
    def __init__(
        self, host: str, reason: str, *, rolled_back: bool, tail: str | None = None
    ) -> None:
        if tail is None:
            tail = "; its previous files were restored" if rolled_back else "; nothing was changed"
        super().__init__(f"{host}: {reason}{tail}")
        self.host = host
        self.reason = reason
        self.rolled_back = rolled_back


@dataclass
class ApplyResult:
    host: str
    changed_files: list[str]
    actions: list[str]


def _q(s: str) -> str:
    return shlex.quote(s)


def _stage(host: Transport, files: list[RenderedFile]) -> str:
    """Upload every wanted file (as the SSH user) and copy it into a root-only tree."""
    user_dir = host.check("mktemp -d /tmp/edgekit-upload.XXXXXX", "mktemp").stdout.strip()
    dirs = sorted({f"{user_dir}{f.path.rsplit('/', 1)[0]}" for f in files})
    host.check("mkdir -p " + " ".join(_q(d) for d in dirs), "mkdir staging")
    for f in files:
        host.put(f.content, f"{user_dir}{f.path}", 0o600)
    # A root-owned tree under /run: keepalived's script security accepts nothing else.
    staging = script("stage", upload=user_dir, files=files)
    return host.check(staging, "staging", sudo=True).stdout.strip().splitlines()[-1]


def validate_staged(host: Transport, stage: str, peer: str) -> Result:
    """haproxy -c with the staged environment, keepalived -t over the staged /etc/keepalived."""
    validate = script(
        "validate",
        stage=stage,
        peer=peer,
        haproxy_cfg=HAPROXY_CFG,
        keepalived_conf=KEEPALIVED_CONF,
        ruleset=firewall.RULESET,
    )
    return host.run(validate, sudo=True)


def live_hash(content: str | None) -> str:
    """What the install script expects to find: a file's sha256, or `absent`."""
    return "absent" if content is None else hashlib.sha256(content.encode()).hexdigest()


def backup_dir(deploy_id: str) -> str:
    return f"{BACKUP_ROOT}/{deploy_id}"


def _install_script(
    stage: str, plan: HostPlan, expected: dict[str, str], deploy_id: str, units: list[str]
) -> str:
    """Refuse (exit CHANGED_SINCE_PLAN, naming the file) if a live file is not what the
    plan read; else mark the host pending on `units`, back up, then move every new file
    into place."""
    return script(
        "install",
        stage=stage,
        expected=sorted(expected.items()),
        paths=plan.paths(),
        backup_dir=backup_dir(deploy_id),
        changed_since_plan=CHANGED_SINCE_PLAN,
        pending=PENDING,
        deploy_id=deploy_id,
        units=" ".join(units),
    )


def _restore_script(deploy_id: str) -> str:
    return script("restore", backup_dir=backup_dir(deploy_id))


def self_restore_script(deploy_id: str) -> str:
    """What the host's own firewall rollback runs: put the files back and, if that
    worked, clear the pending mark and the backup, so nothing of the deploy is left.
    Each in a subshell of its own: the restore ends with `exit`."""
    restore, finish = _restore_script(deploy_id), finish_script(deploy_id, applied=False)
    return f"(\n{restore}\n) && (\n{finish}\n)"


def finish_script(deploy_id: str, *, applied: bool) -> str:
    return script(
        "finish",
        applied=applied,
        applied_path=APPLIED,
        pending=PENDING,
        deploy_id=deploy_id,
        backup_dir=backup_dir(deploy_id),
    )


def sweep_script() -> str:
    return script("sweep", backup_root=BACKUP_ROOT)


def sweep(host: Transport, progress: Progress) -> None:
    """Remove what stopped deploys left (call it holding the host's deploy lock)."""
    left = host.check(sweep_script(), "removing what a stopped deploy left", sudo=True)
    paths = left.stdout.split()
    if paths:
        progress(f"{host.name}: removed what a stopped deploy left: {', '.join(paths)}")


def _reload_actions(stale: dict[str, str], facts_units: dict[str, tuple[str, str]]) -> list[str]:
    """Make running units read the files already installed (a stopped deploy's):
    unit -> "reload" or "restart"; a unit that is not running is started."""
    return [
        f"systemctl {verb if facts_units.get(u, ('',))[0] == 'active' else 'start'} {u}"
        for u, verb in stale.items()
    ]


def _with_stale(
    actions: list[str], stale: dict[str, str], facts_units: dict[str, tuple[str, str]]
) -> list[str]:
    """`actions` plus what the stale units need; a reload the plan wanted becomes a
    restart where a stale unit needs one."""
    out = list(actions)
    for unit, verb in stale.items():
        mine = [a for a in out if a in (f"systemctl reload {unit}", f"systemctl restart {unit}")]
        if mine:
            if verb == "restart":
                out[out.index(mine[0])] = f"systemctl restart {unit}"
        elif f"systemctl start {unit}" not in out:
            out += _reload_actions({unit: verb}, facts_units)
    return out


def service_actions(plan: HostPlan, facts_units: dict[str, tuple[str, str]]) -> list[str]:
    """Commands that make the changed files take effect. Reload, never restart, except where
    the change is in the unit's environment, which only a restart reads."""
    touched = plan.services_touched()
    paths = set(plan.paths())
    cmds: list[str] = []
    if "systemd" in touched:
        cmds.append("systemctl daemon-reload")
    if "sysctl" in touched:
        cmds.append("sysctl -q -p /etc/sysctl.d/60-edgekit.conf")
    for unit in ("haproxy", "keepalived"):
        active = facts_units.get(unit, ("inactive", ""))[0] == "active"
        if unit in touched:
            if not active:
                cmds.append(f"systemctl start {unit}")
            elif f"/etc/default/{unit}" in paths:
                cmds.append(f"systemctl restart {unit}")
            else:
                cmds.append(f"systemctl reload {unit}")
        elif unit in plan.start_units:
            cmds.append(f"systemctl start {unit}")
    cmds += [f"systemctl enable -q {u}" for u in plan.enable_units]
    return cmds


def health_command(instances: list[str], stats_port: int) -> str:
    return script("health", instances=instances, stats_port=stats_port, state_dir=STATE_DIR)


def wait_healthy(
    host: Transport, instances: list[str], stats_port: int, timeout: float
) -> str | None:
    """None when healthy, else the reason it was not, after `timeout` seconds."""
    command = health_command(instances, stats_port)
    if wait_until(lambda: host.run(command, sudo=True, timeout=15).ok, timeout, 0.3):
        return None
    why = host.run(script("health-why", units=UNITS, state_dir=STATE_DIR), sudo=True)
    return f"not healthy after {timeout:.0f}s ({why.stdout.strip()})"


def install_packages(host: Transport, packages: list[str], progress: Progress) -> None:
    progress(f"{host.name}: installing {' '.join(packages)}")
    host.check(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q " + " ".join(_q(p) for p in packages),
        "apt-get install",
        sudo=True,
        timeout=600,
    )


def apply_host(
    host: Transport,
    peer: str,
    plan: HostPlan,
    files: list[RenderedFile],
    facts: HostFacts,
    instances: list[str],
    stats_port: int,
    progress: Progress,
    *,
    firewall_load: bool = False,
    timing: Timing | None = None,
    deploy_id: str = "manual",
    stale: dict[str, str] | None = None,
) -> ApplyResult:
    """Apply the plan made from `facts`. `firewall_load`: (re)load the firewall although
    its files did not change (the loaded table differs from them, or its unit is not
    running). `stale`: units that run older configs than the installed ones (a stopped
    deploy's), unit -> "reload" or "restart", done as well."""
    timing = timing or Timing()
    stale = stale or {}
    units = dict(facts.units)
    expected = {
        f.path: live_hash(facts.files[f.path].content if f.path in facts.files else None)
        for f in files
    }
    if plan.missing_packages:
        install_packages(host, plan.missing_packages, progress)
        units = {u: ("inactive", "enabled") for u in units}  # re-read below when it matters
        refreshed = host.run(script("unit-states", units=UNITS), sudo=True)
        units = {
            ln.split()[0]: (ln.split()[1], ln.split()[2])
            for ln in refreshed.stdout.splitlines()
            if len(ln.split()) == 3
        }
    actions = _with_stale(service_actions(plan, units), stale, units)
    # What the pending mark names: each unit this apply must reload or restart.
    pending_units = [
        f"{u}:restart" if f"systemctl restart {u}" in actions else u
        for u in RELOADED
        if any(a.endswith(f" {u}") and not a.startswith("systemctl enable") for a in actions)
    ]
    load_fw = firewall_load or bool({firewall.RULESET, firewall.UNIT_PATH} & set(plan.paths()))
    stage = _stage(host, files)
    try:
        check = validate_staged(host, stage, peer)
        if not check.ok:
            raise ApplyError(
                host.name, f"validation failed: {check.last_line()}", rolled_back=False
            )
        checked = "haproxy -c, keepalived -t" + (
            ", nft -c" if any(f.path == firewall.RULESET for f in files) else ""
        )
        progress(f"{host.name}: validated ({checked}); installing {len(plan.changes)} file(s)")
        try:
            installed = host.run(
                _install_script(stage, plan, expected, deploy_id, pending_units), sudo=True
            )
            if installed.exit_code == CHANGED_SINCE_PLAN:
                raise ApplyError(
                    host.name,
                    f"refused: {installed.last_line()}; run deploy again to see the new diff",
                    rolled_back=False,
                )
            if not installed.ok:
                _rollback(host, plan, progress, deploy_id)
                raise ApplyError(
                    host.name, f"installing files failed: {installed.last_line()}", rolled_back=True
                )
            reason = None
            if load_fw:
                # First, before haproxy or keepalived see a new file: if the firewall cuts
                # this machine off, the host's own rollback restores every file, and
                # nothing else has taken effect yet.
                reason = _load_firewall(host, actions, progress, timing, deploy_id)
                actions = [c for c in actions if c != "systemctl daemon-reload"]
            if reason is None:
                reason = _run_actions(host, actions, progress)
            if reason is None:
                progress(f"{host.name}: waiting until healthy")
                reason = wait_healthy(host, instances, stats_port, timing.health_s)
        except KeyboardInterrupt:
            # Never leave a host half-applied: Ctrl-C puts its previous files back.
            progress(f"{host.name}: interrupted; restoring its previous files")
            _rollback(host, plan, progress, deploy_id, firewall_loaded=load_fw)
            raise
        if reason is not None:
            _rollback(host, plan, progress, deploy_id, firewall_loaded=load_fw)
            raise ApplyError(host.name, reason, rolled_back=True)
        host.check(finish_script(deploy_id, applied=True), "recording the deploy", sudo=True)
    finally:
        try:
            host.run(f"rm -rf {_q(stage)}", sudo=True, timeout=30)
        except EdgekitError:
            pass  # unreachable after a firewall rollback: the error above says so
    return ApplyResult(host.name, plan.paths(), actions)


def converge_host(
    host: Transport,
    stale: dict[str, str],
    facts: HostFacts,
    instances: list[str],
    stats_port: int,
    progress: Progress,
    *,
    timing: Timing,
    deploy_id: str,
) -> ApplyResult:
    """A host whose files are current but whose units run older ones: reload them, wait
    for health, record the deploy."""
    actions = _reload_actions(stale, facts.units)
    reason = _run_actions(host, actions, progress) or wait_healthy(
        host, instances, stats_port, timing.health_s
    )
    if reason is not None:
        raise ApplyError(host.name, reason, rolled_back=False, tail="")
    host.check(finish_script(deploy_id, applied=True), "recording the deploy", sudo=True)
    return ApplyResult(host.name, [], actions)


# For tests only: seconds to wait after the files are installed and before the first
# reload, so that a deploy killed then is known to leave new files and old daemons.
PAUSE_ENV = "EDGEKIT_TEST_PAUSE_BEFORE_RELOAD"


def _run_actions(host: Transport, actions: list[str], progress: Progress) -> str | None:
    pause = float(os.environ.get(PAUSE_ENV) or 0)
    if pause > 0 and actions:
        progress(f"{host.name}: pausing {pause:g}s before {actions[0]} ({PAUSE_ENV})")
        time.sleep(pause)
    for cmd in actions:
        progress(f"{host.name}: {cmd}")
        result = host.run(cmd, sudo=True, timeout=60)
        if not result.ok:
            return f"`{cmd}` failed: {result.last_line()}"
    return None


def _load_firewall(
    host: Transport, actions: list[str], progress: Progress, timing: Timing, deploy_id: str
) -> str | None:
    """Load the installed ruleset commit-confirmed; the reason it failed, else None.
    ApplyError when the host had to restore itself (deploy must not touch it again)."""
    if "systemctl daemon-reload" in actions:  # the unit file may be new or changed
        result = host.run("systemctl daemon-reload", sudo=True, timeout=60)
        if not result.ok:
            return f"`systemctl daemon-reload` failed: {result.last_line()}"
    outcome = fw_load.load_confirmed(
        host,
        self_restore_script(deploy_id),
        progress,
        window=timing.firewall_window_s,
        reconnect=timing.firewall_reconnect_s,
    )
    if outcome.host_restored:
        raise ApplyError(host.name, outcome.reason, rolled_back=True, tail="")
    if not outcome.ok:
        return outcome.reason
    enabled = host.run(f"systemctl enable -q {firewall.UNIT}", sudo=True, timeout=60)
    if not enabled.ok:
        return f"`systemctl enable {firewall.UNIT}` failed: {enabled.last_line()}"
    return None


def _rollback(
    host: Transport,
    plan: HostPlan,
    progress: Progress,
    deploy_id: str,
    firewall_loaded: bool = False,
) -> None:
    progress(f"{host.name}: rolling back to the previous files")
    restored = host.run(_restore_script(deploy_id), sudo=True)
    touched = plan.services_touched()
    paths = set(plan.paths())
    cmds = ["systemctl daemon-reload"] if "systemd" in touched else []
    if firewall_loaded:
        cmds.append(fw_load.restore_table_command())
    for unit, conf in (("haproxy", HAPROXY_CFG), ("keepalived", KEEPALIVED_CONF)):
        if unit not in touched:
            continue
        # The old files were serving before; bring the unit back to them.
        verb = "restart" if f"/etc/default/{unit}" in paths else "reload"
        cmds.append(script("unit-back", unit=unit, verb=verb, conf=conf))
    if restored.ok:
        cmds.append(finish_script(deploy_id, applied=False))
    else:  # keep the backup (the only copy of the old files) and the pending mark
        progress(
            f"{host.name}: restoring the previous files failed ({restored.last_line()}); "
            f"the backup stays in {backup_dir(deploy_id)}"
        )
    for cmd in cmds:
        host.run(cmd, sudo=True, timeout=60)
