"""edgekit demo: the whole story on one machine, start to finish."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from edgekit.cli import app
from edgekit.cli.inventory import note
from edgekit.errors import ExitCode, OperationError


def _step(title: str, argv: list[str]) -> int:
    note(f"\n==> {title}\n    $ edgekit {' '.join(argv)}")
    return subprocess.run([sys.executable, "-m", "edgekit", *argv], check=False).returncode


@app.command()
def demo(
    report: Annotated[
        Path, typer.Option("--report", help="Where the failover report goes.")
    ] = Path("edgekit-report"),
    keep: Annotated[bool, typer.Option("--keep", help="Leave the lab running afterwards.")] = False,
) -> int:
    """Build the image, start the lab, deploy, run every failover scenario, report, tear down.

    Each step is the edgekit command a user would type, shown before it runs.
    """
    if (
        _step(
            "build the Debian proxy appliance image (cached after the first run)",
            ["image", "build"],
        )
        != 0
    ):
        raise OperationError("demo: image build failed")
    try:
        if _step("start the local lab: 2 proxies, 3 backends", ["lab", "up"]) != 0:
            raise OperationError("demo: lab up failed")
        inventory = subprocess.run(
            [sys.executable, "-m", "edgekit", "lab", "inventory"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if (
            _step(
                "deploy haproxy + keepalived to the proxies", ["deploy", "-i", inventory, "--yes"]
            )
            != 0
        ):
            raise OperationError("demo: deploy failed")
        _step("the edge's status", ["status", "-i", inventory])
        rc = _step(
            "break the VIP holder five ways under live traffic",
            ["failover-test", "-i", inventory, "--report", str(report)],
        )
        note(f"\nreport: {report}/results.json and one SVG timeline per scenario")
        return int(ExitCode.OK if rc == 0 else ExitCode.FAILED)
    finally:
        if keep:
            note("lab left running (--keep); remove it with: edgekit lab down")
        else:
            _step("tear the lab down", ["lab", "down"])
