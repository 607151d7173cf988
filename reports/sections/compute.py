"""Compute: the cost model's FLOPs and bytes per model component, impression vs ROO layout."""

from __future__ import annotations

from reports import plots
from reports.format import fx, pct, ratio, si
from reports.loader import ResultSet, num
from reports.sections.common import components, model_total, preset_of
from workloads.layout import LAYOUTS


def build(rs: ResultSet, ok_points) -> dict:
    items = []
    for mr in rs.of("model"):
        comps = components(mr)
        if not comps:
            continue
        ti, tr = model_total(mr, "impression", "flops"), model_total(mr, "roo", "flops")
        m = mr["metrics"]
        items.append(
            {
                "name": preset_of(mr),
                "where": mr["source"].where,
                "chart": plots.compute_chart(comps, preset_of(mr)),
                "rows": _component_rows(comps),
                "total_imp": si(ti, "FLOP"),
                "total_roo": si(tr, "FLOP"),
                "total_gain": fx(ratio(ti, tr)),
                "predicted_speedup": fx(m.get("predicted_speedup")),
                "f_u": pct(m.get("f_u"), signed=False) if num(m.get("f_u")) is not None else "—",
            }
        )
    if not items:
        return {
            "items": [],
            "empty": "No cost-model results: run `roo-bench model --preset NAME --json` and pass its output.",
        }
    return {"items": items}


def _component_rows(comps: list[dict]) -> list[dict]:
    rows = []
    for n in dict.fromkeys(c["name"] for c in comps):
        v = {lay: [c for c in comps if c["name"] == n and c["layout"] == lay] for lay in LAYOUTS}
        fi, fr = sum(c["flops"] for c in v["impression"]), sum(c["flops"] for c in v["roo"])
        bi, br = sum(c["bytes"] or 0 for c in v["impression"]), sum(c["bytes"] or 0 for c in v["roo"])
        rows.append(
            {
                "name": n,
                "flops_imp": si(fi, "FLOP"),
                "flops_roo": si(fr, "FLOP"),
                "flops_gain": "ROO only" if fi == 0 and fr > 0 else fx(ratio(fi, fr)),
                "bytes_imp": si(bi, "B"),
                "bytes_roo": si(br, "B"),
                "bytes_gain": "ROO only" if bi == 0 and br > 0 else fx(ratio(bi, br)),
            }
        )
    return rows
