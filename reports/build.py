"""Turn a ResultSet into the report's sections (plain dicts of preformatted strings + inline SVG).

Every section is always present; one with no data carries an `empty` sentence saying what is missing
and which command produces it, rather than disappearing.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from reports import plots
from reports.loader import LAYOUTS, ResultSet, num

NOISE_LIMIT = 0.10  # IQR/median above this marks a point as noisy
STANDARD_CONFIG_KEYS = {
    "preset",
    "spec",
    "model",
    "device",
    "dtype",
    "backend",
    "warmup",
    "steps",
    "seed",
    "sweep",
    "name",
    "headline",
}
AXIS_NAMES = {
    "impressions_per_request": "impressions per request (k)",
    "k": "impressions per request (k)",
    "history_length": "history length (L)",
    "history_len": "history length (L)",
    "L": "history length (L)",
    "mean_impressions_per_request": "mean impressions per request (measured)",
}
# Fallback roofs when no calibration record exists for a device: datasheet figures (dense).
# (TFLOP/s bf16, TFLOP/s fp32, TB/s) — the same leads as harness/devices.py; reports only read files.
DATASHEET = {"h200": (989.0, 67.0, 4.8), "h100": (989.0, 67.0, 3.35), "a100": (312.0, 19.5, 2.04)}
SECTIONS = [
    ("summary", "Summary: ROO vs impression-level, predicted and measured"),
    ("storage", "Storage: layout × row order × codec"),
    ("compute", "Compute: cost per model component"),
    ("sweeps", "Sweeps: speedup vs impressions per request and history length"),
    ("communication", "Communication: embedding all-to-all per step"),
    ("energy", "Energy and utilization (NVML)"),
    ("provenance", "Provenance and warnings"),
]


# --- formatting --------------------------------------------------------------------------------
def si(v, unit: str = "", digits: int = 3) -> str:
    v = num(v)
    if v is None:
        return "—"
    for p, f in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.{digits}g} {p}{unit}".rstrip()
    return f"{v:.{digits}g} {unit}".rstrip()


def fx(v) -> str:
    v = num(v)
    return "—" if v is None else f"{v:.2f}×"


def pct(v, signed: bool = True) -> str:
    v = num(v)
    if v is None:
        return "—"
    return f"{v * 100:+.1f}%" if signed else f"{v * 100:.1f}%"


def ms(v) -> str:
    v = num(v)
    return "—" if v is None else f"{v:.4g} ms"


def _ratio(a, b):
    a, b = num(a), num(b)
    return a / b if a is not None and b not in (None, 0.0) else None


def _err(meas, pred):
    r = _ratio(meas, pred)
    return None if r is None else r - 1


# --- helpers over records ----------------------------------------------------------------------
def preset_of(rec: dict) -> str:
    m = rec["metrics"]
    return str(
        rec["config"].get("preset")
        or m.get("preset")
        or (rec["config"].get("spec") or {}).get("name")
        or "(unnamed)"
    )


def sweep_axes(rec: dict) -> dict:
    """The sweep coordinates of a point: `config.axes` (harness/sweep.py labels; dict-valued labels
    flattened), else `config.sweep`, else numeric top-level config keys beyond the standard ones."""
    cfg = rec["config"]
    for key in ("axes", "sweep"):
        if isinstance(cfg.get(key), dict) and cfg[key]:
            return _flatten(cfg[key])
    return {k: v for k, v in cfg.items() if k not in STANDARD_CONFIG_KEYS and num(v) is not None}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def axis_name(axis: str) -> str:
    if axis in AXIS_NAMES:
        return AXIS_NAMES[axis]
    a = axis.lower()
    if "impressions" in a and not a.endswith(("kind", "max", "min")):
        return f"impressions per request (k; {axis})"
    if "history" in a and "length" in a and not a.endswith(("kind", "max", "min")):
        return f"history length (L; {axis})"
    return axis.replace("_", " ")


def axes_text(rec: dict) -> str:
    ax = sweep_axes(rec)
    return ", ".join(f"{k}={v}" for k, v in ax.items()) if ax else "defaults"


def layouts(rec: dict) -> dict:
    lay = rec["metrics"].get("layouts")
    if isinstance(lay, dict):
        return {k: v for k, v in lay.items() if k in LAYOUTS and isinstance(v, dict)}
    return {k: rec["metrics"][k] for k in LAYOUTS if isinstance(rec["metrics"].get(k), dict)}


def step_median(lay: dict):
    s = lay.get("step_ms")
    return num(s.get("median")) if isinstance(s, dict) else num(s)


def _flops(lay: dict):
    """FLOPs per step of a layout: the record's (predicted or counted) figure, else the counted one."""
    return num(lay.get("flops_per_step")) or num(lay.get("flops_counted_per_step"))


def noise(lay: dict):
    s = lay.get("step_ms")
    if not isinstance(s, dict):
        return None
    return _ratio(s.get("iqr"), s.get("median"))


def model_total(rec: dict, layout: str, key: str):
    """A per-layout total from `totals`, summed from `components` when `totals` lacks it."""
    t = (rec["metrics"].get("totals") or {}).get(layout) or {}
    if key == "flops":
        v = num(t.get("flops"))
        if v is None and (num(t.get("fwd_flops")) is not None or num(t.get("bwd_flops")) is not None):
            v = (num(t.get("fwd_flops")) or 0.0) + (num(t.get("bwd_flops")) or 0.0)
        if v is None:
            comps = [c for c in components(rec) if c["layout"] == layout]
            v = sum(c["flops"] for c in comps) if comps else None
        return v
    if key == "bytes":
        v = num(t.get("bytes"))
        if v is None:
            comps = [c for c in components(rec) if c["layout"] == layout]
            v = sum(c["bytes"] or 0.0 for c in comps) if comps else None
        return v
    for alias in {
        "alltoall": ("alltoall_bytes", "all_to_all_bytes", "a2a_bytes", "comm_bytes"),
        "storage": ("storage_bytes_per_impression", "bytes_per_impression"),
        "step_ms": ("predicted_step_ms", "step_ms"),
    }.get(key, (key,)):
        if num(t.get(alias)) is not None:
            return num(t.get(alias))
    return None


def components(rec: dict) -> list[dict]:
    out = []
    for c in rec["metrics"].get("components") or []:
        if not isinstance(c, dict) or c.get("layout") not in LAYOUTS:
            continue
        fwd, bwd = num(c.get("fwd_flops")) or 0.0, num(c.get("bwd_flops")) or 0.0
        out.append(
            {
                "name": str(c.get("name", "?")),
                "layout": c["layout"],
                "fwd": fwd,
                "bwd": bwd,
                "flops": fwd + bwd,
                "bytes": num(c.get("bytes")),
            }
        )
    return out


def storage_formats(rec: dict) -> list[dict]:
    out = []
    for f in rec["metrics"].get("formats") or []:
        if not isinstance(f, dict):
            continue
        layout = str(f.get("layout", ""))
        order = str(f.get("order") or "grouped")
        series = (
            "request" if layout in ("request", "roo") else ("shuffled" if order == "shuffled" else "grouped")
        )
        out.append(
            {
                "layout": layout,
                "order": order,
                "codec": str(f.get("codec", "none")),
                "series": series,
                "file_bytes": num(f.get("file_bytes")),
                "bytes_per_impression": num(f.get("bytes_per_impression")),
                "write_s": num(f.get("write_s")),
                "read_s": num(f.get("read_s")),
                "memory_bytes": num(f.get("memory_bytes")),
            }
        )
    return out


def _pick_format(fmts, series, codec):
    for f in fmts:
        if f["series"] == series and f["codec"] == codec:
            return f
    return None


def headline_point(points: list[dict]) -> dict:
    """The point a summary row quotes: one marked `headline`, else the one with the median measured
    speedup (neither the best nor the worst configuration of a sweep)."""
    for p in points:
        if p["config"].get("headline"):
            return p
    # a run of the preset at its own shape (no overrides) speaks for the preset better than any
    # point of a sweep over k or L
    own = [p for p in points if is_preset_shape(p)]
    pts = sorted(own or points, key=lambda p: num(p["metrics"].get("speedup")) or 0.0)
    return pts[(len(pts) - 1) // 2]


def is_preset_shape(p: dict) -> bool:
    c = p["config"]
    return not c.get("spec_overrides") and not c.get("model_overrides") and c.get("requests_per_batch") is None


# --- sections ----------------------------------------------------------------------------------
def build_context(rs: ResultSet, title: str, extra_notes: list[str] | None = None) -> dict:
    ok_points = [p for p in rs.of("point") if p["status"] == "ok"]
    ctx = {
        "title": title,
        "sections": [],
        "warnings": list(rs.warnings),
        "files": rs.files,
        "n_records": len(rs.records),
        "kinds": dict(Counter(r["kind"] for r in rs.records)),
    }
    demo_notes = []
    for d in rs.of("demo"):
        for s in d["metrics"].get("stages", []):
            if isinstance(s, dict) and s.get("status") != "ok":
                demo_notes.append(f"demo stage {s.get('stage')}: {s.get('status')} — {s.get('reason')}")
    ctx["demo_notes"] = demo_notes + list(extra_notes or [])
    ctx["devices"] = sorted(
        {r["device_label"] for r in rs.records if r["kind"] in ("point", "comm", "calibration")}
    )
    builders = {
        "summary": _summary,
        "storage": _storage,
        "compute": _compute,
        "sweeps": _sweeps,
        "communication": _comm,
        "energy": _energy,
        "provenance": _provenance,
    }
    for sid, heading in SECTIONS:
        sec = {"id": sid, "title": heading, "empty": None}
        sec.update(builders[sid](rs, ok_points))
        ctx["sections"].append(sec)
    # Provenance-derived warnings go into the header count too.
    ctx["n_warnings"] = len(ctx["warnings"]) + len(ctx["sections"][-1]["point_warnings"])
    return ctx


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
        "error": pct(_err(gain_meas, gain_pred)),
        "note": note,
    }


def _summary(rs: ResultSet, ok_points) -> dict:
    by = defaultdict(lambda: defaultdict(list))
    for r in rs.records:
        if r["kind"] in ("demo", "calibration") or (r["kind"] == "point" and r["status"] != "ok"):
            continue
        by[preset_of(r)][r["kind"]].append(r)
    presets = []
    for name in sorted(by):
        recs = by[name]
        rows = []
        for st in recs["storage"]:
            fmts = storage_formats(st)
            m = st["metrics"]
            model = recs["model"][0] if recs["model"] else None
            imp_n, req_n = _pick_format(fmts, "grouped", "none"), _pick_format(fmts, "request", "none")
            ub, n_imp = m.get("uncompressed_bytes"), num(m.get("impressions"))
            if isinstance(ub, dict) and n_imp:  # in-memory Arrow bytes: what the prediction models
                imp_n = {"bytes_per_impression": _ratio(ub.get("impression"), n_imp)}
                req_n = {"bytes_per_impression": _ratio(ub.get("request"), n_imp)}
            rows.append(
                _row(
                    "Storage, uncompressed (bytes / impression)",
                    st["device_label"],
                    model and model_total(model, "impression", "storage"),
                    model and model_total(model, "roo", "storage"),
                    imp_n and imp_n["bytes_per_impression"],
                    req_n and req_n["bytes_per_impression"],
                    m.get("predicted_uncompressed_ratio"),
                    m.get("measured_uncompressed_ratio")
                    or _ratio(
                        imp_n and imp_n["bytes_per_impression"], req_n and req_n["bytes_per_impression"]
                    ),
                    unit="B",
                    note="predicted k(U+I)/(U+kI)",
                )
            )
            for order in ("grouped", "shuffled"):
                i, q = _pick_format(fmts, order, "zstd"), _pick_format(fmts, "request", "zstd")
                if i and q:
                    rows.append(
                        _row(
                            f"Storage, zstd, impression rows {order} (bytes / impression)",
                            st["device_label"],
                            imp_meas=i["bytes_per_impression"],
                            roo_meas=q["bytes_per_impression"],
                            gain_meas=_ratio(i["bytes_per_impression"], q["bytes_per_impression"]),
                            unit="B",
                            note="measured only (compression has no analytic model)",
                        )
                    )
        for model in recs["model"]:
            dev = model["config"].get("device")
            src = "cost model (preset defaults" + (f", {dev} roofs)" if dev else ")")
            # (label, total, unit, formatter, note); a total the model record lacks is skipped,
            # except FLOPs and bytes, which every model record has
            for label, key, unit, fmt, note in (
                ("FLOPs per step (fwd+bwd)", "flops", "FLOP", si, "counted FLOPs: `roo-bench validate`"),
                ("Bytes moved per step (device memory)", "bytes", "B", si, ""),
                ("All-to-all bytes per step (model)", "alltoall", "B", si, ""),
                ("Step time (cost model)", "step_ms", "", ms, ""),
            ):
                v_i, v_r = model_total(model, "impression", key), model_total(model, "roo", key)
                if v_i is None and key in ("alltoall", "step_ms"):
                    continue
                gain = _ratio(v_i, v_r)
                if key == "step_ms":
                    gain = num(model["metrics"].get("predicted_speedup")) or gain
                rows.append(_row(label, src, v_i, v_r, gain_pred=gain, fmt=fmt, unit=unit, note=note))
        for c in sorted(recs["comm"], key=lambda c: (c["device_label"], _world(c) or 0)):
            lay = layouts(c)
            i, r = lay.get("impression", {}), lay.get("roo", {})
            rows.append(
                _row(
                    f"All-to-all bytes per step (W={_world(c)}, {c['config'].get('backend', '?')})",
                    c["device_label"],
                    i.get("analytic_bytes_per_step"),
                    r.get("analytic_bytes_per_step"),
                    i.get("counted_bytes_per_step"),
                    r.get("counted_bytes_per_step"),
                    _ratio(i.get("analytic_bytes_per_step"), r.get("analytic_bytes_per_step")),
                    _ratio(i.get("counted_bytes_per_step"), r.get("counted_bytes_per_step")),
                    unit="B",
                    note="predicted = analytic, measured = counted at the collective",
                )
            )
        pts_by_dev = defaultdict(list)
        for p in recs["point"]:
            pts_by_dev[p["device_label"]].append(p)
        for dev, pts in sorted(pts_by_dev.items()):
            p = headline_point(pts)
            lay, m = layouts(p), p["metrics"]
            i, r = lay["impression"], lay["roo"]
            where = f"{dev}; {axes_text(p)}" + (
                "; the preset at its own shape" if is_preset_shape(p) and len(pts) > 1
                else f"; the median-speedup point of {len(pts)}" if len(pts) > 1 else ""
            )
            rows.append(
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
                    note=f"speedup CI {_ci(m)}",
                )
            )
            tp = [
                _ratio(num(x.get("impressions_per_step")), (num(x.get("predicted_step_ms")) or 0) / 1e3)
                for x in (i, r)
            ]
            rows.append(
                _row(
                    "Throughput (impressions / s)",
                    where,
                    tp[0],
                    tp[1],
                    i.get("impressions_per_s"),
                    r.get("impressions_per_s"),
                    _ratio(tp[1], tp[0]),
                    _ratio(r.get("impressions_per_s"), i.get("impressions_per_s")),
                    unit="/s",
                    note="same impressions per step in both layouts",
                )
            )
            rows.append(
                _row(
                    "FLOPs per step (counted)",
                    where,
                    imp_meas=_flops(i),
                    roo_meas=_flops(r),
                    gain_meas=_ratio(_flops(i), _flops(r)),
                    unit="FLOP",
                    note={
                        True: "masked (causal/target) work counted",
                        False: "masked (causal/target) work not counted",
                    }.get(i.get("flops_masked_counted"), "whether masked work is counted: not recorded"),
                )
            )
            ei, er = i.get("energy") or {}, r.get("energy") or {}
            if ei.get("available") and er.get("available"):
                rows.append(
                    _row(
                        "Energy per 1M impressions",
                        where,
                        imp_meas=ei.get("j_per_1m_impressions"),
                        roo_meas=er.get("j_per_1m_impressions"),
                        gain_meas=_ratio(ei.get("j_per_1m_impressions"), er.get("j_per_1m_impressions")),
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
        projection = []
        for pr in recs["project"]:
            lay, sav = layouts(pr), pr["metrics"].get("savings") or {}
            for key, label, unit in (
                ("gpu_hours_per_day", "GPU-hours / day", "h"),
                ("storage_tb_per_day", "Storage / day", "TB"),
                ("alltoall_tb_per_day", "All-to-all / day", "TB"),
                ("energy_kwh_per_day", "Energy / day", "kWh"),
            ):
                i, r = (lay.get("impression") or {}).get(key), (lay.get("roo") or {}).get(key)
                s = sav.get(key) if isinstance(sav, dict) else None
                projection.append(
                    {
                        "metric": label,
                        "imp": si(i, unit),
                        "roo": si(r, unit),
                        "saving": pct(s, signed=False)
                        if num(s) is not None
                        else pct((1 - _ratio(r, i)) if _ratio(r, i) is not None else None, signed=False),
                    }
                )
            m = pr["metrics"]
            proj_head = (
                f"Projection: {si(m.get('requests_per_day'))} requests/day on {m.get('gpus', '?')} × "
                f"{m.get('device', '?')}"
            )
            projection.insert(0, {"head": proj_head})
        if rows or projection:
            presets.append({"name": name, "rows": rows, "projection": projection})
    if not presets:
        return {
            "presets": [],
            "empty": "No results to summarize: pass point, storage, model or comm result files.",
        }
    return {"presets": presets}


def _ci(m) -> str:
    ci = m.get("speedup_ci")
    if isinstance(ci, list) and len(ci) == 2 and num(ci[0]) is not None and num(ci[1]) is not None:
        return f"[{num(ci[0]):.2f}, {num(ci[1]):.2f}]"
    return "—"


def _world(c):
    for k in ("nproc", "world_size", "world"):
        for d in (c["config"], c["metrics"]):
            if num(d.get(k)) is not None:
                return int(num(d[k]))
    return None


def _storage(rs: ResultSet, ok_points) -> dict:
    items = []
    for st in rs.of("storage"):
        fmts = storage_formats(st)
        if not fmts:
            continue
        m = st["metrics"]
        name = preset_of(st)
        rows = []
        for f in sorted(
            fmts, key=lambda f: (f["codec"], ("request", "grouped", "shuffled").index(f["series"]))
        ):
            base = _pick_format(fmts, "request", f["codec"])
            rows.append(
                {
                    "layout": f["layout"],
                    "order": f["order"],
                    "codec": f["codec"],
                    "file_bytes": si(f["file_bytes"], "B"),
                    "bpi": si(f["bytes_per_impression"], "B"),
                    "vs_request": fx(
                        _ratio(f["bytes_per_impression"], base and base["bytes_per_impression"])
                    ),
                    "write_s": _secs(f["write_s"]),
                    "read_s": _secs(f["read_s"]),
                    "memory": si(f["memory_bytes"], "B"),
                    "highlight": f["series"] == "shuffled" and f["codec"] == "zstd",
                }
            )
        findings = []
        for codec in ("zstd", "snappy"):
            q, g, s = (_pick_format(fmts, k, codec) for k in ("request", "grouped", "shuffled"))
            if q and g and s:
                bpi = "bytes_per_impression"
                findings.append(
                    f"With {codec}, impression-level rows kept grouped by request cost "
                    f"{fx(_ratio(g[bpi], q[bpi]))} the request-level bytes; "
                    f"shuffled (as training shuffles produce) they cost "
                    f"{fx(_ratio(s[bpi], q[bpi]))}. Reading them takes "
                    f"{fx(_ratio(g['read_s'], q['read_s']))} / "
                    f"{fx(_ratio(s['read_s'], q['read_s']))} as long, "
                    f"with {fx(_ratio(g['memory_bytes'], q['memory_bytes']))} the in-memory bytes."
                )
                break
        items.append(
            {
                "name": name,
                "source": st["device_label"],
                "where": st["source"].where,
                "chart": plots.storage_chart(fmts, name),
                "rows": rows,
                "findings": findings,
                "pred_ratio": fx(m.get("predicted_uncompressed_ratio")),
                "meas_ratio": fx(m.get("measured_uncompressed_ratio")),
                "ratio_error": pct(
                    _err(m.get("measured_uncompressed_ratio"), m.get("predicted_uncompressed_ratio"))
                ),
                "counts": ", ".join(f"{k}={m[k]}" for k in ("requests", "impressions") if k in m),
            }
        )
    if not items:
        return {
            "items": [],
            "empty": "No storage results: run `roo-bench storage --preset NAME --json` and pass its output.",
        }
    return {"items": items}


def _secs(v) -> str:
    v = num(v)
    return "—" if v is None else f"{v:.3g} s"


def _compute(rs: ResultSet, ok_points) -> dict:
    items = []
    for mr in rs.of("model"):
        comps = components(mr)
        if not comps:
            continue
        names = list(dict.fromkeys(c["name"] for c in comps))
        rows = []
        for n in names:
            v = {lay: [c for c in comps if c["name"] == n and c["layout"] == lay] for lay in LAYOUTS}
            fi, fr = sum(c["flops"] for c in v["impression"]), sum(c["flops"] for c in v["roo"])
            bi, br = (sum(c["bytes"] or 0 for c in v["impression"]), sum(c["bytes"] or 0 for c in v["roo"]))
            rows.append(
                {
                    "name": n,
                    "flops_imp": si(fi, "FLOP"),
                    "flops_roo": si(fr, "FLOP"),
                    "flops_gain": "ROO only" if fi == 0 and fr > 0 else fx(_ratio(fi, fr)),
                    "bytes_imp": si(bi, "B"),
                    "bytes_roo": si(br, "B"),
                    "bytes_gain": "ROO only" if bi == 0 and br > 0 else fx(_ratio(bi, br)),
                }
            )
        ti, tr = model_total(mr, "impression", "flops"), model_total(mr, "roo", "flops")
        m = mr["metrics"]
        items.append(
            {
                "name": preset_of(mr),
                "where": mr["source"].where,
                "chart": plots.compute_chart(comps, preset_of(mr)),
                "rows": rows,
                "total_imp": si(ti, "FLOP"),
                "total_roo": si(tr, "FLOP"),
                "total_gain": fx(_ratio(ti, tr)),
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


def _sweeps(rs: ResultSet, ok_points) -> dict:
    by_preset = defaultdict(list)
    for p in rs.of("point"):
        by_preset[preset_of(p)].append(p)
    charts, rooflines, table = [], [], []
    for name in sorted(by_preset):
        pts = by_preset[name]
        ok = [p for p in pts if p["status"] == "ok"]
        axes = _varying_axes(ok)
        for axis in axes:
            others = [a for a in axes if a != axis]
            mode = {a: Counter(_axis_val(p, a) for p in ok).most_common(1)[0][0] for a in others}

            def in_slice(p, others=others, mode=mode):
                return all(_axis_val(p, a) == mode[a] for a in others)

            series = []
            for dev in sorted({p["device_label"] for p in ok}):
                sl = [
                    p
                    for p in ok
                    if p["device_label"] == dev and in_slice(p) and _axis_val(p, axis) is not None
                ]
                if len(sl) < 2:
                    continue
                m = [p["metrics"] for p in sl]
                ci = [
                    x.get("speedup_ci") if isinstance(x.get("speedup_ci"), list) else [None, None] for x in m
                ]
                series.append(
                    {
                        "label": dev,
                        "x": [_axis_val(p, axis) for p in sl],
                        "measured": [num(x.get("speedup")) for x in m],
                        "lo": [num(c[0]) for c in ci],
                        "hi": [num(c[1]) for c in ci],
                        "predicted": [num(x.get("predicted_speedup")) for x in m],
                        "ideal": [num(x.get("ideal_speedup")) for x in m],
                        "failed_x": [
                            _axis_val(p, axis)
                            for p in pts
                            if p["status"] != "ok"
                            and p["device_label"] == dev
                            and in_slice(p)
                            and _axis_val(p, axis) is not None
                        ],
                    }
                )
            if series:
                fixed = ", ".join(f"{a}={mode[a]:g}" for a in others)
                label = axis_name(axis)
                charts.append(
                    {
                        "title": f"{name}: speedup vs {label}" + (f" ({fixed})" if fixed else ""),
                        "svg": plots.sweep_chart(series, label, f"{name}" + (f", {fixed}" if fixed else "")),
                    }
                )
        for p in sorted(pts, key=lambda p: (p["device_label"], sorted(sweep_axes(p).items()))):
            lay = layouts(p) if p["status"] == "ok" else {}
            m = p["metrics"]
            nz = max((noise(x) or 0.0) for x in lay.values()) if lay else None
            table.append(
                {
                    "preset": name,
                    "device": p["device_label"],
                    "axes": axes_text(p),
                    "status": p["status"],
                    "imp_ms": ms(step_median(lay.get("impression", {}))) if lay else "—",
                    "roo_ms": ms(step_median(lay.get("roo", {}))) if lay else "—",
                    "speedup": fx(m.get("speedup")),
                    "ci": _ci(m),
                    "predicted": fx(m.get("predicted_speedup")),
                    "error": pct(
                        m.get("speedup_error")
                        if num(m.get("speedup_error")) is not None
                        else _err(m.get("speedup"), m.get("predicted_speedup"))
                    ),
                    "noise": pct(nz, signed=False) if nz is not None else "—",
                    "noisy": nz is not None and nz > NOISE_LIMIT,
                    "error_text": (p.get("error") or "")[:160],
                }
            )
    rooflines = _rooflines(rs, ok_points)
    out = {"charts": charts, "rooflines": rooflines, "table": table}
    if not table:
        out["empty"] = "No measured points: run a sweep (`roo-bench sweep ...`) and pass its JSONL results."
    elif not charts:
        out["note"] = (
            "No sweep axis varies across at least two successful points, so there is no curve to draw."
        )
    return out


def _axis_val(p, axis):
    if axis == "mean_impressions_per_request":
        lay = layouts(p).get("impression") or {}
        v = _ratio(lay.get("impressions_per_step"), lay.get("requests_per_step"))
        return None if v is None else round(v, 3)
    return num(sweep_axes(p).get(axis))


def _varying_axes(points) -> list[str]:
    keys = []
    for p in points:
        for k in sweep_axes(p):
            if k not in keys:
                keys.append(k)
    axes = [k for k in keys if len({_axis_val(p, k) for p in points} - {None}) >= 2]
    if not axes and len({_axis_val(p, "mean_impressions_per_request") for p in points} - {None}) >= 2:
        axes = ["mean_impressions_per_request"]
    return axes


def _roofs_for(rs: ResultSet, device_name: str, dtype: str):
    for c in rs.of("calibration"):
        m = c["metrics"]
        if str(m.get("device_name", "")).lower() == device_name.lower() and num(m.get("copy_bandwidth")):
            spec = m.get("spec") or {}
            peak = num(spec.get("bf16_flops" if dtype in ("bf16", "fp16") else "fp32_flops"))
            md = str(m.get("matmul_dtype", ""))
            if (dtype in ("bf16", "fp16")) == ("bfloat16" in md or "float16" in md) and num(
                m.get("matmul_flops")
            ):
                peak = num(m.get("matmul_flops"))
            if peak:
                return {
                    "peak_tflops": peak / 1e12,
                    "bandwidth_tbs": num(m["copy_bandwidth"]) / 1e12,
                    "label": f"calibrated {dtype}",
                }
    n = device_name.lower()
    for key, (bf16, fp32, bw) in DATASHEET.items():
        if key in n:
            return {
                "peak_tflops": bf16 if dtype in ("bf16", "fp16") else fp32,
                "bandwidth_tbs": bw,
                "label": f"datasheet {dtype}",
            }
    return None


def _rooflines(rs: ResultSet, ok_points) -> list[dict]:
    models = {preset_of(m): m for m in rs.of("model")}
    by_dev = defaultdict(list)
    for p in ok_points:
        by_dev[(p["device_label"], p["provenance"].get("device_name") or "cpu")].append(p)
    out, unplaced = [], []
    for (label, dev_name), pts in sorted(by_dev.items()):
        placed, from_model, masked = [], 0, set()
        for p in pts:
            for lay_name, lay in layouts(p).items():
                flops = _flops(lay)
                tf = num(lay.get("achieved_tflops")) or num(lay.get("achieved_tflops_counted"))
                if tf is None and flops and step_median(lay):
                    tf = flops / (step_median(lay) / 1e3) / 1e12
                by = num(lay.get("bytes_per_step")) or num(lay.get("predicted_bytes_per_step"))
                intensity = _ratio(flops, by)
                if intensity is None and preset_of(p) in models:
                    mr = models[preset_of(p)]
                    intensity = _ratio(model_total(mr, lay_name, "flops"), model_total(mr, lay_name, "bytes"))
                    from_model += intensity is not None
                if intensity and tf:
                    placed.append(
                        {"label": preset_of(p), "layout": lay_name, "intensity": intensity, "tflops": tf}
                    )
                    masked.add(bool(lay.get("flops_masked_counted")))
        if not placed:
            unplaced.append(label)
            continue
        dtypes = sorted({str(p["config"].get("dtype", "fp32")) for p in pts})
        roofs = [r for r in (_roofs_for(rs, dev_name, d) for d in dtypes) if r]
        note = []
        if from_model:
            note.append(
                f"{from_model} placement(s) take their bytes from the cost model at the preset defaults "
                "(the point record has no bytes_per_step)"
            )
        note.append(
            "achieved TFLOP/s "
            + (
                "count masked (causal/target) work"
                if masked == {True}
                else "exclude masked (causal/target) work"
                if masked == {False}
                else "mix points with and without masked work counted"
            )
        )
        if not roofs:
            note.append(f"no calibration record or datasheet entry for {dev_name!r}: roofs not drawn")
        out.append(
            {
                "title": f"Roofline — {label}",
                "svg": plots.roofline_chart(placed, roofs, f"Roofline — {label}"),
                "note": "; ".join(note) + ".",
            }
        )
    if unplaced:
        out.append(
            {
                "title": "Roofline",
                "svg": "",
                "note": "Not placed on a roofline: "
                + ", ".join(unplaced)
                + " — their records carry no bytes_per_step and no cost-model record of their preset was "
                "given, so arithmetic intensity is unknown.",
            }
        )
    return out


def _comm(rs: ResultSet, ok_points) -> dict:
    recs = [c for c in rs.of("comm") if c["status"] == "ok"]
    rows, chart_rows = [], defaultdict(list)
    for c in sorted(recs, key=lambda c: (preset_of(c), c["device_label"], _world(c) or 0)):
        lay = layouts(c)
        w = _world(c)
        i, r = lay.get("impression") or {}, lay.get("roo") or {}
        for name, d in (("impression", i), ("roo", r)):
            cnt, ana = num(d.get("counted_bytes_per_step")), num(d.get("analytic_bytes_per_step"))
            rows.append(
                {
                    "preset": preset_of(c),
                    "device": c["device_label"],
                    "backend": c["config"].get("backend", "?"),
                    "world": w if w is not None else "?",
                    "layout": "ROO" if name == "roo" else "impression",
                    "counted": si(cnt, "B"),
                    "analytic": si(ana, "B"),
                    "match": "—"
                    if cnt is None or ana is None
                    else ("exact" if cnt == ana else pct(_err(cnt, ana))),
                    "mismatch": cnt is not None and ana is not None and cnt != ana,
                    "ms": ms(d.get("step_ms_median")),
                    "saving": pct(
                        1 - _ratio(r.get("counted_bytes_per_step"), i.get("counted_bytes_per_step")),
                        signed=False,
                    )
                    if name == "roo"
                    and _ratio(r.get("counted_bytes_per_step"), i.get("counted_bytes_per_step")) is not None
                    else "",
                }
            )
            if w is not None:
                chart_rows[c["device_label"]].append(
                    {
                        "series": preset_of(c),
                        "layout": name,
                        "world": w,
                        "bytes": cnt if cnt is not None else ana,
                        "ms": num(d.get("step_ms_median")),
                    }
                )
    charts = [{"title": dev, "svg": plots.comm_chart(r, dev)} for dev, r in sorted(chart_rows.items())]
    if not rows:
        return {
            "rows": [],
            "charts": [],
            "empty": "No communication results: run `roo-bench comm --nproc W --preset "
            "NAME --json` and pass its output.",
        }
    return {"rows": rows, "charts": charts}


def _energy(rs: ResultSet, ok_points) -> dict:
    rows, chart, reasons = [], [], Counter()
    groups = defaultdict(list)
    for p in ok_points:
        groups[(preset_of(p), p["device_label"])].append(p)
    for (name, dev), pts in sorted(groups.items()):
        have = [p for p in pts if all((layouts(p)[x].get("energy") or {}).get("available") for x in LAYOUTS)]
        for p in pts:
            for x in LAYOUTS:
                e = layouts(p)[x].get("energy") or {}
                if not e.get("available"):
                    reasons[(dev, str(e.get("reason") or "no energy record"))] += 1
        for p in have:
            for x in LAYOUTS:
                e = layouts(p)[x]["energy"]
                rows.append(
                    {
                        "preset": name,
                        "device": dev,
                        "axes": axes_text(p),
                        "layout": "ROO" if x == "roo" else "impression",
                        "j_step": si(e.get("j_per_step"), "J"),
                        "j_1m": si(e.get("j_per_1m_impressions"), "J"),
                        "p_mean": si(e.get("power_w_mean"), "W"),
                        "p_max": si(e.get("power_w_max"), "W"),
                        "sm": pct(_pct01(e.get("sm_util_mean")), signed=False),
                        "mem": pct(_pct01(e.get("mem_util_mean")), signed=False),
                    }
                )
        if have:
            h = headline_point(have)
            chart.append(
                {
                    "label": f"{name}, {axes_text(h)}\n{dev}",
                    **{x: num(layouts(h)[x]["energy"].get("j_per_1m_impressions")) for x in LAYOUTS},
                }
            )
    unavailable = [
        f"{dev}: {reason} ({n} layout measurement(s))" for (dev, reason), n in sorted(reasons.items())
    ]
    out = {
        "rows": rows,
        "unavailable": unavailable,
        "chart": plots.energy_chart(chart, "Energy per 1M impressions (headline point per preset)")
        if chart
        else None,
    }
    if not rows:
        out["empty"] = (
            "No NVML energy measurements in these results"
            + (" — " + "; ".join(unavailable[:3]) if unavailable else "")
            + "."
        )
    return out


def _pct01(v):
    """NVML utilization comes as 0–100; show it as a percentage either way."""
    v = num(v)
    return None if v is None else (v / 100 if v > 1.0 else v)


def _provenance(rs: ResultSet, ok_points) -> dict:
    by_file = defaultdict(list)
    for r in rs.records:
        by_file[r["source"].path].append(r)
    rows = []
    for path, recs in by_file.items():
        provs = [r["provenance"] for r in recs]

        def vals(key, provs=provs):
            v = sorted({str(p.get(key)) for p in provs if p.get(key) not in (None, "")})
            return ", ".join(v) if v else "—"

        shas = sorted(
            {
                f"{p.get('git_sha', '?')[:12]}{' (dirty)' if p.get('git_dirty') else ''}"
                for p in provs
                if p.get("git_sha")
            }
        )
        dates = sorted(str(p["created_utc"]) for p in provs if p.get("created_utc"))
        rows.append(
            {
                "file": path,
                "kinds": ", ".join(f"{k}×{n}" for k, n in Counter(r["kind"] for r in recs).items()),
                "devices": ", ".join(sorted({r["device_label"] for r in recs})),
                "commit": ", ".join(shas) or "—",
                "host": vals("host"),
                "driver": " / ".join(x for x in (vals("driver"), vals("cuda")) if x != "—") or "—",
                "versions": "; ".join(
                    f"{k} {vals(k + '_version')}"
                    for k in ("torch", "triton", "python")
                    if vals(k + "_version") != "—"
                )
                or "—",
                "roo_bench": vals("roo_bench_version"),
                "seeds": vals("seed"),
                "dates": (dates[0] if dates and dates[0] == dates[-1] else f"{dates[0]} … {dates[-1]}")
                if dates
                else "—",
            }
        )
    point_warnings = []
    for p in rs.of("point"):
        where = f"{p['source'].where}: {preset_of(p)} [{axes_text(p)}] on {p['device_label']}"
        if p["status"] != "ok":
            point_warnings.append(f"{where}: FAILED ({p['status']}): {p.get('error') or 'no error message'}")
            continue
        for x, lay in layouts(p).items():
            n = noise(lay)
            if n is not None and n > NOISE_LIMIT:
                point_warnings.append(
                    f"{where}: noisy — {x} step IQR/median = {n * 100:.0f}% > {NOISE_LIMIT * 100:.0f}%"
                )
    for c in rs.of("comm"):
        if c["status"] != "ok":
            point_warnings.append(
                f"{c['source'].where}: comm {preset_of(c)} FAILED ({c['status']}): {c.get('error')}"
            )
    return {"rows": rows, "point_warnings": point_warnings, "loader_warnings": list(rs.warnings)}
