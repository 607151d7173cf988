"""`roo-bench validate-time RESULTS... --calibration FILE`: predicted vs measured step time.

For every measured point (a sweep's results.jsonl, a bench/point record) the step-time model
(roo_ref.cost.time_model) prices both layouts from the point's spec, model config and a batch
regenerated on the CPU with the point's seed (the same distributions; `--expected` uses the spec's
expectations instead), with the calibration's kernel classes. Counted quantities the record carries
(aten ops per step, syncs per step, `graph`) are inputs, as counted FLOPs are; measured times never
are. A profile counts the syncs inside each step's range (harness.profile_step); older records also
counted the profiled loop's closing synchronize and the profiler's own (under one per step in all),
while a sync of the step itself recurs every step, so the step's own syncs are the whole part of the
count (`in_step_syncs`). Reports per point and layout the signed error, the geomean and max |error|
over points whose measured step is >= --min-step-ms, the ROO speedup's error, and for the worst
three points the predicted vs profiled time per component (`component_ms`); `--why` adds each
layout's predicted time per kernel class and the rule that made its step."""

from __future__ import annotations

import json
import math
from typing import Any

from workloads.errors import UserError
from workloads.records import Kind, emit

GROUPS = ("user", "item", "interaction", "optimizer")


def register(sub) -> None:
    p = sub.add_parser("validate-time", help="predicted vs measured step time and ROO speedup per measured point")
    p.add_argument("results", nargs="+", help="results.jsonl / point record files")
    p.add_argument("--calibration", required=True, help="a `roo-bench calibrate --json` file of the device")
    p.add_argument("--min-step-ms", type=float, default=5.0, help="summary over steps >= this (default 5)")
    p.add_argument("--expected", action="store_true", help="expected batch statistics instead of a regenerated batch")
    p.add_argument("--why", action="store_true", help="also print the predicted ms per kernel class and layout")
    p.add_argument("--json", action="store_true", help="print one JSON record")
    p.set_defaults(func=_run)


def read_points(paths: list[str]) -> list[dict]:
    """Every ok point record (enveloped or flat) in the files, in order."""
    out = []
    for path in paths:
        try:
            text = open(path, encoding="utf-8").read()
        except OSError as e:
            raise UserError(f"{path}: {e.strerror}") from None
        chunks = [text] if path.endswith(".json") else text.splitlines()
        for chunk in chunks:
            if not chunk.strip():
                continue
            try:
                obj = json.loads(chunk)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: not JSON ({e.msg})") from None
            if not isinstance(obj, dict) or obj.get("kind") != "point" or obj.get("status", "ok") != "ok":
                continue
            if isinstance(obj.get("metrics", {}).get("layouts"), dict):
                out.append(obj)
    if not out:
        raise UserError("no measured point records in " + ", ".join(paths))
    return out


def _stats(rec: dict, expected: bool):
    from roo_ref.cost.stats import batch_stats, expected_stats
    from roo_ref.model_presets import ModelConfig
    from workloads.spec import WorkloadSpec

    c = rec["config"]
    spec, cfg = WorkloadSpec.from_dict(c["spec"]), ModelConfig.from_dict(c["model"])
    R = int(c.get("requests_per_batch") or spec.requests_per_batch)
    if expected:
        return spec, cfg, expected_stats(spec, cfg, R)
    from workloads.generator import generate

    return spec, cfg, batch_stats(generate(spec, R, seed=int(c.get("seed") or 0)), cfg)


def _err(pred: float, meas: float | None) -> float | None:
    return None if not meas else pred / meas - 1.0


def in_step_syncs(profiled: float | None, profile_steps: float | None = None) -> float:
    """The step's own syncs from a profile's syncs per step: its whole part (module docstring).
    `profile_steps` is accepted for older callers and unused."""
    if not profiled:
        return 0.0
    return float(math.floor(float(profiled) + 1e-9))


def predict_point(tm, rec: dict, expected: bool = False) -> dict:
    """One point's predicted and measured steps per layout, their errors and the speedup's."""
    from roo_ref.cost.time_model import predict_layouts

    spec, cfg, stats = _stats(rec, expected)
    c, m = rec["config"], rec["metrics"]
    lays = m["layouts"]
    graph = bool(c.get("graph")) or any(bool(v.get("graph")) for v in lays.values())
    ops = {k: v["aten_ops_per_step"] for k, v in lays.items() if v.get("aten_ops_per_step")}
    syncs = {
        k: in_step_syncs(v.get("syncs_per_step"), v.get("profile_steps") or c.get("profile_steps"))
        for k, v in lays.items()
    }
    # a graph step's launch count is its replay: no count of the ops it replays
    launches = {} if graph else {k: v["launches_per_step"] for k, v in lays.items() if v.get("launches_per_step")}
    model = c.get("model_preset") or c.get("preset")
    pred = predict_layouts(tm, spec, cfg, stats, c.get("dtype", "bf16"), graph, ops, syncs, launches, model)
    out: dict[str, Any] = {"preset": c.get("preset"), "config_hash": rec.get("config_hash"), "graph": graph}
    layouts = {}
    for lay, lt in pred.items():
        meas = (lays.get(lay, {}).get("step_ms") or {}).get("median")
        layouts[lay] = {
            "predicted_ms": lt.step_s * 1e3,
            "measured_ms": meas,
            "error": _err(lt.step_s * 1e3, meas),
            "predicted": lt.to_dict(),
            "measured_component_ms": lays.get(lay, {}).get("component_ms"),
            "measured_busy_ms": lays.get(lay, {}).get("busy_ms"),
        }
    out["layouts"] = layouts
    p_sp = pred["impression"].step_s / pred["roo"].step_s
    out["speedup"] = {"predicted": p_sp, "measured": m.get("speedup"), "error": _err(p_sp, m.get("speedup"))}
    return out


def _geomean_abs(errs: list[float]) -> float | None:
    errs = [abs(e) for e in errs if e is not None]
    if not errs:
        return None
    return math.exp(sum(math.log(max(e, 1e-6)) for e in errs) / len(errs))


GRAPH_REASON = (
    "graph points are summarized apart: a replay issues no per-op host work, so their error is the device model's alone"
)


def summarize(points: list[dict], min_step_ms: float) -> dict:
    """The eager points' summary (`_summary`) and, apart, the CUDA-graph points' (GRAPH_REASON)."""
    out = _summary([p for p in points if not p["graph"]], min_step_ms)
    out["graph"] = _summary([p for p in points if p["graph"]], min_step_ms)
    out["graph"]["reason"] = GRAPH_REASON
    out["components"] = component_errors(points)
    return out


def _summary(points: list[dict], min_step_ms: float) -> dict:
    """Geomean and max |error| per layout and overall over steps >= min_step_ms, the speedup's."""
    out: dict[str, Any] = {"min_step_ms": min_step_ms}
    every = []
    for lay in ("impression", "roo"):
        errs = [
            p["layouts"][lay]["error"]
            for p in points
            if p["layouts"][lay]["error"] is not None and (p["layouts"][lay]["measured_ms"] or 0) >= min_step_ms
        ]
        every += errs
        out[lay] = {"n": len(errs), "geomean_abs_error": _geomean_abs(errs), "max_abs_error": _max_abs(errs)}
    out["step"] = {"n": len(every), "geomean_abs_error": _geomean_abs(every), "max_abs_error": _max_abs(every)}
    sp = [p["speedup"]["error"] for p in points if p["speedup"]["error"] is not None]
    out["speedup"] = {"n": len(sp), "geomean_abs_error": _geomean_abs(sp), "max_abs_error": _max_abs(sp)}
    return out


def component_errors(points: list[dict], n: int = 3) -> dict:
    """Predicted vs profiled device ms per profiler region (GROUPS) and in all (predicted device
    vs the profile's busy ms), over the eager points that carry a profile: n, geomean |error| and
    the n worst (point, layout) pairs. Device times only: no host term enters."""
    out: dict[str, Any] = {}
    for g in (*GROUPS, "device"):
        rows = []
        for p in points:
            for lay, L in p["layouts"].items():
                meas = L["measured_busy_ms"] if g == "device" else (L["measured_component_ms"] or {}).get(g)
                pred = L["predicted"]["device_ms"] if g == "device" else L["predicted"]["component_ms"].get(g, 0.0)
                if not p["graph"] and meas:
                    rows.append({"preset": p["preset"], "layout": lay, "predicted_ms": pred, "profiled_ms": meas})
        for r in rows:
            r["error"] = r["predicted_ms"] / r["profiled_ms"] - 1
        rows.sort(key=lambda r: -abs(r["error"]))
        out[g] = {"n": len(rows), "geomean_abs_error": _geomean_abs([r["error"] for r in rows]), "worst": rows[:n]}
    return out


def _max_abs(errs: list[float]) -> float | None:
    return max((abs(e) for e in errs), default=None)


def worst(points: list[dict], n: int = 3) -> list[dict]:
    """The n (point, layout) pairs with the largest |error|, with predicted vs profiled groups."""
    pairs = [
        (abs(p["layouts"][lay]["error"]), p, lay)
        for p in points
        for lay in p["layouts"]
        if p["layouts"][lay]["error"] is not None and not p["graph"]
    ]
    pairs.sort(key=lambda x: -x[0])
    out = []
    for _, p, lay in pairs[:n]:
        L = p["layouts"][lay]
        meas = L["measured_component_ms"] or {}
        pred = L["predicted"]["component_ms"]
        rows = {g: {"predicted_ms": pred.get(g, 0.0), "profiled_ms": meas.get(g)} for g in GROUPS}
        out.append({"preset": p["preset"], "layout": lay, "error": L["error"], "components": rows})
    return out


def _pct(x: float | None) -> str:
    return "   n/a" if x is None else f"{x * 100:+6.1f}%"


def _abs_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def print_why(points: list[dict]) -> None:
    """Predicted ms per kernel class (device) and the host's issue time, per point and layout."""
    print("predicted ms per kernel class (device) and host issue; the step's rule:")
    for p in points:
        for lay, L in p["layouts"].items():
            q = L["predicted"]
            ranked = sorted(q["class_ms"].items(), key=lambda x: -x[1])
            cells = ", ".join(f"{k} {v:.2f}" for k, v in ranked if v >= 0.005)
            print(f"  {str(p['preset']):<16} {lay:<10} {cells}  [{q['step_rule']}]")


def print_report(points: list[dict], summary: dict, worst_rows: list[dict], source: str) -> None:
    print(f"step-time model: {source}")
    print(f"{'preset':<16} {'layout':<10} {'pred ms':>9} {'meas ms':>9} {'error':>7}  host ms  device ms")
    for p in points:
        for lay, L in p["layouts"].items():
            meas = "n/a" if L["measured_ms"] is None else f"{L['measured_ms']:.2f}"
            q = L["predicted"]
            print(
                f"{str(p['preset']):<16} {lay:<10} {L['predicted_ms']:9.2f} {meas:>9} {_pct(L['error'])}"
                f" {q['host_ms']:8.2f} {q['device_ms']:10.2f}"
            )
        s = p["speedup"]
        ms = "n/a" if s["measured"] is None else f"{s['measured']:.2f}"
        print(f"{'':<16} {'speedup':<10} {s['predicted']:9.2f} {ms:>9} {_pct(s['error'])}")
    for title, s in (("eager points", summary), ("CUDA-graph points", summary["graph"])):
        print(f"{title}, over steps >= {summary['min_step_ms']:g} ms (geomean / max |error|):")
        if "reason" in s:
            print(f"  ({s['reason']})")
        for k in ("impression", "roo", "step", "speedup"):
            v = s[k]
            print(f"  {k:<10} n={v['n']:<3} {_abs_pct(v['geomean_abs_error'])} / {_abs_pct(v['max_abs_error'])}")
    print("device ms, predicted vs profiled per region (eager points; geomean |error|; worst three):")
    for g, v in summary["components"].items():
        worst3 = "; ".join(
            f"{w['preset']} {w['layout']} {w['predicted_ms']:.2f} vs {w['profiled_ms']:.2f}" for w in v["worst"]
        )
        print(f"  {g:<12} n={v['n']:<3} {_abs_pct(v['geomean_abs_error']):>7}  {worst3}")
    for w in worst_rows:
        print(f"worst: {w['preset']} {w['layout']} ({_pct(w['error'])}); predicted vs profiled ms:")
        for g, r in w["components"].items():
            prof = "n/a" if r["profiled_ms"] is None else f"{r['profiled_ms']:.2f}"
            print(f"    {g:<12} {r['predicted_ms']:9.2f} {prof:>9}")


def validate_time(paths: list[str], calibration: str, min_step_ms: float = 5.0, expected: bool = False) -> dict:
    from roo_ref.cost.time_model import load_calibration

    if not min_step_ms >= 0:
        raise UserError(f"--min-step-ms {min_step_ms} must be >= 0")
    tm = load_calibration(calibration)
    points = [predict_point(tm, r, expected) for r in read_points(paths)]
    summary = summarize(points, min_step_ms)
    return {"model": tm.source, "points": points, "summary": summary, "worst": worst(points)}


def _run(args) -> int:
    res = validate_time(args.results, args.calibration, args.min_step_ms, args.expected)
    if args.json:
        config = {"results": args.results, "calibration": args.calibration, "expected": args.expected}
        emit(Kind.VALIDATE, config, {"time_model": res})
    else:
        print_report(res["points"], res["summary"], res["worst"], res["model"])
        if args.why:
            print_why(res["points"])
    return 0
