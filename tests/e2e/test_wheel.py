"""The built wheel works outside the checkout: templates ship inside it.

Builds the wheel with `pip wheel --no-deps`, installs it (no deps, no index) into a
fresh venv, and runs its `edgekit` console script from a temporary directory. The
fresh venv reaches the runtime dependencies through a .pth line naming the test
venv's site-packages; that directory is appended after the venv's own, so `edgekit`
itself is imported from the installed wheel (asserted below), never from the checkout.
Runs in every test run, CI included (about 10 s; the build fetches hatchling unless
it is importable here).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekit import render
from edgekit.inventory import load_inventory

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
STRONG = "Zq8-vLm3pRt7xW"
RUNTIME_DEPS = {"typer", "jinja2", "pyyaml", "fabric", "pydantic", "paramiko", "invoke"}


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{argv}: {proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist)]
    if importlib.util.find_spec("hatchling") is not None:
        build.append("--no-build-isolation")
    _run([*build, str(REPO)])
    wheels = list(dist.glob("edgekit-*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheels[0]),
        ]
    )
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_edgekit_test_deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    work = tmp / "work"
    work.mkdir()
    yield {"wheel": wheels[0], "venv": venv, "python": python, "site": site, "work": work}


def _env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }
    env["EDGEKIT_STATS_PASSWORD"] = STRONG
    return env


def test_wheel_ships_templates_and_declares_runtime_dependencies(
    installed: dict[str, Path],
) -> None:
    with zipfile.ZipFile(installed["wheel"]) as whl:
        names = set(whl.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = whl.read(metadata).decode()
    templates = REPO / "templates"
    shipped = [p for p in templates.rglob("*") if p.is_file()]
    assert any(p.parent != templates for p in shipped), "expected nested templates (remote/)"
    for template in shipped:
        assert f"edgekit/templates/{template.relative_to(templates).as_posix()}" in names
    requires = {
        line.split(":", 1)[1].strip().split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for line in text.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    }
    assert RUNTIME_DEPS <= requires, requires
    assert not any(n.startswith("tests/") for n in names)


def test_installed_edgekit_is_imported_from_the_wheel_not_the_checkout(
    installed: dict[str, Path],
) -> None:
    code = "import edgekit, edgekit.render as r; print(edgekit.__file__); print(r.templates_dir())"
    out = _run(
        [str(installed["python"]), "-c", code], cwd=installed["work"], env=_env()
    ).stdout.split()
    for path in out:
        assert Path(path).is_relative_to(installed["site"]), out
        assert not Path(path).is_relative_to(REPO), out


def test_installed_wheel_renders_outside_the_checkout(
    installed: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = installed["work"]
    inventory = work / "edge.yaml"
    inventory.write_text((DATA / "good" / "issue-example.yaml").read_text())
    proc = _run(
        [
            str(installed["venv"] / "bin" / "edgekit"),
            "render",
            "-i",
            "edge.yaml",
            "-o",
            "out",
            "--json",
        ],
        cwd=work,
        env=_env(),
    )
    assert "Traceback" not in proc.stderr
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    assert json.loads(proc.stdout)["peers"] == manifest["peers"]
    # The same bytes as the checkout renders: the wheel carries the same templates.
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", STRONG)
    here = render.render_all(load_inventory(inventory))
    for peer, files in here.items():
        assert {e["path"]: e["sha256"] for e in manifest["peers"][peer]} == {
            f.path: f.manifest_entry()["sha256"] for f in files
        }
        for f in files:  # every file's bytes, secret ones too (their hash is not listed)
            written = work / "out" / peer / f.path.lstrip("/")
            assert hashlib.sha256(written.read_bytes()).hexdigest() == f.sha256, f.path


def test_installed_wheel_init_writes_the_example(installed: dict[str, Path]) -> None:
    work = installed["work"]
    _run([str(installed["venv"] / "bin" / "edgekit"), "init", "fresh.yaml"], cwd=work, env=_env())
    assert (work / "fresh.yaml").read_text() == (
        REPO / "templates" / "edge.example.yaml"
    ).read_text()
