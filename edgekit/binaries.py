"""Validate rendered configs with the real haproxy and keepalived binaries on this machine."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.render import RenderedFile


@dataclass(frozen=True)
class BinaryCheck:
    program: str
    peer: str
    ok: bool
    output: str  # the program's own message; never contains secrets (they stay in env)


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


def haproxy_check(peer: str, files: list[RenderedFile]) -> BinaryCheck | None:
    """`haproxy -c -f` on the peer's haproxy.cfg with its environment; None without haproxy."""
    haproxy = shutil.which("haproxy")
    if not haproxy:
        return None
    cfg = _file(files, "/etc/haproxy/haproxy.cfg")
    env = env_file_values(_file(files, "/etc/default/haproxy").content)
    with tempfile.TemporaryDirectory(prefix="edgekit-check-") as tmp:
        path = Path(tmp) / "haproxy.cfg"
        path.write_text(cfg.content)
        proc = subprocess.run([haproxy, "-c", "-f", str(path)], capture_output=True, text=True,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env}, check=False)
    out = (proc.stdout + proc.stderr).strip().replace(str(path), cfg.path)
    return BinaryCheck("haproxy", peer, proc.returncode == 0, out)


# keepalived -t also checks that track scripts exist and are safe, at their
# final paths: run it in a private mount namespace with the rendered
# /etc/keepalived bound over the real one.
_KEEPALIVED_IN_TREE = (
    'mount --bind "$1" /etc/keepalived && '
    'exec keepalived -t -f /etc/keepalived/keepalived.conf -i "$2"'
)


def keepalived_check(peer: str, files: list[RenderedFile],
                     netns: str | None = None) -> BinaryCheck | None:
    """`keepalived -t -i PEER` on the rendered /etc/keepalived, optionally inside a network
    namespace (the interfaces it names must exist where it runs). Needs root.
    None without keepalived."""
    if not shutil.which("keepalived"):
        return None
    with tempfile.TemporaryDirectory(prefix="edgekit-check-") as tmp:
        tree = Path(tmp) / "keepalived"
        tree.mkdir()
        for f in files:
            if f.path.startswith("/etc/keepalived/"):
                target = tree / f.path.removeprefix("/etc/keepalived/")
                target.write_text(f.content)
                target.chmod(f.mode)
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                _KEEPALIVED_IN_TREE, "sh", str(tree), peer]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    out = (proc.stdout + proc.stderr).strip()
    return BinaryCheck("keepalived", peer, proc.returncode == 0, out)
