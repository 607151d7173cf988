"""Energy and utilization: NVML joules per step and per 1M impressions, power, SM and memory
utilization per point and layout; where NVML is unavailable, why."""

from __future__ import annotations

from collections import Counter, defaultdict

from reports import plots
from reports.format import pct, pct01, si
from reports.loader import ResultSet, num
from reports.sections.common import axes_text, headline_point, layouts, preset_of
from workloads.layout import LAYOUTS


def build(rs: ResultSet, ok_points) -> dict:
    rows, chart, reasons = [], [], Counter()
    groups = defaultdict(list)
    for p in ok_points:
        groups[(preset_of(p), p["device_label"])].append(p)
    for (name, dev), pts in sorted(groups.items()):
        have = [p for p in pts if all(_energy(p, x).get("available") for x in LAYOUTS)]
        for p in pts:
            for x in LAYOUTS:
                e = _energy(p, x)
                if not e.get("available"):
                    reasons[(dev, str(e.get("reason") or "no energy record"))] += 1
        rows += [_row(name, dev, p, x) for p in have for x in LAYOUTS]
        if have:
            h = headline_point(have)
            chart.append(
                {
                    "label": f"{name}, {axes_text(h)}\n{dev}",
                    **{x.value: num(_energy(h, x).get("j_per_1m_impressions")) for x in LAYOUTS},
                }
            )
    unavailable = [f"{dev}: {reason} ({n} layout measurement(s))" for (dev, reason), n in sorted(reasons.items())]
    out = {
        "rows": rows,
        "unavailable": unavailable,
        "chart": plots.energy_chart(chart, "Energy per 1M impressions (headline point per preset)") if chart else None,
    }
    if not rows:
        out["empty"] = (
            "No NVML energy measurements in these results"
            + (" — " + "; ".join(unavailable[:3]) if unavailable else "")
            + "."
        )
    return out


def _energy(p: dict, layout) -> dict:
    return layouts(p)[layout].get("energy") or {}


def _row(name: str, dev: str, p: dict, x) -> dict:
    e = _energy(p, x)
    return {
        "preset": name,
        "device": dev,
        "axes": axes_text(p),
        "layout": "ROO" if x == "roo" else "impression",
        "j_step": si(e.get("j_per_step"), "J"),
        "j_1m": si(e.get("j_per_1m_impressions"), "J"),
        "p_mean": si(e.get("power_w_mean"), "W"),
        "p_max": si(e.get("power_w_max"), "W"),
        "sm": pct(pct01(e.get("sm_util_mean")), signed=False),
        "mem": pct(pct01(e.get("mem_util_mean")), signed=False),
    }
