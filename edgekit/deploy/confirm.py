"""Load the firewall without locking the operator out: "commit confirmed".

Before a new ruleset is loaded, the host arms a timer that restores the previous table
and the previous files by itself. Deploy then loads the ruleset and must open a NEW SSH
connection (which the new ruleset has to admit; the established one is let through by
conntrack) within a short window; only that connection cancels the timer. If it cannot
reconnect, deploy leaves the host alone: the host rolls back on its own, and deploy
reconnects after the window to confirm that it did.

The timer is a transient systemd timer (`systemd-run --on-active`), which outlives the
SSH session by construction; without systemd, a detached `setsid sh -c 'sleep N; ...'`
whose PID is recorded.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

from edgekit import firewall
from edgekit.errors import EdgekitError
from edgekit.facts import (
    FIREWALL_STATE_DIR,
    ROLLBACK_PID,
    ROLLBACK_UNIT,
    ROLLED_BACK_MARKER,
    FirewallFacts,
    TableState,
)
from edgekit.inventory.model import Inventory
from edgekit.progress import Progress, wait_until
from edgekit.remote import HostError, Transport
from edgekit.remote.scripts import script
from edgekit.render import RenderedFile

PREVIOUS = f"{FIREWALL_STATE_DIR}/firewall.prev.nft"
ROLLBACK_SCRIPT = f"{FIREWALL_STATE_DIR}/firewall-rollback"
WINDOW_S = 30.0  # the host restores the previous firewall this long after arming
RECONNECT_S = 15.0  # deploy's time to open a new SSH connection; well inside the window
# TEST ONLY: makes the ruleset deploy loads drop this machine's own address, ahead of
# the rule that keeps established connections, to prove the host rolls back by itself.
LOCKOUT_ENV = "EDGEKIT_TEST_FIREWALL_LOCKOUT"


@dataclass(frozen=True)
class LoadOutcome:
    ok: bool
    reason: str = ""
    host_restored: bool = False  # the host's own timer put the previous state back


def admin_source(inv: Inventory, host: Transport) -> str:
    """The address this machine's SSH comes from, as the host sees it; HostError when the
    firewall would not admit it (so nothing is changed anywhere)."""
    result = host.run('echo "${SSH_CONNECTION:-}"', timeout=30)
    seen = firewall.parse_ssh_connection(result.stdout.strip())
    if seen is None:
        raise HostError(
            host.name,
            "cannot tell which address this machine connects from "
            "($SSH_CONNECTION is empty on the host); refusing to load a firewall",
            hint="or set firewall.enabled: false",
        )
    client, port = seen
    reason = firewall.admin_refusal(inv, client, port)
    if reason:
        raise HostError(
            host.name,
            f"refusing to deploy the firewall: {reason}; nothing was changed",
            hint="add this machine's address to firewall.admin_cidrs",
        )
    return client


def wants_load(fw: FirewallFacts, expected_hash: str) -> bool:
    """The ruleset file may be unchanged while the loaded table is not what it loads."""
    if fw.unit_active != "active" or fw.unit_enabled != "enabled":
        return True
    if fw.table is TableState.MATCH:
        return False
    if fw.table is TableState.LOADED:  # not compared rule by rule on this host: trust the hash
        return fw.comment_hash != expected_hash
    return True


def with_test_lockout(files: list[RenderedFile], client: str) -> list[RenderedFile]:
    """TEST ONLY (LOCKOUT_ENV): a ruleset that cuts this machine's SSH, even established."""
    hook = "type filter hook input priority filter; policy drop;\n"
    out = []
    for f in files:
        if f.path == firewall.RULESET:
            assert hook in f.content
            rule = f'        ip saddr {client} drop comment "TEST ONLY: {LOCKOUT_ENV}"\n'
            f = dataclasses.replace(f, content=f.content.replace(hook, hook + rule))
        out.append(f)
    return out


def test_lockout_requested() -> bool:
    return os.environ.get(LOCKOUT_ENV) == "1"


def _values(restore_files: str = "") -> dict[str, object]:
    return {
        "restore_files": restore_files,
        "table": firewall.TABLE,
        "unit": firewall.UNIT,
        "previous": PREVIOUS,
        "marker": ROLLED_BACK_MARKER,
        "pid_file": ROLLBACK_PID,
        "rollback": ROLLBACK_SCRIPT,
        "rollback_unit": ROLLBACK_UNIT,
        "state_dir": FIREWALL_STATE_DIR,
    }


def rollback_script(restore_files: str) -> str:
    """What the host runs when the timer fires: previous table, previous files, a marker."""
    return script("fw-rollback", **_values(restore_files))


def arm_script(restore_files: str, window: float = WINDOW_S) -> str:
    """Save the loaded table, write the rollback script, start the timer."""
    return script("fw-arm", seconds=max(1, round(window)), **_values(restore_files))


def cancel_script() -> str:
    """Stop the timer (or the sleeping fallback); say whether the rollback already ran."""
    return script("fw-cancel", **_values())


def restore_table_command() -> str:
    """Put the table back as it was before this deploy (for a rollback by deploy itself)."""
    return script("fw-restore-table", **_values())


def removal_values() -> dict[str, str]:
    """What the fw-remove script (and scripts that include it) needs."""
    return {
        "unit": firewall.UNIT,
        "table": firewall.TABLE,
        "ruleset": firewall.RULESET,
        "unit_path": firewall.UNIT_PATH,
        "ruleset_dir": firewall.RULESET.rsplit("/", 1)[0],
    }


def removal_command() -> str:
    """firewall.enabled: false after edgekit managed it: take table, unit and files away."""
    return script("fw-remove", **removal_values())


def _reconnect(host: Transport, timeout: float, command: str) -> str | None:
    """Run `command` (sudo) over a NEW connection, retrying for `timeout` seconds; its
    stdout, or None when no new connection got through."""
    deadline = time.monotonic() + timeout

    def attempt() -> str | None:
        fresh = host.reopen(max(1.0, min(5.0, deadline - time.monotonic())))
        try:
            result = fresh.run(command, sudo=True, timeout=30)
            return result.stdout.strip() if result.ok else None
        except EdgekitError:
            return None
        finally:
            fresh.close()

    return wait_until(attempt, timeout, interval=0.5)


def load_confirmed(
    host: Transport,
    restore_files: str,
    progress: Progress,
    window: float = WINDOW_S,
    reconnect: float = RECONNECT_S,
) -> LoadOutcome:
    """Arm the rollback timer, load the installed ruleset, confirm over a new connection."""
    armed = host.check(
        arm_script(restore_files, window), "arming the firewall rollback", sudo=True, timeout=60
    ).stdout.strip()
    started = time.monotonic()
    progress(
        f"{host.name}: loading the firewall; the host restores the previous one in "
        f"{window:.0f}s unless a new SSH connection confirms it ({armed})"
    )
    try:
        loaded = host.run(f"systemctl reload-or-restart {firewall.UNIT}", sudo=True, timeout=15)
        if not loaded.ok:
            # nft loads a file in one transaction: nothing changed. Stop the timer now.
            host.run(cancel_script(), sudo=True, timeout=60)
            return LoadOutcome(False, f"loading the firewall failed: {loaded.last_line()}")
    except HostError:
        host.close()  # the old connection is cut too; only a new one can tell
    answer = _reconnect(host, started + reconnect - time.monotonic(), cancel_script())
    if answer == "cancelled":
        progress(f"{host.name}: firewall confirmed over a new SSH connection")
        return LoadOutcome(True)
    if answer is not None:  # the timer fired first: the host has already restored
        return LoadOutcome(
            False,
            f"the firewall was confirmed too late: the host had "
            f"already restored the previous one ({answer})",
            host_restored=True,
        )
    # Leave the host alone: its own timer restores the previous firewall and files.
    host.close()
    progress(
        f"{host.name}: no new SSH connection within {reconnect:.0f}s; waiting for the "
        "host to restore its previous firewall by itself"
    )
    # The host's timer fires at `window`; give it a moment more (less in a short test).
    time.sleep(max(0.0, started + window + min(2.0, window) - time.monotonic()))
    seen = _reconnect(host, min(20.0, window), f"cat {ROLLED_BACK_MARKER} 2>/dev/null || echo none")
    what = f"the new firewall cut this machine's SSH (no new connection within {reconnect:.0f}s)"
    if seen is None:
        return LoadOutcome(
            False,
            f"{what}; the host should have restored its previous "
            f"firewall after {window:.0f}s but is still unreachable",
            host_restored=True,
        )
    if seen == "none":
        return LoadOutcome(
            False,
            f"{what}; reconnected later, but the host's rollback did not record a restore",
            host_restored=True,
        )
    return LoadOutcome(
        False,
        f"{what}; the host restored its previous firewall and files by itself at {seen}",
        host_restored=True,
    )
