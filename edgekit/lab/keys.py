"""Key material of a lab, all made on the machine at `lab up`.

Host keys are generated here (not inside the hosts) so that the lab's
known_hosts is complete before any host boots: SSH can be strict at once.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from edgekit.lab.plan import LabInfo
from edgekit.lab.system import run


def ssh_keypair(path: Path, comment: str) -> str:
    """Create an ed25519 key pair at path / path.pub; return the public key line."""
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_name(path.name + ".pub").read_text().strip()


def tls_certificate(lab: LabInfo, directory: Path) -> tuple[Path, Path]:
    """One self-signed certificate for every backend (SANs: names and addresses)."""
    cert, key = directory / "backend.crt", directory / "backend.key"
    names = [f"DNS:{h.name}" for h in lab.backends] + [f"IP:{h.address}" for h in lab.backends]
    run([
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "3650", "-subj", "/CN=edgekit-lab-backend",
        "-addext", "subjectAltName=" + ",".join(names),
        "-keyout", str(key), "-out", str(cert),
    ])  # fmt: skip
    key.chmod(0o600)
    return cert, key


def write_secret(path: Path, text: str) -> None:
    """Create a file readable by its owner only, from the first byte."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def stats_password() -> str:
    return secrets.token_urlsafe(18)


def hand_to_invoking_user(paths: list[Path]) -> None:
    """Under sudo, give the user who ran it the files a later unprivileged deploy reads."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if os.geteuid() != 0 or not uid or not gid or uid == "0":
        return
    for path in paths:
        if path.exists():
            os.chown(path, int(uid), int(gid))
