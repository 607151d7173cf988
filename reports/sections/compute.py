"""Compute: the cost model's FLOPs and bytes per model component, impression vs ROO layout; where
the measured step time goes (`roo-bench profile`: host wall vs GPU busy time, launches, syncs, aten
ops per step); and the cost model checked against counted FLOPs and measured bytes (`roo-bench
validate`)."""

from __future__ import annotations

from reports import plots
from reports.format import MISSING, fx, ms, pct, ratio, si
from reports.loader import ResultSet, num
from reports.sections.common import components, layouts, model_total, preset_of
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
    out = {"items": items, "profiles": _profile_rows(rs), "validations": _validate_items(rs)}
    if not items:
        out["empty"] = "No cost-model results: run `roo-bench model --preset NAME --json` and pass its output."
    return out


def _profile_rows(rs: ResultSet) -> list[dict]:
    """One row per profiled layout: where its step time goes."""
    rows = []
    for pr in rs.of("profile"):
        cuda = str(pr["config"].get("device", "")).startswith("cuda")
        for name, lay in layouts(pr).items():
            wall, busy = num(lay.get("wall_ms")), num(lay.get("device_busy_ms"))
            rows.append(
                {
                    "preset": preset_of(pr),
                    "device": pr["device_label"],
                    "layout": "ROO" if name == "roo" else "impression",
                    "wall": ms(wall),
                    "busy": ms(busy) if cuda else f"{MISSING} (CPU run)",
                    "busy_share": pct(ratio(busy, wall), signed=False) if cuda else MISSING,
                    "host_bound": cuda and busy is not None and wall is not None and busy < 0.5 * wall,
                    "launches": _count(lay.get("launches")),
                    "syncs": _count(lay.get("syncs")),
                    "aten_ops": _count(lay.get("aten_ops")),
                    "steps": lay.get("steps", MISSING),
                }
            )
    return rows


def _count(v) -> str:
    v = num(v)
    return MISSING if v is None else f"{v:,.0f}"


def _validate_items(rs: ResultSet) -> list[dict]:
    """Per validate record: analytic vs counted FLOPs and analytic vs measured bytes, per preset and layout."""
    items = []
    for v in rs.of("validate"):
        m = v["metrics"]
        flops = [
            {
                "preset": str(e.get("preset")),
                "layout": "ROO" if e.get("layout") == "roo" else "impression",
                "analytic": si(e.get("analytic_flops"), "FLOP"),
                "counted": si(e.get("counted_flops"), "FLOP"),
                "error": _rel(e.get("rel_error")),
                "exact": num(e.get("analytic_flops")) == num(e.get("counted_flops")),
            }
            for e in m.get("presets") or []
            if isinstance(e, dict)
        ]
        storage = [
            {
                "preset": str(e.get("preset")),
                "layout": "ROO" if e.get("layout") in ("roo", "request") else "impression",
                "analytic": si(e.get("analytic_bytes"), "B"),
                "measured": si(e.get("measured_bytes"), "B"),
                "error": _rel(e.get("rel_error")),
            }
            for e in m.get("storage") or []
            if isinstance(e, dict)
        ]
        comps = [c for c in m.get("components") or [] if isinstance(c, dict)]
        differ = sum(num(c.get("analytic_flops")) != num(c.get("counted_flops")) for c in comps)
        items.append(
            {
                "where": v["source"].where,
                "device": v["device_label"],
                "sizes": "reduced model sizes" if v["config"].get("reduced", True) else "the presets' full sizes",
                "max_error": _rel(m.get("max_rel_error")),
                "components": f"{len(comps)} components compared, {differ} differ",
                "flops": flops,
                "storage": storage,
            }
        )
    return items


def _rel(v) -> str:
    v = num(v)
    return MISSING if v is None else ("exact" if v == 0 else f"{v:.2e}")


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
