"""A campaign's points as one markdown table: measured vs predicted ROO speedup and step times,
the FLOP-ideal speedup, achieved TFLOP/s and energy per 1M impressions, plus the median absolute
error of the predicted speedup and of the predicted step time (steps >= 5 ms, the harness goal).

    python -m reports.campaign_table reports/data/h100/campaign2/*/results.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def _label(rec: dict) -> str:
    c = rec["config"]
    spec = c.get("spec", {})
    name = c.get("preset") or spec.get("name", "?")
    axes = c.get("axes") or {}
    if set(axes) <= {"preset"}:
        return name
    k = spec.get("impressions", {}).get("value")
    L = spec.get("history", {}).get("length", {}).get("value")
    return f"{name} k={k} L={L} B={spec.get('requests_per_batch')}"


def _f(v, spec: str, suffix: str = "") -> str:
    """A number formatted, or "-" where the record has none (no cost model, no CUDA, n < 5)."""
    return "-" if v is None else f"{v:{spec}}{suffix}"


def rows(records: list[dict]) -> tuple[list[str], dict]:
    out, sp_err, step_err = [], [], []
    for r in records:
        if r.get("status") != "ok":
            out.append(f"| {_label(r)} | {r.get('status')}: {str(r.get('error'))[:60]} |" + " |" * 9)  # 11 columns
            continue
        m = r["metrics"]
        imp, roo = m["layouts"]["impression"], m["layouts"]["roo"]

        def step(lay):
            return lay["step_ms"]["median"]

        def energy(lay):
            e = lay.get("energy") or {}
            v = e.get("j_per_1m_impressions")
            return "-" if v is None else f"{v:,.0f}"

        def sm_util(lay):
            # NVML's mean SM utilization over the timed steps: a low value on a slow step says the
            # GPU waits for the host (eager dispatch, syncs), which no FLOP/byte roofline prices
            return _f((lay.get("energy") or {}).get("sm_util_mean"), ".0f")

        ci = m.get("speedup_ci") or [None, None]
        ideal = m.get("ideal_speedup")
        if m.get("speedup_error") is not None:
            sp_err.append(abs(m["speedup_error"]))
        for lay in (imp, roo):
            if lay.get("step_error") is not None and step(lay) >= 5.0:
                step_err.append(abs(lay["step_error"]))
        err = m.get("speedup_error")
        out.append(
            f"| {_label(r)} | {step(imp):.1f} ({_f(imp.get('predicted_step_ms'), '.2f')}) | {step(roo):.1f} "
            f"({_f(roo.get('predicted_step_ms'), '.2f')}) | {m['speedup']:.2f}× "
            f"({_f(ci[0], '.2f')}–{_f(ci[1], '.2f')}) | {_f(m.get('predicted_speedup'), '.2f', '×')} | "
            f"{_f(None if err is None else 100 * err, '+.0f', '%')} | {_f(ideal, '.2f', '×')} | "
            f"{_f(100 * m['speedup'] / ideal if ideal else None, '.0f', '%')} | "
            f"{_f(imp.get('achieved_tflops'), '.2f')} / {_f(roo.get('achieved_tflops'), '.2f')} | "
            f"{sm_util(imp)} / {sm_util(roo)} | {energy(imp)} / {energy(roo)} |"
        )
    head = [
        "| point | impression step ms (predicted) | ROO step ms (predicted) | measured speedup (95% CI) | "
        "predicted | error | FLOP-ideal | measured / ideal | TFLOP/s imp / ROO | GPU SM util % imp / ROO | "
        "J per 1M impressions imp / ROO |",
        "|" + "---|" * 11,
    ]
    summary = {
        "points_ok": sum(r.get("status") == "ok" for r in records),
        "median_abs_speedup_error": statistics.median(sp_err) if sp_err else None,
        "median_abs_step_error_ge_5ms": statistics.median(step_err) if step_err else None,
        "steps_ge_5ms": len(step_err),
    }
    return head + out, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="results.jsonl files")
    a = ap.parse_args(argv)
    recs = []
    for p in a.paths:
        path = Path(p)
        if not path.is_file():
            print(f"campaign_table: {p}: no such file", file=sys.stderr)
            return 2
        recs += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    table, s = rows([r for r in recs if r.get("kind", "point") == "point"])
    print("\n".join(table))
    err = s["median_abs_speedup_error"]
    st = s["median_abs_step_error_ge_5ms"]
    print(
        f"\n{s['points_ok']} points ok; median |speedup error| "
        f"{'-' if err is None else f'{100 * err:.0f}%'}; median |step-time error| over {s['steps_ge_5ms']} "
        f"steps >= 5 ms {'-' if st is None else f'{100 * st:.0f}%'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
