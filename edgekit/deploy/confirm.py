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
import shlex
import time
from dataclasses import dataclass

from edgekit import firewall
from edgekit.errors import EdgekitError
from edgekit.facts import FIREWALL_STATE_DIR, ROLLED_BACK_MARKER, FirewallFacts, TableState
from edgekit.inventory.model import Inventory
from edgekit.progress import Progress, wait_until
from edgekit.remote import HostError, Transport
from edgekit.render import RenderedFile

ROLLBACK_UNIT = "edgekit-fw-rollback"
PREVIOUS = f"{FIREWALL_STATE_DIR}/firewall.prev.nft"
ROLLBACK_SCRIPT = f"{FIREWALL_STATE_DIR}/firewall-rollback"
ROLLBACK_PID = f"{FIREWALL_STATE_DIR}/firewall-rollback.pid"
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


def _q(s: str) -> str:
    return shlex.quote(s)


def rollback_script(restore_files: str) -> str:
    """What the host runs when the timer fires: previous table, previous files, a marker."""
    table = f"inet {firewall.TABLE}"
    return f"""#!/bin/sh
# edgekit: commit-confirmed rollback of the firewall. Armed just before `edgekit deploy`
# loaded a new ruleset; deploy cancels it once it reconnects over a new SSH connection.
# Running means it did not: restore the previous firewall, then the previous files.
set -u
if [ -s {PREVIOUS} ]; then nft -f {PREVIOUS}
else systemctl stop {firewall.UNIT} 2>/dev/null; nft delete table {table} 2>/dev/null; fi
(
{restore_files}
)
systemctl daemon-reload
date -u '+%Y-%m-%dT%H:%M:%SZ' > {ROLLED_BACK_MARKER}
rm -f {ROLLBACK_PID}
"""


def arm_script(restore_files: str, window: float = WINDOW_S) -> str:
    """Save the loaded table, write the rollback script, start the timer."""
    table = f"inet {firewall.TABLE}"
    seconds = max(1, round(window))
    return f"""set -eu
mkdir -p {FIREWALL_STATE_DIR}
rm -f {ROLLED_BACK_MARKER} {ROLLBACK_PID}
if nft list table {table} > {PREVIOUS}.tmp 2>/dev/null; then
  {{ printf 'table {table}\\ndelete table {table}\\n'; cat {PREVIOUS}.tmp; }} > {PREVIOUS}
else : > {PREVIOUS}; fi
rm -f {PREVIOUS}.tmp
cat > {ROLLBACK_SCRIPT}.tmp <<'EDGEKIT_ROLLBACK'
{rollback_script(restore_files)}EDGEKIT_ROLLBACK
chmod 0700 {ROLLBACK_SCRIPT}.tmp && mv -f {ROLLBACK_SCRIPT}.tmp {ROLLBACK_SCRIPT}
systemctl stop {ROLLBACK_UNIT}.timer {ROLLBACK_UNIT}.service >/dev/null 2>&1 || true
systemctl reset-failed {ROLLBACK_UNIT}.timer {ROLLBACK_UNIT}.service >/dev/null 2>&1 || true
if command -v systemd-run >/dev/null 2>&1 && systemd-run --quiet --unit {ROLLBACK_UNIT} \\
    --description 'edgekit firewall rollback (commit confirmed)' \\
    --on-active={seconds}s --timer-property=AccuracySec=100ms /bin/sh {ROLLBACK_SCRIPT} >/dev/null 2>&1; then
  echo 'armed systemd-run'
else
  setsid sh -c 'sleep {seconds}; exec /bin/sh {ROLLBACK_SCRIPT}' </dev/null >/dev/null 2>&1 &
  echo $! > {ROLLBACK_PID}
  echo "armed pid $!"
fi
"""


def cancel_script() -> str:
    """Stop the timer (or the sleeping fallback); say whether the rollback already ran."""
    return f"""set -u
if [ -f {ROLLBACK_PID} ]; then
  pid=$(cat {ROLLBACK_PID})
  if kill -0 "$pid" 2>/dev/null; then
    if tr '\\0' ' ' < /proc/$pid/cmdline | grep -q 'sleep'; then kill -- -"$pid" 2>/dev/null || kill "$pid"
    else while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; fi
  fi
  rm -f {ROLLBACK_PID}
else
  systemctl stop {ROLLBACK_UNIT}.timer >/dev/null 2>&1 || true
  while systemctl is-active -q {ROLLBACK_UNIT}.service; do sleep 0.1; done
fi
if [ -f {ROLLED_BACK_MARKER} ]; then echo "rolled back $(cat {ROLLED_BACK_MARKER})"; else echo cancelled; fi
"""


def restore_table_command() -> str:
    """Put the table back as it was before this deploy (for a rollback by deploy itself)."""
    return (
        f"if [ -s {PREVIOUS} ]; then nft -f {PREVIOUS}; else systemctl stop "
        f"{firewall.UNIT} 2>/dev/null; nft delete table inet {firewall.TABLE} "
        "2>/dev/null; true; fi"
    )


def removal_command() -> str:
    """firewall.enabled: false after edgekit managed it: take table, unit and files away."""
    return (
        f"systemctl disable --now -q {firewall.UNIT} 2>/dev/null; "
        f"nft delete table inet {firewall.TABLE} 2>/dev/null; "
        f"rm -f {_q(firewall.RULESET)} {_q(firewall.UNIT_PATH)}; "
        f"rmdir {_q(firewall.RULESET.rsplit('/', 1)[0])} 2>/dev/null; "
        "systemctl daemon-reload"
    )


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
