"""Sweeps: measured (with CI), predicted and FLOP-ideal speedup along every axis that varies, one
curve per device, plus one table row per point (failed points included) and the rooflines."""

from __future__ import annotations

from collections import Counter, defaultdict

from reports import plots
from reports.format import MISSING, ci_text, fx, ms, pct, rel_error
from reports.loader import ResultSet, num
from reports.sections import rooflines
from reports.sections.common import (
    NOISE_LIMIT,
    axes_text,
    axis_name,
    axis_val,
    layouts,
    noise,
    preset_of,
    step_median,
    sweep_axes,
)


def build(rs: ResultSet, ok_points) -> dict:
    by_preset = defaultdict(list)
    for p in rs.of("point"):
        by_preset[preset_of(p)].append(p)
    charts, table = [], []
    for name in sorted(by_preset):
        pts = by_preset[name]
        charts += _charts(name, pts)
        for p in sorted(pts, key=lambda p: (p["device_label"], sorted(sweep_axes(p).items()))):
            table.append(_table_row(name, p))
    out = {"charts": charts, "rooflines": rooflines.build(rs, ok_points), "table": table}
    if not table:
        out["empty"] = "No measured points: run a sweep (`roo-bench sweep ...`) and pass its JSONL results."
    elif not charts:
        out["note"] = "No sweep axis varies across at least two successful points, so there is no curve to draw."
    return out


def varying_axes(points: list[dict]) -> list[str]:
    """The sweep axes with at least two distinct values; the measured mean k when none varies."""
    keys = []
    for p in points:
        for k in sweep_axes(p):
            if k not in keys:
                keys.append(k)
    axes = [k for k in keys if len({axis_val(p, k) for p in points} - {None}) >= 2]
    if not axes and len({axis_val(p, "mean_impressions_per_request") for p in points} - {None}) >= 2:
        axes = ["mean_impressions_per_request"]
    return axes


def _charts(name: str, pts: list[dict]) -> list[dict]:
    """One chart per varying axis, the other axes held at their most common value."""
    ok = [p for p in pts if p["status"] == "ok"]
    axes = varying_axes(ok)
    charts = []
    for axis in axes:
        others = [a for a in axes if a != axis]
        mode = {a: Counter(axis_val(p, a) for p in ok).most_common(1)[0][0] for a in others}

        def in_slice(p, others=others, mode=mode):
            return all(axis_val(p, a) == mode[a] for a in others)

        series = []
        for dev in sorted({p["device_label"] for p in ok}):
            sl = [p for p in ok if p["device_label"] == dev and in_slice(p) and axis_val(p, axis) is not None]
            if len(sl) < 2:
                continue
            failed = [p for p in pts if p["status"] != "ok" and p["device_label"] == dev and in_slice(p)]
            series.append(_series(dev, sl, failed, axis))
        if series:
            fixed = ", ".join(f"{a}={mode[a]:g}" for a in others)
            label = axis_name(axis)
            charts.append(
                {
                    "title": f"{name}: speedup vs {label}" + (f" ({fixed})" if fixed else ""),
                    "svg": plots.sweep_chart(series, label, f"{name}" + (f", {fixed}" if fixed else "")),
                }
            )
    return charts


def _series(dev: str, sl: list[dict], failed: list[dict], axis: str) -> dict:
    m = [p["metrics"] for p in sl]
    ci = [x.get("speedup_ci") if isinstance(x.get("speedup_ci"), list) else [None, None] for x in m]
    return {
        "label": dev,
        "x": [axis_val(p, axis) for p in sl],
        "measured": [num(x.get("speedup")) for x in m],
        "lo": [num(c[0]) for c in ci],
        "hi": [num(c[1]) for c in ci],
        "predicted": [num(x.get("predicted_speedup")) for x in m],
        "ideal": [num(x.get("ideal_speedup")) for x in m],
        "failed_x": [axis_val(p, axis) for p in failed if axis_val(p, axis) is not None],
    }


def _table_row(name: str, p: dict) -> dict:
    lay = layouts(p) if p["status"] == "ok" else {}
    m = p["metrics"]
    nz = max((noise(x) or 0.0) for x in lay.values()) if lay else None
    return {
        "preset": name,
        "device": p["device_label"],
        "axes": axes_text(p),
        "status": p["status"],
        "imp_ms": ms(step_median(lay.get("impression", {}))) if lay else MISSING,
        "roo_ms": ms(step_median(lay.get("roo", {}))) if lay else MISSING,
        "speedup": fx(m.get("speedup")),
        "ci": ci_text(m),
        "predicted": fx(m.get("predicted_speedup")),
        "error": pct(
            m.get("speedup_error")
            if num(m.get("speedup_error")) is not None
            else rel_error(m.get("speedup"), m.get("predicted_speedup"))
        ),
        "noise": pct(nz, signed=False) if nz is not None else MISSING,
        "noisy": nz is not None and nz > NOISE_LIMIT,
        "error_text": (p.get("error") or "")[:160],
    }
