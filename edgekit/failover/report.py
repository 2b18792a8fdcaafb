"""The --report directory: results.json and, per run of a scenario, an SVG timeline and
the raw series behind its figures (no plotting deps)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from edgekit.failover import measure
from edgekit.failover.run import ScenarioResult
from edgekit.failover.scenarios import Skipped

WIDTH, LANE, LEFT = 900, 28, 150  # LEFT: room for "probes 255.255.255.255"
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]


def results_json(
    results: list[ScenarioResult], skipped: Sequence[Skipped] = ()
) -> dict[str, object]:
    """`scenarios`: one entry per run (scenario, faulted peer) with per-VIP figures;
    `skipped`: what did not run, and why. A skipped entry fails the whole run."""
    return {
        "scenarios": [r.summary() for r in results],
        "skipped": [s.to_dict() for s in skipped],
        "passed": bool(results) and not skipped and all(r.passed for r in results),
    }


def table_lines(results: list[ScenarioResult], skipped: Sequence[Skipped] = ()) -> list[str]:
    """The human table: one row per run (the faulted peer and the VIPs it held), whether
    the VIPs held elsewhere stayed undisturbed ("-": there were none), then what was
    skipped and why."""
    lines = [
        f"{'scenario':<17} {'peer':<10} {'result':<7} {'outage_s':>8} {'budget':>6} "
        f"{'vip_move_s':>10} {'failed/total':>12} {'split_s':>7} {'recovered':<9} "
        f"{'others':<9} vips"
    ]
    for r in results:
        move = "-" if r.vip_move_s is None else f"{r.vip_move_s:.2f}"
        has_others = any(not v.faulted for v in r.per_vip)
        notes = [
            f"{v.vip} disturbed: {v.failed_since_fault} failed probes, "
            f"{v.moves_since_fault} holder changes"
            for v in r.disturbed()
        ]
        if r.error:
            notes.append(r.error)
        for when, counts in r.established.items():
            said = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
            notes.append(f"connections ending {when} the window: {said or 'none'}")
        others = ("DISTURBED" if r.disturbed() else "ok") if has_others else "-"
        lines.append(
            f"{r.name:<17} {r.holder or '-':<10} {'PASS' if r.passed else 'FAIL':<7} "
            f"{r.outage_s:>8.2f} {r.budget_s:>6.1f} {move:>10} "
            f"{f'{r.failed_probes}/{r.total_probes}':>12} {r.split_brain_s:>7.2f} "
            f"{'yes' if r.recovered else 'NO':<9} {others:<9} "
            f"{','.join(r.vips) or '-'}" + "".join(f"  ({n})" for n in notes)
        )
    for s in skipped:
        where = f" (VIP {', '.join(s.vips)})" if s.vips else ""
        lines.append(f"{s.name:<17} {'-':<10} {'SKIPPED':<7} {s.reason}{where}")
    return lines


def run_names(results: list[ScenarioResult]) -> list[str]:
    """A file name per run: the scenario and the faulted peer (numbered if repeated)."""
    names: list[str] = []
    for r in results:
        base = f"{r.name}.{r.holder}" if r.holder else r.name
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}.{n}"
        names.append(name)
    return names


def timeline_svg(r: ScenarioResult, peers: list[str]) -> str:
    """Per VIP: probe success over time (green ok / red failed) and which peer held it;
    the fault and restore moments."""
    times = [p.t for p in r.probes] + [s.t for s in r.samples]
    if not times:
        return "<svg xmlns='http://www.w3.org/2000/svg' width='200' height='30'/>"
    t0, t1 = min(times), max(times)
    span = max(t1 - t0, 1e-3)

    def x(t: float) -> float:
        return LEFT + (t - t0) / span * (WIDTH - LEFT - 20)

    vips = [v.vip for v in r.per_vip] or [""]
    lanes = [lane for vip in vips for lane in (f"probes {vip}".strip(), *peers)]
    height = 60 + LANE * len(lanes) + 30
    held = f" holding {', '.join(r.vips)}" if r.vips else ""
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
        "font-family='sans-serif' font-size='12'>",
        "<rect width='100%' height='100%' fill='white'/>",
        f"<text x='10' y='18' font-size='14'>{escape(r.name)} on {escape(r.holder)}"
        f"{escape(held)} ({escape(r.description)}): outage {r.outage_s:.2f} s, "
        f"VIP moved in {r.vip_move_s} s, {r.failed_probes}/{r.total_probes} probes failed"
        f" - {'PASS' if r.passed else 'FAIL'}</text>",
    ]
    for i, lane in enumerate(lanes):
        y = 40 + i * LANE
        out.append(f"<text x='10' y='{y + 15}'>{escape(lane)}</text>")
    for k, vip in enumerate(vips):
        top = 40 + k * (len(peers) + 1) * LANE
        probes = measure.of_vip(r.probes, vip) if r.per_vip else r.probes
        samples = measure.of_vip(r.samples, vip) if r.per_vip else r.samples
        for p in probes:
            color = "#2ca02c" if p.ok else "#d62728"
            out.append(f"<rect x='{x(p.t):.1f}' y='{top}' width='2' height='20' fill='{color}'/>")
        timeline = measure.holder_timeline(samples, peers)
        for (t, holders), (t_next, _) in zip(timeline, timeline[1:], strict=False):
            for i, peer in enumerate(peers):
                if peer in holders:
                    y = top + (i + 1) * LANE
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


def write_report(
    directory: Path,
    results: list[ScenarioResult],
    peers: list[str],
    skipped: Sequence[Skipped] = (),
) -> None:
    """results.json, and NAME.svg and NAME.series.json per run (NAME: run_names)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = results_json(results, skipped)
    (directory / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    for r, name in zip(results, run_names(results), strict=True):
        (directory / f"{name}.svg").write_text(timeline_svg(r, peers))
        (directory / f"{name}.series.json").write_text(json.dumps(series(r, peers)) + "\n")


def series(r: ScenarioResult, peers: list[str]) -> dict[str, object]:
    """The raw recording behind a result: enough to recompute every figure."""
    return {
        "scenario": r.name,
        "peers": peers,
        "holder": r.holder,
        "fault_t": r.fault_t,
        "restore_t": r.restore_t,
        "result": r.summary(),
        "vips": [v.vip for v in r.per_vip],
        "probes": [{"t": p.t, "ok": p.ok, "target": p.target, "vip": p.vip} for p in r.probes],
        "samples": [{"t": s.t, "peer": s.peer, "holds": s.holds, "vip": s.vip} for s in r.samples],
    }
