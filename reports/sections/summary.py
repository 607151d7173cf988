"""Summary: first the one chart of what ROO saves here (reports.sections.headline), then per preset
ROO vs impression-level side by side, predicted (cost model, analytic bytes and FLOPs) next to
measured (storage, counted bytes and FLOPs, timed steps, NVML), plus the fleet projection. The
measured rows quote a run of the preset at its own shape (a sweep point stands for its grid only)."""

from __future__ import annotations

from collections import defaultdict

from reports.format import ci_text, fx, ms, pct, ratio, rel_error, si
from reports.loader import ResultSet, num
from reports.sections import headline
from reports.sections.common import (
    flops,
    headline_point,
    layouts,
    model_total,
    pick_format,
    preset_of,
    preset_runs,
    sharding,
    step_iqr,
    step_median,
    storage_formats,
    world,
)

# The kinds a preset's table quotes (validate records hold several presets: read per entry).
SUMMARY_KINDS = ("storage", "model", "comm", "point", "bench", "project")

# (label, total key, unit, formatter, note) of the cost-model rows; a total the model record lacks
# is skipped, except FLOPs and bytes, which every model record has
MODEL_ROWS = (
    ("FLOPs per step (fwd+bwd)", "flops", "FLOP", si, "counted FLOPs: `roo-bench validate`"),
    ("Bytes moved per step (device memory)", "bytes", "B", si, ""),
    ("All-to-all bytes per step (model)", "alltoall", "B", si, ""),
    ("Step time (cost model)", "step_ms", "", ms, ""),
)
PROJECTION_ROWS = (
    ("gpu_hours_per_day", "GPU-hours / day", "h"),
    ("storage_tb_per_day", "Storage / day", "TB"),
    ("alltoall_tb_per_day", "All-to-all / day", "TB"),
    ("energy_kwh_per_day", "Energy / day", "kWh"),
)


def build(rs: ResultSet, ok_points) -> dict:
    by = defaultdict(lambda: defaultdict(list))
    for r in rs.records:
        if r["kind"] not in SUMMARY_KINDS or (r["kind"] in ("point", "bench") and r["status"] != "ok"):
            continue
        by[preset_of(r)][r["kind"]].append(r)
    validated = _validate_rows(rs.of("validate"))
    presets = []
    for name in sorted(set(by) | set(validated)):
        recs = by[name]
        rows = _storage_rows(recs) + _model_rows(recs) + validated.get(name, []) + _comm_rows(recs)
        rows += _point_rows(recs)
        projection = _projection(recs)
        if rows or projection:
            presets.append({"name": name, "rows": rows, "projection": projection})
    out = {"presets": presets, "headline": headline.build(rs)}
    if not presets:
        out["empty"] = "No results to summarize: pass point, bench, storage, model or comm result files."
    return out


def _row(
    metric,
    source,
    imp_pred=None,
    roo_pred=None,
    imp_meas=None,
    roo_meas=None,
    gain_pred=None,
    gain_meas=None,
    fmt=si,
    unit="",
    note="",
):
    def f(v):
        return fmt(v, unit) if fmt is si else fmt(v)

    return {
        "metric": metric,
        "source": source,
        "imp_pred": f(imp_pred),
        "roo_pred": f(roo_pred),
        "imp_meas": f(imp_meas),
        "roo_meas": f(roo_meas),
        "gain_pred": fx(gain_pred),
        "gain_meas": fx(gain_meas),
        "error": pct(rel_error(gain_meas, gain_pred)),
        "note": note,
    }


def _cost_row(metric, source, imp_pred, roo_pred, imp_meas, roo_meas, **kw) -> dict:
    """A row of a cost (bytes, FLOPs): ROO's gain is impression over ROO, predicted and measured."""
    gains = ratio(imp_pred, roo_pred), ratio(imp_meas, roo_meas)
    return _row(metric, source, imp_pred, roo_pred, imp_meas, roo_meas, *gains, **kw)


def _storage_rows(recs: dict) -> list[dict]:
    rows = []
    model = recs["model"][0] if recs["model"] else None
    for st in recs["storage"]:
        fmts = storage_formats(st)
        m = st["metrics"]
        imp_n, req_n = pick_format(fmts, "grouped", "none"), pick_format(fmts, "request", "none")
        ub, n_imp = m.get("uncompressed_bytes"), num(m.get("impressions"))
        if isinstance(ub, dict) and n_imp:  # in-memory Arrow bytes: what the prediction models
            imp_n = {"bytes_per_impression": ratio(ub.get("impression"), n_imp)}
            req_n = {"bytes_per_impression": ratio(ub.get("request"), n_imp)}
        imp_bpi = imp_n and imp_n["bytes_per_impression"]
        req_bpi = req_n and req_n["bytes_per_impression"]
        rows.append(
            _row(
                "Storage, uncompressed in memory (Arrow, bytes / impression)",
                st["device_label"],
                model and model_total(model, "impression", "storage"),
                model and model_total(model, "roo", "storage"),
                imp_bpi,
                req_bpi,
                m.get("predicted_uncompressed_ratio"),
                m.get("measured_uncompressed_ratio") or ratio(imp_bpi, req_bpi),
                unit="B",
                note="decoded column bytes, what k(U+I)/(U+kI) predicts",
            )
        )
        i, q = pick_format(fmts, "grouped", "none"), pick_format(fmts, "request", "none")
        if i and q:
            rows.append(
                _row(
                    "Storage, uncompressed Parquet files (no codec, bytes / impression)",
                    st["device_label"],
                    imp_meas=i["bytes_per_impression"],
                    roo_meas=q["bytes_per_impression"],
                    gain_meas=ratio(i["bytes_per_impression"], q["bytes_per_impression"]),
                    unit="B",
                    note="file bytes: dictionary and run-length encoding apply even without a codec",
                )
            )
        for order in ("grouped", "shuffled"):
            i, q = pick_format(fmts, order, "zstd"), pick_format(fmts, "request", "zstd")
            if i and q:
                rows.append(
                    _row(
                        f"Storage, zstd, impression rows {order} (bytes / impression)",
                        st["device_label"],
                        imp_meas=i["bytes_per_impression"],
                        roo_meas=q["bytes_per_impression"],
                        gain_meas=ratio(i["bytes_per_impression"], q["bytes_per_impression"]),
                        unit="B",
                        note="measured only (compression has no analytic model)",
                    )
                )
    return rows


def _model_rows(recs: dict) -> list[dict]:
    rows = []
    for model in recs["model"]:
        dev = model["config"].get("device")
        src = "cost model (preset defaults" + (f", {dev} roofs)" if dev else ")")
        for label, key, unit, fmt, note in MODEL_ROWS:
            v_i, v_r = model_total(model, "impression", key), model_total(model, "roo", key)
            if v_i is None and key in ("alltoall", "step_ms"):
                continue
            gain = ratio(v_i, v_r)
            if key == "step_ms":
                gain = num(model["metrics"].get("predicted_speedup")) or gain
            rows.append(_row(label, src, v_i, v_r, gain_pred=gain, fmt=fmt, unit=unit, note=note))
    return rows


def _comm_rows(recs: dict) -> list[dict]:
    rows = []
    for c in sorted(recs["comm"], key=lambda c: (c["device_label"], world(c) or 0, sharding(c))):
        lay = layouts(c)
        i, r = lay.get("impression", {}), lay.get("roo", {})
        rows.append(
            _cost_row(
                f"All-to-all bytes per step (W={world(c)}, {c['config'].get('backend', '?')}, {sharding(c)})",
                c["device_label"],
                i.get("analytic_bytes_per_step"),
                r.get("analytic_bytes_per_step"),
                i.get("counted_bytes_per_step"),
                r.get("counted_bytes_per_step"),
                unit="B",
                note="predicted = analytic, measured = counted at the collective",
            )
        )
    return rows


def _point_rows(recs: dict) -> list[dict]:
    """Step time, throughput, FLOPs and energy of the run that speaks for the preset, per device: a
    point or bench run of the preset at its own shape. A device with only sweep points says so (a
    point of a grid over k or L is not the preset)."""
    by_dev = defaultdict(list)
    for p in recs["point"] + recs["bench"]:
        by_dev[p["device_label"]].append(p)
    rows = []
    for dev, pts in sorted(by_dev.items()):
        own = preset_runs(pts)
        if not own:
            rows.append(
                _row(
                    "Step time (median)",
                    dev,
                    note=f"no run of the preset at its own shape on this device; its {len(pts)} sweep point(s) "
                    "are under Sweeps (`roo-bench bench --preset NAME` measures the preset)",
                )
            )
            continue
        for kind in ("point", "bench"):
            runs = [p for p in own if p["kind"] == kind]
            if runs:
                p = headline_point(runs)
                where = f"{dev}; the preset at its own shape ({kind}" + (
                    f", 1 of {len(runs)} runs)" if len(runs) > 1 else ")"
                )
                rows += _headline_rows(p, where) if kind == "point" else _bench_rows(p, where)
    return rows


def _bench_rows(b: dict, where: str) -> list[dict]:
    """A bench record's step time (median with its IQR) and throughput; measured only."""
    lay, m = layouts(b), b["metrics"]
    i, r = lay.get("impression") or {}, lay.get("roo") or {}
    iqr = f"IQR {ms(step_iqr(i))} / {ms(step_iqr(r))}; speedup CI {ci_text(m)}"
    return [
        _row(
            "Step time (median)",
            where,
            imp_meas=step_median(i),
            roo_meas=step_median(r),
            gain_meas=m.get("speedup") or ratio(step_median(i), step_median(r)),
            fmt=ms,
            note=iqr,
        ),
        _row(
            "Throughput (impressions / s)",
            where,
            imp_meas=i.get("impressions_per_s"),
            roo_meas=r.get("impressions_per_s"),
            gain_meas=ratio(r.get("impressions_per_s"), i.get("impressions_per_s")),
            unit="/s",
            note="same impressions per step in both layouts",
        ),
    ]


def _validate_rows(recs: list[dict]) -> dict[str, list[dict]]:
    """Per preset, the analytic FLOPs of `roo-bench validate` next to what FlopCounterMode counted
    (at validate's reduced sizes and batch, not the preset's step)."""
    out: dict[str, list[dict]] = defaultdict(list)
    for v in recs:
        by = defaultdict(dict)
        for e in v["metrics"].get("presets") or []:
            if isinstance(e, dict) and e.get("layout") in ("impression", "roo"):
                by[str(e.get("preset"))][e["layout"]] = e
        size = "reduced sizes" if v["config"].get("reduced", True) else "full sizes"
        for name, lay in by.items():
            i, r = lay.get("impression") or {}, lay.get("roo") or {}
            n = f"{i.get('requests', '?')} requests, {i.get('impressions', '?')} impressions"
            out[name].append(
                _cost_row(
                    f"FLOPs per step, validate ({size}, {n})",
                    f"{v['device_label']}; validate",
                    i.get("analytic_flops"),
                    r.get("analytic_flops"),
                    i.get("counted_flops"),
                    r.get("counted_flops"),
                    unit="FLOP",
                    note="predicted = analytic cost model, measured = counted by FlopCounterMode",
                )
            )
    return out


def _headline_rows(p: dict, where: str) -> list[dict]:
    lay, m = layouts(p), p["metrics"]
    i, r = lay["impression"], lay["roo"]
    tp = [ratio(num(x.get("impressions_per_step")), (num(x.get("predicted_step_ms")) or 0) / 1e3) for x in (i, r)]
    rows = [
        _row(
            "Step time (median)",
            where,
            i.get("predicted_step_ms"),
            r.get("predicted_step_ms"),
            step_median(i),
            step_median(r),
            m.get("predicted_speedup"),
            m.get("speedup"),
            fmt=ms,
            note=f"speedup CI {ci_text(m)}",
        ),
        _row(
            "Throughput (impressions / s)",
            where,
            tp[0],
            tp[1],
            i.get("impressions_per_s"),
            r.get("impressions_per_s"),
            ratio(tp[1], tp[0]),
            ratio(r.get("impressions_per_s"), i.get("impressions_per_s")),
            unit="/s",
            note="same impressions per step in both layouts",
        ),
        _row(
            "FLOPs per step (counted)",
            where,
            imp_meas=flops(i),
            roo_meas=flops(r),
            gain_meas=ratio(flops(i), flops(r)),
            unit="FLOP",
            note={
                True: "masked (causal/target) work counted",
                False: "masked (causal/target) work not counted",
            }.get(i.get("flops_masked_counted"), "whether masked work is counted: not recorded"),
        ),
    ]
    ei, er = i.get("energy") or {}, r.get("energy") or {}
    if ei.get("available") and er.get("available"):
        rows.append(
            _row(
                "Energy per 1M impressions",
                where,
                imp_meas=ei.get("j_per_1m_impressions"),
                roo_meas=er.get("j_per_1m_impressions"),
                gain_meas=ratio(ei.get("j_per_1m_impressions"), er.get("j_per_1m_impressions")),
                unit="J",
                note="NVML",
            )
        )
    else:
        rows.append(
            _row(
                "Energy per 1M impressions",
                where,
                note="not measured: " + str(ei.get("reason") or er.get("reason") or "no NVML data"),
            )
        )
    return rows


def _projection(recs: dict) -> list[dict]:
    projection = []
    for pr in recs["project"]:
        lay, sav = layouts(pr), pr["metrics"].get("savings") or {}
        for key, label, unit in PROJECTION_ROWS:
            i, r = (lay.get("impression") or {}).get(key), (lay.get("roo") or {}).get(key)
            s = sav.get(key) if isinstance(sav, dict) else None
            projection.append(
                {
                    "metric": label,
                    "imp": si(i, unit),
                    "roo": si(r, unit),
                    "saving": pct(s, signed=False)
                    if num(s) is not None
                    else pct((1 - ratio(r, i)) if ratio(r, i) is not None else None, signed=False),
                }
            )
        # the inputs sit in config (records) or beside the outputs (bare --json of older versions)
        m = {**pr["metrics"], **pr.get("config", {})}
        proj_head = (
            f"Projection: {si(m.get('requests_per_day'))} requests/day on {m.get('gpus', '?')} × {m.get('device', '?')}"
        )
        projection.insert(0, {"head": proj_head})
    return projection
