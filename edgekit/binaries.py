"""Validate rendered configs with the real haproxy and keepalived binaries on this machine.

haproxy -c runs in a private network namespace where the kernel allows one (root, or
a user namespace): it then sends no DNS query for backend host names. keepalived -t
runs, as root only (its script security cannot pass inside a user namespace), in a
private network namespace holding the peer's interfaces as veth links. A namespace
lives as long as the check's process: nothing is left behind, even when it is killed.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.render import HAPROXY_CFG, KEEPALIVED_CONF, RenderedFile

_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_SETUP_FAILED = 97  # the sandbox, not the config, failed


@dataclass(frozen=True)
class BinaryCheck:
    program: str
    peer: str
    ok: bool
    output: str  # the program's own message; never contains secrets (they stay in env)


@dataclass(frozen=True)
class Skipped:
    program: str  # "haproxy -c" or "keepalived -t"
    reason: str


def env_file_values(text: str) -> dict[str, str]:
    """Parse a systemd EnvironmentFile (KEY=value / KEY="value" lines)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _file(files: list[RenderedFile], path: str) -> RenderedFile:
    return next(f for f in files if f.path == path)


@functools.lru_cache(maxsize=8)
def _unshare(*namespaces: str) -> list[str] | None:
    """The unshare prefix for private namespaces: plain as root, else in a user namespace
    (None where neither works)."""
    if not shutil.which("unshare"):
        return None
    flags = [f"--{n}" for n in namespaces]
    argv = (
        ["unshare", *flags]
        if os.geteuid() == 0
        else ["unshare", "--user", "--map-root-user", *flags]
    )
    probe = subprocess.run([*argv, "true"], capture_output=True, text=True, check=False, timeout=30)
    return list(argv) if probe.returncode == 0 else None


def haproxy_check(
    peer: str, files: list[RenderedFile], *, isolated: bool = False
) -> BinaryCheck | None:
    """`haproxy -c -f` on the peer's haproxy.cfg with its environment; None without haproxy.
    `isolated`: in a network namespace of its own where one can be made (no DNS)."""
    haproxy = shutil.which("haproxy")
    if not haproxy:
        return None
    cfg = _file(files, HAPROXY_CFG)
    env = env_file_values(_file(files, "/etc/default/haproxy").content)
    prefix = list(_unshare("net") or []) if isolated else []
    with tempfile.TemporaryDirectory(prefix="edgekit-check-") as tmp:
        path = Path(tmp) / "haproxy.cfg"
        path.write_text(cfg.content)
        proc = subprocess.run(
            [*prefix, haproxy, "-c", "-f", str(path)],
            capture_output=True,
            text=True,
            env={"PATH": _PATH, **env},
            check=False,
            timeout=60,
        )
    out = (proc.stdout + proc.stderr).strip().replace(str(path), cfg.path)
    return BinaryCheck("haproxy", peer, proc.returncode == 0, out)


# keepalived -t also checks that track scripts exist and are safe, at their
# final paths: run it in a private mount namespace with the rendered
# /etc/keepalived bound over the real one.
_KEEPALIVED_IN_TREE = (
    'mount --bind "$1" /etc/keepalived && '
    'exec keepalived -t -f /etc/keepalived/keepalived.conf -i "$2"'
)
# The same in a fresh network namespace, after making the interfaces it names.
_KEEPALIVED_IN_NETNS = f"""
tree=$1; peer=$2; shift 2
i=0
for ifname in "$@"; do
    ip link add "$ifname" type veth peer name "ekcheck$i" >&2 || exit {_SETUP_FAILED}
    ip link set "$ifname" up >&2 || exit {_SETUP_FAILED}
    i=$((i + 1))
done
mount --make-rprivate / 2>/dev/null
mount --bind "$tree" /etc/keepalived || exit {_SETUP_FAILED}
exec keepalived -t -f /etc/keepalived/keepalived.conf -i "$peer"
"""


def _write_keepalived_tree(files: list[RenderedFile], tmp: str) -> Path:
    tree = Path(tmp) / "keepalived"
    tree.mkdir()
    for f in files:
        if f.path.startswith("/etc/keepalived/"):
            target = tree / f.path.removeprefix("/etc/keepalived/")
            target.write_text(f.content)
            target.chmod(f.mode)
    return tree


def keepalived_check(
    peer: str, files: list[RenderedFile], netns: str | None = None
) -> BinaryCheck | None:
    """`keepalived -t -i PEER` on the rendered /etc/keepalived, optionally inside a network
    namespace (the interfaces it names must exist where it runs). Needs root.
    None without keepalived."""
    if not shutil.which("keepalived"):
        return None
    with tempfile.TemporaryDirectory(prefix="edgekit-check-") as tmp:
        tree = _write_keepalived_tree(files, tmp)
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _KEEPALIVED_IN_TREE,
            "sh",
            str(tree),
            peer,
        ]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    out = (proc.stdout + proc.stderr).strip()
    return BinaryCheck("keepalived", peer, proc.returncode == 0, out)


def keepalived_skip_reason() -> str | None:
    """Why keepalived_check_isolated cannot run here (None: it can)."""
    missing = [p for p in ("keepalived", "ip", "mount", "unshare") if not shutil.which(p)]
    if missing:
        return f"{', '.join(missing)} not installed"
    if os.geteuid() != 0:
        # In a user namespace / and /etc belong to no mapped user, so keepalived's script
        # security would refuse the check scripts of every config: a false rejection.
        return "needs root (keepalived checks that its scripts and their directories are root's)"
    if _unshare("net", "mount") is None:
        return "cannot make a private network namespace"
    return None


def keepalived_check_isolated(
    peer: str, files: list[RenderedFile], interfaces: list[str]
) -> BinaryCheck | Skipped:
    """`keepalived -t -i PEER` in a private network and mount namespace that has the
    peer's interfaces (veth links made for the check, gone with it)."""
    reason = keepalived_skip_reason()
    prefix = _unshare("net", "mount")
    if reason or prefix is None:
        return Skipped("keepalived -t", reason or "no private namespace")
    with tempfile.TemporaryDirectory(prefix="edgekit-check-") as tmp:
        tree = _write_keepalived_tree(files, tmp)
        proc = subprocess.run(
            [
                *prefix,
                "sh",
                "-c",
                _KEEPALIVED_IN_NETNS,
                "sh",
                str(tree),
                peer,
                *sorted(set(interfaces)),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={"PATH": _PATH},
        )
    out = (proc.stdout + proc.stderr).strip().replace(str(tree), "/etc/keepalived")
    if proc.returncode == _SETUP_FAILED:
        return Skipped("keepalived -t", f"could not prepare its namespace: {out[:200]}")
    return BinaryCheck("keepalived", peer, proc.returncode == 0, out)


_HAPROXY_LINE = re.compile(re.escape(HAPROXY_CFG) + r":(\d+)\]")
_KEEPALIVED_LINE = re.compile(r"\(" + re.escape(KEEPALIVED_CONF) + r": Line (\d+)\)")


def first_error(check: BinaryCheck) -> tuple[str, int | None]:
    """The program's first error line (without its log prefix) and the line of the
    rendered file it names, if any."""
    lines = check.output.splitlines()
    if check.program == "haproxy":
        found = next((ln for ln in lines if "[ALERT]" in ln), None)
        if found is None:
            found = next((ln for ln in lines if "[NOTICE]" not in ln), check.output)
        match = _HAPROXY_LINE.search(found)
        text = re.sub(r"^\[ALERT\]\s*\(\d+\)\s*:\s*", "", found.strip())
    else:
        found = next(
            (ln for ln in lines if _KEEPALIVED_LINE.search(ln)),
            next((ln for ln in lines if ln.strip()), check.output),
        )
        match = _KEEPALIVED_LINE.search(found)
        text = found.strip()
    return text, (int(match.group(1)) if match else None)
