"""The report's first screen: what ROO saves here, in one chart. Four quantities, impression-level vs
ROO, for one workload (the one the results say most about): stored bytes (a storage record), FLOPs
per step (counted at the preset's shape, else the cost model), measured step time and energy per
impression (a run of the preset at its own shape). Each comes from the record that measured it,
which its label names; a quantity no record gives says so and which command gives it."""

from __future__ import annotations

from collections import defaultdict

from reports import plots
from reports.format import fx, ms, pct, ratio, si
from reports.loader import ResultSet, num
from reports.sections.common import (
    flops,
    is_preset_shape,
    layouts,
    model_total,
    pick_format,
    preset_of,
    preset_runs,
    short_path,
    step_median,
    storage_formats,
)

KINDS = ("storage", "model", "point", "bench")
CODECS = ("zstd", "snappy", "none")


def build(rs: ResultSet) -> dict | None:
    """{name, chart, rows, sentence, others} of the workload with the most of the four quantities
    (ties: one with a storage record, then by name); None when no record gives any."""
    by: dict = defaultdict(lambda: defaultdict(list))
    for r in rs.records:
        if r["kind"] in KINDS and r["status"] == "ok":
            by[preset_of(r)][r["kind"]].append(r)
    if not by:
        return None
    quantities = {name: _quantities(name, recs) for name, recs in by.items()}
    name = max(
        sorted(quantities),
        key=lambda n: (sum(q["imp"] is not None for q in quantities[n]), bool(by[n]["storage"])),
    )
    qs = quantities[name]
    if all(q["imp"] is None for q in qs):
        return None
    return {
        "name": name,
        "chart": plots.savings_chart(qs, f"What ROO saves: {name}"),
        "rows": [_row(q) for q in qs],
        "sentence": _sentence(name, qs),
        "others": sorted(n for n in quantities if n != name),
    }


def _quantity(key, label, unit, imp=None, roo=None, source="", missing="") -> dict:
    ok = num(imp) is not None and num(roo) is not None
    return {
        "key": key,
        "label": label,
        "unit": unit,
        "imp": num(imp) if ok else None,
        "roo": num(roo) if ok else None,
        "source": source if ok else "",
        "missing": "" if ok else missing,
    }


def _quantities(name: str, recs: dict) -> list[dict]:
    runs = sorted(preset_runs(recs["point"] + recs["bench"]), key=_run_rank)
    return [
        _bytes(name, recs["storage"]),
        _flops(name, [r for r in runs if r["kind"] == "point"], recs["model"]),
        _time(name, runs, [p for p in recs["point"] if not is_preset_shape(p)]),
        _energy(name, runs),
    ]


def _run_rank(r: dict) -> tuple:
    """Which run of the preset speaks for it: one with energy, on a GPU, a point over a bench, newest."""
    lay = layouts(r)
    energy = all((x.get("energy") or {}).get("available") for x in lay.values()) and bool(lay)
    gpu = not r["device_label"].startswith("CPU")
    return (not energy, not gpu, r["kind"] != "point", str(r["provenance"].get("created_utc") or ""))


def _where(r: dict) -> str:
    return f"{r['device_label']}, {short_path(r['source'].path)}"


def _bytes(name: str, storage: list[dict]) -> dict:
    for st in storage:
        fmts = storage_formats(st)
        for codec in CODECS:
            g, q = pick_format(fmts, "grouped", codec), pick_format(fmts, "request", codec)
            if g and q:
                s = pick_format(fmts, "shuffled", codec)
                shuffled = ratio(s and s["bytes_per_impression"], q["bytes_per_impression"])
                return _quantity(
                    "bytes",
                    "Stored bytes per impression",
                    "B",
                    g["bytes_per_impression"],
                    q["bytes_per_impression"],
                    f"Parquet {codec} files, impression rows grouped by request"
                    + (f" (shuffled: {fx(shuffled)})" if shuffled else "")
                    + f" — {_where(st)}",
                )
    return _quantity(
        "bytes",
        "Stored bytes per impression",
        "B",
        missing=f"no storage measurement of {name}: `roo-bench storage --preset {name} --json`",
    )


def _flops(name: str, points: list[dict], models: list[dict]) -> dict:
    label = "FLOPs per step (fwd+bwd)"
    for p in points:
        lay = layouts(p)
        i, r = lay.get("impression") or {}, lay.get("roo") or {}
        if num(i.get("flops_counted_per_step")) and num(r.get("flops_counted_per_step")):
            src = f"counted (FlopCounterMode) at the preset's shape — {_where(p)}"
            return _quantity("flops", label, "FLOP", i["flops_counted_per_step"], r["flops_counted_per_step"], src)
        if flops(i) and flops(r):
            return _quantity("flops", label, "FLOP", flops(i), flops(r), f"cost model at the run's shape — {_where(p)}")
    for m in models:
        i, r = model_total(m, "impression", "flops"), model_total(m, "roo", "flops")
        if i and r:
            return _quantity(
                "flops", label, "FLOP", i, r, f"cost model, preset defaults — {short_path(m['source'].path)}"
            )
    return _quantity(
        "flops", label, "FLOP", missing=f"no FLOP count of {name}: `roo-bench model --preset {name} --json`"
    )


def _time(name: str, runs: list[dict], sweep_points: list[dict]) -> dict:
    label = "Measured step time (same impressions)"
    for r in runs:
        lay = layouts(r)
        i, o = step_median(lay.get("impression") or {}), step_median(lay.get("roo") or {})
        if i and o:
            return _quantity("time", label, "s", i / 1e3, o / 1e3, f"median step, {r['kind']} — {_where(r)}")
    why = f"no run of {name} at its own shape: `roo-bench bench --preset {name} --json`"
    if sweep_points:
        why += f" (its {len(sweep_points)} sweep point(s) are under Sweeps)"
    return _quantity("time", label, "s", missing=why)


def _energy(name: str, runs: list[dict]) -> dict:
    label = "Energy per 1M impressions (NVML)"
    reasons = []
    for r in runs:
        lay = layouts(r)
        e = [(lay.get(x) or {}).get("energy") or {} for x in ("impression", "roo")]
        if all(x.get("available") for x in e):
            src = f"NVML over the timed steps — {_where(r)}"
            return _quantity("energy", label, "J", e[0]["j_per_1m_impressions"], e[1]["j_per_1m_impressions"], src)
        reasons += [str(x["reason"]) for x in e if x.get("reason")]
    why = f"not measured: {reasons[0]}" if reasons else f"no run of {name} measured energy (NVML needs a GPU)"
    return _quantity("energy", label, "J", missing=why)


def _fmt(v, unit: str) -> str:
    return ms(None if v is None else v * 1e3) if unit == "s" else si(v, unit)


def _row(q: dict) -> dict:
    rel = ratio(q["roo"], q["imp"])
    saving = (
        "" if rel is None else pct(1 - rel, signed=False) if rel <= 1 else f"none: {pct(rel - 1, signed=False)} more"
    )
    return {
        "label": q["label"],
        "imp": _fmt(q["imp"], q["unit"]),
        "roo": _fmt(q["roo"], q["unit"]),
        "gain": fx(ratio(q["imp"], q["roo"])),
        "saving": saving,
        "source": q["source"] or q["missing"],
        "missing": bool(q["missing"]),
    }


# (fewer, more) wording per quantity of the first screen's sentence
WORDS = {
    "bytes": ("fewer stored bytes", "more stored bytes"),
    "flops": ("fewer FLOPs", "more FLOPs"),
    "time": ("shorter training steps", "longer training steps"),
    "energy": ("less energy per impression", "more energy per impression"),
}


def _sentence(name: str, qs: list[dict]) -> str:
    """'On early-ranking, ROO needs 2.01× fewer stored bytes, ... than impression-level training.'"""
    parts = []
    for q in qs:
        if q["imp"] is not None:
            gain = q["imp"] / q["roo"]
            fewer, more = WORDS[q["key"]]
            parts.append(f"{fx(gain)} {fewer}" if gain >= 1 else f"{fx(1 / gain)} {more}")
    missing = [WORDS[q["key"]][0].split(" ", 1)[1] for q in qs if q["imp"] is None]
    text = f"On {name}, ROO needs " + ", ".join(parts) + " than impression-level training"
    return text + (f"; not measured here: {', '.join(missing)}." if missing else ".")
