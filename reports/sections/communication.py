"""Communication: the embedding all-to-all's bytes per step, counted at the collective vs analytic,
and its time, per preset × device × world size × sharding (table-wise, row-wise) and layout; and
the alpha-beta projection to large W (`roo-bench comm-project`) beside the measured points."""

from __future__ import annotations

from collections import defaultdict

from reports import plots
from reports.format import MISSING, ms, pct, ratio, rel_error, si
from reports.loader import ResultSet, num
from reports.sections.common import layouts, preset_of, sharding, world


def build(rs: ResultSet, ok_points) -> dict:
    recs = [c for c in rs.of("comm") if c["status"] == "ok" and not c["metrics"].get("projection")]
    rows, chart_rows = [], defaultdict(list)
    for c in sorted(recs, key=lambda c: (preset_of(c), c["device_label"], world(c) or 0, sharding(c))):
        lay = layouts(c)
        w = world(c)
        i, r = lay.get("impression") or {}, lay.get("roo") or {}
        for name, d in (("impression", i), ("roo", r)):
            rows.append(_row(c, w, name, d, i, r))
            if w is not None:
                cnt, ana = num(d.get("counted_bytes_per_step")), num(d.get("analytic_bytes_per_step"))
                chart_rows[c["device_label"]].append(
                    {
                        "series": f"{preset_of(c)}, {sharding(c)}",
                        "layout": name,
                        "world": w,
                        "bytes": cnt if cnt is not None else ana,
                        "ms": num(d.get("step_ms_median")),
                    }
                )
    charts = [{"title": dev, "svg": plots.comm_chart(r, dev)} for dev, r in sorted(chart_rows.items())]
    charts += _projection_charts(rs, recs)
    if not rows and not charts:
        return {
            "rows": [],
            "charts": [],
            "empty": "No communication results: run `roo-bench comm --nproc W --preset "
            "NAME --json` and pass its output.",
        }
    return {"rows": rows, "charts": charts}


def _row(c: dict, w, name: str, d: dict, i: dict, r: dict) -> dict:
    """One layout `name` (its figures `d`) of comm record `c`; the ROO row carries the byte saving."""
    cnt, ana = num(d.get("counted_bytes_per_step")), num(d.get("analytic_bytes_per_step"))
    saved = ratio(r.get("counted_bytes_per_step"), i.get("counted_bytes_per_step"))
    return {
        "preset": preset_of(c),
        "device": c["device_label"],
        "backend": c["config"].get("backend", "?"),
        "world": w if w is not None else "?",
        "sharding": sharding(c),
        "layout": "ROO" if name == "roo" else "impression",
        "counted": si(cnt, "B"),
        "analytic": si(ana, "B"),
        "match": MISSING if cnt is None or ana is None else ("exact" if cnt == ana else pct(rel_error(cnt, ana))),
        "mismatch": cnt is not None and ana is not None and cnt != ana,
        "ms": ms(d.get("step_ms_median")),
        "saving": pct(1 - saved, signed=False) if name == "roo" and saved is not None else "",
    }


def _projection_charts(rs: ResultSet, measured: list[dict]) -> list[dict]:
    """One chart per projection record: bytes and collective time per step vs W (both layouts, the
    model's curve), with the measured points of the same preset and sharding on top."""
    out = []
    for c in rs.of("comm"):
        m = c["metrics"]
        if c["status"] != "ok" or not m.get("projection"):
            continue
        preset, shard = preset_of(c), sharding(c)
        curves = [
            {"layout": lay, "world": row["world_size"], "bytes": d.get("bytes_per_step"), "ms": d.get("comm_ms")}
            for row in m.get("rows", [])
            for lay, d in row.get("layouts", {}).items()
        ]
        points = [
            {"layout": lay, "world": world(p), "bytes": d.get("counted_bytes_per_step"), "ms": d.get("step_ms_median")}
            for p in measured
            if preset_of(p) == preset and sharding(p) == shard and world(p) is not None
            for lay, d in layouts(p).items()
        ]
        t = m.get("topology") or {}
        title = (
            f"{preset}, {shard}: projected ({t.get('gpus_per_node', '?')} GPUs a node, NVLink "
            f"{t.get('nvlink_gbps', '?')} GB/s, network {t.get('network_gbps', '?')} GB/s per GPU)"
        )
        out.append({"title": title, "svg": plots.comm_projection_chart(curves, points, title)})
    return out
