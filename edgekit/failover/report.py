"""The --report directory: results.json and one SVG timeline per scenario (no plotting deps)."""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import escape

from edgekit.failover import measure
from edgekit.failover.run import ScenarioResult

WIDTH, LANE, LEFT = 900, 28, 110
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]


def results_json(results: list[ScenarioResult]) -> dict[str, object]:
    return {
        "scenarios": [r.summary() for r in results],
        "passed": bool(results) and all(r.passed for r in results),
    }


def timeline_svg(r: ScenarioResult, peers: list[str]) -> str:
    """Probe success over time (green ok / red failed), the fault and restore moments, and
    which peer held the VIP."""
    times = [p.t for p in r.probes] + [s.t for s in r.samples]
    if not times:
        return "<svg xmlns='http://www.w3.org/2000/svg' width='200' height='30'/>"
    t0, t1 = min(times), max(times)
    span = max(t1 - t0, 1e-3)

    def x(t: float) -> float:
        return LEFT + (t - t0) / span * (WIDTH - LEFT - 20)

    lanes = ["probes", *peers]
    height = 60 + LANE * len(lanes) + 30
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
        "font-family='sans-serif' font-size='12'>",
        "<rect width='100%' height='100%' fill='white'/>",
        f"<text x='10' y='18' font-size='14'>{escape(r.name)} ({escape(r.description)})"
        f": outage {r.outage_s:.2f} s, "
        f"VIP moved in {r.vip_move_s} s, {r.failed_probes}/{r.total_probes} probes failed"
        f" - {'PASS' if r.passed else 'FAIL'}</text>",
    ]
    for i, lane in enumerate(lanes):
        y = 40 + i * LANE
        out.append(f"<text x='10' y='{y + 15}'>{escape(lane)}</text>")
    for p in r.probes:
        color = "#2ca02c" if p.ok else "#d62728"
        out.append(f"<rect x='{x(p.t):.1f}' y='40' width='2' height='20' fill='{color}'/>")
    timeline = measure.holder_timeline(r.samples, peers)
    for (t, holders), (t_next, _) in zip(timeline, timeline[1:], strict=False):
        for i, peer in enumerate(peers):
            if peer in holders:
                y = 40 + (i + 1) * LANE
                out.append(
                    f"<rect x='{x(t):.1f}' y='{y}' width='{max(x(t_next) - x(t), 0.5):.1f}'"
                    f" height='20' fill='{COLORS[i % len(COLORS)]}'/>"
                )
    for label, t, color in (("fault", r.fault_t, "#d62728"), ("restore", r.restore_t, "#333")):
        if t:
            out.append(
                f"<line x1='{x(t):.1f}' x2='{x(t):.1f}' y1='32' y2='{height - 25}' "
                f"stroke='{color}' stroke-dasharray='4 3'/>"
            )
            out.append(f"<text x='{x(t) + 3:.1f}' y='{height - 12}' fill='{color}'>{label}</text>")
    out.append(f"<text x='{LEFT}' y='{height - 2}'>0 s</text>")
    out.append(f"<text x='{WIDTH - 60}' y='{height - 2}'>{span:.1f} s</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_report(directory: Path, results: list[ScenarioResult], peers: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(results_json(results), indent=2) + "\n")
    for r in results:
        (directory / f"{r.name}.svg").write_text(timeline_svg(r, peers))
        (directory / f"{r.name}.series.json").write_text(json.dumps(series(r, peers)) + "\n")


def series(r: ScenarioResult, peers: list[str]) -> dict[str, object]:
    """The raw recording behind a result: enough to recompute every figure."""
    return {
        "scenario": r.name,
        "peers": peers,
        "holder": r.holder,
        "fault_t": r.fault_t,
        "restore_t": r.restore_t,
        "result": r.summary(),
        "probes": [{"t": p.t, "ok": p.ok, "target": p.target} for p in r.probes],
        "samples": [{"t": s.t, "peer": s.peer, "holds": s.holds} for s in r.samples],
    }
