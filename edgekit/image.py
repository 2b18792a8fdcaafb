"""Build the Debian proxy appliance tree from its recipe (images/*.yaml).

The tree is built once per recipe content with debootstrap and kept in a
cache; a marker file written last says the tree is complete, so an unchanged
recipe returns at once and an interrupted build is started again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekit.errors import InputError, OperationError, PrerequisiteError
from edgekit.hostfs import locked, mounts_under
from edgekit.progress import Progress, silent

DEFAULT_RECIPE_NAME = "debian-proxy.yaml"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
MARKER = "complete.json"
# Part of the cache key: a change to how the tree is configured (below) must
# not reuse trees built by an older edgekit.
BUILDER_VERSION = "1"


class AdminUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    shell: str = "/bin/bash"
    groups: list[str] = ["sudo"]
    passwordless_sudo: bool = True


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    suite: str
    variant: str = "minbase"
    components: list[str] = ["main"]
    mirror: str = "auto"
    packages: list[str]
    admin: AdminUser
    sshd: dict[str, str] = {}
    strip: list[str] = []


@dataclass(frozen=True)
class ImageInfo:
    name: str
    digest: str  # short hash of the recipe content: the cache key
    directory: Path  # holds rootfs/ and the completion marker
    rootfs: Path
    recipe: Path
    cached: bool  # True when an existing tree was reused


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_CACHE_DIR", "/var/cache/edgekit"))


def default_recipe() -> Path:
    """The shipped recipe: inside the installed package first, then the checkout."""
    here = Path(__file__).resolve().parent
    for images in (here / "images", here.parent / "images"):
        candidate = images / DEFAULT_RECIPE_NAME
        if candidate.is_file():
            return candidate
    raise InputError(
        f"the default image recipe {DEFAULT_RECIPE_NAME} is not installed",
        hint="pass --recipe PATH",
    )


def load_recipe(path: Path) -> tuple[Recipe, str]:
    """The validated recipe and the short hash of its content."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read image recipe {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(raw)
        recipe = Recipe.model_validate(data)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise InputError(f"{path}: {where}: {first['msg']}") from exc
    digest = hashlib.sha256(BUILDER_VERSION.encode() + b"\0" + raw).hexdigest()[:12]
    return recipe, digest


def mirror_from_sources(sources_files: dict[str, str]) -> str | None:
    """The first Debian archive URI named by apt sources (deb822 or one-line).

    Security and updates suites live on other archives, so they are skipped.
    """
    for name, text in sorted(sources_files.items()):
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = _deb822_fields(stanza)
                if "deb" not in fields.get("types", "").split():
                    continue
                suites = fields.get("suites", "").split()
                if suites and all(_is_secondary_suite(s) for s in suites):
                    continue
                uris = fields.get("uris", "").split()
                if uris:
                    return uris[0].rstrip("/")
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and not _is_secondary_suite(words[2]):
                    return words[1].rstrip("/")
    return None


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0] in " \t" and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            fields[key] = value.strip()
    return fields


def _is_secondary_suite(suite: str) -> bool:
    return suite.endswith(("-security", "-updates", "-backports", "/updates"))


def machine_mirror(etc_apt: Path = Path("/etc/apt")) -> str:
    files: dict[str, str] = {}
    candidates = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    for path in candidates:
        if path.is_file() and path.suffix in (".list", ".sources"):
            files[path.name] = path.read_text(errors="replace")
    return mirror_from_sources(files) or FALLBACK_MIRROR


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise PrerequisiteError("building the image needs root (run it with sudo)")
    if not shutil.which("debootstrap"):
        raise PrerequisiteError("debootstrap is missing: apt-get install debootstrap")


def build_image(
    recipe: Path | None = None,
    output: Path | None = None,
    progress: Progress = silent,
) -> ImageInfo:
    """Build (or reuse) the appliance tree for a recipe and describe it."""
    recipe_path = (recipe or default_recipe()).resolve()
    spec, digest = load_recipe(recipe_path)
    directory = output or default_cache_dir() / "images" / f"{spec.name}-{digest}"
    info = ImageInfo(spec.name, digest, directory, directory / "rootfs", recipe_path, True)
    if _is_complete(directory, digest):
        progress(f"image {spec.name}-{digest}: cached at {info.rootfs}")
        return info
    check_prerequisites()
    directory.mkdir(parents=True, exist_ok=True)
    with locked(directory):
        if _is_complete(directory, digest):  # another build finished while we waited
            return info
        started = time.monotonic()
        _build(spec, directory, progress)
        _write_marker(directory, spec, digest, time.monotonic() - started)
    progress(f"image {spec.name}-{digest}: built in {time.monotonic() - started:.0f} s")
    return ImageInfo(spec.name, digest, directory, directory / "rootfs", recipe_path, False)


def _is_complete(directory: Path, digest: str) -> bool:
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("digest") == digest and (directory / "rootfs" / "etc/os-release").exists()


def _build(spec: Recipe, directory: Path, progress: Progress) -> None:
    partial = directory / "rootfs.partial"
    for stale in (partial, directory / "rootfs", directory / MARKER):
        remove_tree(stale)
    mirror = machine_mirror() if spec.mirror == "auto" else spec.mirror
    progress(f"debootstrap {spec.suite} ({spec.variant}) from {mirror} into {directory}")
    _debootstrap(spec, mirror, partial, directory / "debootstrap.log", progress)
    progress("configuring the admin user, sshd and first-boot identity")
    configure_tree(spec, partial)
    partial.rename(directory / "rootfs")


def _debootstrap(spec: Recipe, mirror: str, target: Path, log: Path, progress: Progress) -> None:
    debs = default_cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    argv = [
        "debootstrap",
        f"--variant={spec.variant}",
        f"--components={','.join(spec.components)}",
        f"--include={','.join(spec.packages)}",
        f"--cache-dir={debs}",
        spec.suite,
        str(target),
        mirror,
    ]
    started = time.monotonic()
    phases: set[str] = set()
    shown = 0.0
    tail: list[str] = []
    with (
        log.open("w") as log_file,
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            tail = (tail + [line.rstrip()])[-5:]
            # debootstrap prints a line per package: show each new phase, and
            # within a long phase one line every few seconds as a heartbeat.
            words = line.split()
            now = time.monotonic()
            if len(words) >= 2 and words[0] == "I:":
                if words[1] not in phases or now - shown >= 5:
                    phases.add(words[1])
                    shown = now
                    progress(f"  [{now - started:5.0f} s] {line.strip()[3:]}")
    if proc.returncode != 0:
        raise OperationError(
            f"debootstrap failed (exit {proc.returncode}): {tail[-1] if tail else ''}",
            hint=f"full log in {log}",
        )


def configure_tree(spec: Recipe, root: Path) -> None:
    """Admin user, sudo, sshd policy, and no identity shared by clones."""
    admin = spec.admin
    _chroot(
        root,
        "useradd",
        "--create-home",
        "--shell",
        admin.shell,
        "--groups",
        ",".join(admin.groups),
        admin.user,
    )
    _chroot(root, "passwd", "--lock", admin.user)
    if admin.passwordless_sudo:
        _write(
            root / "etc/sudoers.d" / f"90-{admin.user}",
            f"{admin.user} ALL=(ALL:ALL) NOPASSWD: ALL\n",
            0o440,
        )
    sshd = "".join(f"{key} {value}\n" for key, value in spec.sshd.items())
    _write(root / "etc/ssh/sshd_config.d/edgekit.conf", sshd, 0o644)
    _install_hostkey_unit(root)
    for pattern in spec.strip:
        for path in root.glob(pattern.lstrip("/")):
            path.unlink()
    # An empty machine-id makes each boot create its own; dbus must follow it
    # instead of keeping the id it got at install time.
    _write(root / "etc/machine-id", "", 0o444)
    dbus_id = root / "var/lib/dbus/machine-id"
    dbus_id.unlink(missing_ok=True)
    dbus_id.parent.mkdir(parents=True, exist_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    # systemd-firstboot would wait for answers on the console of a clone.
    _mask(root, "systemd-firstboot.service")
    _write(root / "etc/hostname", "localhost\n", 0o644)


def _install_hostkey_unit(root: Path) -> None:
    unit = """[Unit]
Description=Generate missing SSH host keys (each clone needs its own)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
"""
    _write(root / "etc/systemd/system/edgekit-ssh-hostkeys.service", unit, 0o644)
    wants = root / "etc/systemd/system/ssh.service.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "edgekit-ssh-hostkeys.service"
    link.unlink(missing_ok=True)
    link.symlink_to("/etc/systemd/system/edgekit-ssh-hostkeys.service")


def _mask(root: Path, unit: str) -> None:
    link = root / "etc/systemd/system" / unit
    link.unlink(missing_ok=True)
    link.symlink_to("/dev/null")


def _chroot(root: Path, *argv: str) -> None:
    result = subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True)
    if result.returncode != 0:
        raise OperationError(
            f"in the image tree, {' '.join(argv)} failed: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _write_marker(directory: Path, spec: Recipe, digest: str, seconds: float) -> None:
    marker = {
        "name": spec.name,
        "digest": digest,
        "suite": spec.suite,
        "build_seconds": round(seconds, 1),
        "built_at": int(time.time()),
    }
    tmp = directory / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    tmp.rename(directory / MARKER)


def remove_tree(path: Path) -> None:
    """Remove a tree, first unmounting what an interrupted build left mounted in it."""
    if not path.exists() and not path.is_symlink():
        return
    for mountpoint in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)
    if path.is_dir() and not path.is_symlink():
        # --one-file-system: never follow into a mount (e.g. /proc) we failed to remove.
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)
    else:
        path.unlink()


def export_tarball(image: ImageInfo, path: Path) -> Path:
    """Pack the tree (numeric owners, xattrs) for import elsewhere; compression by suffix."""
    if not _is_complete(image.directory, image.digest):
        raise OperationError(f"image {image.name}-{image.digest} is not built; build it first")
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        "tar",
        "--numeric-owner",
        "--xattrs",
        "--acls",
        "-C",
        str(image.rootfs),
        "-caf",
        str(path),
        ".",
    ]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise OperationError(f"tar failed writing {path}: {result.stderr.strip()}")
    return path
