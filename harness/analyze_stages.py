"""The stages of `roo-bench analyze` (harness/analyze.py runs them in order; see its docstring)."""

from __future__ import annotations

import resource
import time
from pathlib import Path

from workloads.layout import Layout
from workloads.log_storage import LayoutFiles, explode, file_ratios, format_rows, input_row
from workloads.parquet_io import DATA_FILE, MANIFEST, MANIFEST_SCHEMA, write_json
from workloads.records import Kind, make_record, record_from_flat

BYTE_COUNT = (
    "Arrow bytes counted per row: fixed widths, 4-byte list and string offsets, string bytes, no validity "
    "bitmap for a column without nulls"
)


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _layout_files(work: Path, req_dir: Path, imp_order: str) -> dict[str, LayoutFiles]:
    return {
        "request": LayoutFiles(
            {"none": work / "request-none.parquet", "zstd": req_dir / DATA_FILE}, "request", "grouped"
        ),
        "impression": LayoutFiles(
            {"none": work / "impression-none.parquet", "zstd": work / "impression-zstd.parquet"},
            "impression",
            imp_order,
        ),
    }


def fit_stage(cfg, tmp: Path, work: Path, bars):
    """Convert, infer roles, fit; the final pass writes the request-level dataset. (LogFit, files)"""
    from workloads.fit_log import fit_log
    from workloads.log_input import open_log

    request_level = open_log(cfg.log, None).request_level
    req_dir = tmp / Layout.ROO.dataset_name
    req_dir.mkdir()
    files = _layout_files(work, req_dir, "grouped")

    def sink(t, k, roles) -> None:
        files["request"].write(t)
        if request_level:  # a request-level input: its impression rows come from expanding it
            files["impression"].write(explode(t, k, {*roles.ro, "request_id"}))

    t0 = time.perf_counter()
    name = Path(cfg.log).stem or "your-log"
    fit = fit_log(
        cfg.log,
        cfg.request_key,
        cfg.roles,
        cfg.on_conflict,
        work_dir=work,
        budget=cfg.sort_budget_mb << 20,
        progress=bars,
        sink=sink,
        name=name,
    )
    files["request"].close()
    if fit.convert is not None and fit.convert.get("external_sort"):
        files["impression"].order = "shuffled"  # the log's rows are not grouped by request
    _request_manifest(req_dir, cfg, fit, time.perf_counter() - t0)
    return fit, files


def _request_manifest(req_dir: Path, cfg, fit, seconds: float) -> None:
    """The manifest of the request-level dataset, as `convert` writes it, plus the roles, so
    `storage --data` and `fit` read the dataset back with the same roles."""
    meta_rows = fit.report["data"]
    conv = dict(fit.convert or {})
    conv.update(
        {
            "ro_columns": list(fit.roles.ro),
            "nro_columns": list(fit.roles.nro),
            "conflicts": fit.report["conflicts"]["total"],
            "on_conflict": cfg.on_conflict,
        }
    )
    write_json(
        req_dir / MANIFEST,
        {
            "schema": MANIFEST_SCHEMA,
            "layout": Layout.ROO.dataset_name,
            "order": "grouped",
            "codec": "zstd",
            "source": str(cfg.log),
            "request_key": fit.roles.request_key,
            "requests": meta_rows["requests"],
            "impressions": meta_rows["impressions"],
            "rows": meta_rows["requests"],
            "file": DATA_FILE,
            "file_bytes": (req_dir / DATA_FILE).stat().st_size,
            "spec": None,
            "seed": None,
            "roles": fit.roles.to_dict(),
            "convert": conv,
            "seconds": seconds,
        },
    )


def storage_stage(fit, files: dict[str, LayoutFiles], work: Path, bars) -> dict:
    """The `storage --json` object of the user's bytes (see workloads.log_storage)."""
    from workloads.log_pass import iter_tables

    imp = files["impression"]
    if not fit.log.request_level:
        tick = bars("rewrite impression rows", fit.log.rows, "row")
        for f in fit.log.files:
            for t in iter_tables(f):
                imp.write(t)
                if tick is not None:
                    tick(t.num_rows)
    imp.close()
    d = fit.report["data"]
    tick = bars("read back each file", 2 * (d["requests"] + d["impressions"]) + fit.log.rows, "row")
    out = storage_result(fit, files, tick)
    out["input"] = input_row(fit.log.files, fit.log.rows, tick)
    return out


def storage_result(fit, files: dict[str, LayoutFiles], tick=None) -> dict:
    """The storage object of closed layout files and the fit that counted the bytes."""
    from workloads.storage import row_bytes

    d = fit.report["data"]
    n_imp = d["impressions"]
    formats = format_rows(files["request"], n_imp, tick) + format_rows(files["impression"], n_imp, tick)
    st = fit.report["storage"]
    counted = st["log_bytes"]
    measured = counted["impression"] / counted["request"]
    pred = st["spec_predicted_ratio"]
    return {
        "preset": fit.spec.name,
        "data": str(fit.log.path),
        "requests": d["requests"],
        "impressions": n_imp,
        "impressions_per_request": d["impressions_per_request"],
        "history_length_mean": d["history_length_mean"],
        "predicted_uncompressed_ratio": pred,
        "measured_uncompressed_ratio": measured,
        "ratio_error": measured / pred - 1.0 if pred else None,
        "uncompressed_bytes": {"request": counted["request"], "impression": counted["impression"]},
        "byte_count": BYTE_COUNT,
        "row_bytes": row_bytes(fit.spec),
        "formats": formats,
        "file_ratios": file_ratios(formats),
    }


def measure_request_dataset(ds: Path, codecs: tuple[str, ...]) -> dict:
    """`storage --data` on a request-level dataset of any columns (e.g. `convert`'s output of a
    user's log): both layouts (impressions expanded from the requests, grouped) in `codecs`."""
    import shutil
    import tempfile

    from workloads.convert_rows import OUT_KEY
    from workloads.fit_log import fit_log
    from workloads.log_input import open_log
    from workloads.log_pass import request_level_roles
    from workloads.roles import RoleOptions

    _, ro = request_level_roles(open_log(ds, None))
    work = Path(tempfile.mkdtemp(prefix="roo-storage-"))
    try:
        files = {
            "request": LayoutFiles({c: work / f"request-{c}.parquet" for c in codecs}, "request", "grouped"),
            "impression": LayoutFiles({c: work / f"impression-{c}.parquet" for c in codecs}, "impression", "grouped"),
        }

        def sink(t, k, roles) -> None:
            files["request"].write(t)
            files["impression"].write(explode(t, k, {*roles.ro, OUT_KEY}))

        opts = RoleOptions(ro_columns=tuple(sorted(ro)))
        fit = fit_log(ds, OUT_KEY, opts, "first", work_dir=work, sink=sink)
        for f in files.values():
            f.close()
        return storage_result(fit, files) | {"roles": fit.roles.to_dict()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cost_stage(cfg, spec, storage: dict) -> tuple[dict, dict]:
    """The `model --json` and `project --json` objects of the fitted spec and the chosen model."""
    from roo_ref.cost import check_priceable, get_device, model_report, project
    from roo_ref.model_presets import get_model_config

    mc = get_model_config(cfg.model)
    check_priceable(spec, mc)
    dev = get_device(cfg.hardware)
    rep = model_report(spec, mc, dev, cfg.dtype, device_key=cfg.hardware.lower())
    rep["model_preset"] = cfg.model
    proj = project(spec, mc, cfg.requests_per_day, cfg.gpus, dev, cfg.dtype, storage=storage)
    proj["device_key"] = cfg.hardware.lower()
    proj["model_preset"] = cfg.model
    return rep, proj


def _gof(rep: dict) -> dict:
    c = rep.get("candidates", {}).get(rep.get("chosen"), {})
    return {"chosen": rep.get("chosen"), "mean": rep.get("mean"), **{k: c.get(k) for k in ("tv", "ks", "mean_error")}}


def _savings(storage: dict, model: dict, proj: dict) -> dict:
    def cut(a, b):
        return 1.0 - b / a if a else None

    by = {(f["layout"], f["codec"]): f["file_bytes"] for f in storage["formats"]}
    t = model["totals"]
    return {
        "storage_uncompressed": cut(*[storage["uncompressed_bytes"][k] for k in ("impression", "request")]),
        **{f"storage_file_{c}": cut(by.get(("impression", c)), by.get(("request", c), 0)) for c in ("none", "zstd")},
        "flops": cut(t["impression"]["flops"], t["roo"]["flops"]),
        "step_time_model": cut(t["impression"]["predicted_step_ms"], t["roo"]["predicted_step_ms"]),
        **{k: v for k, v in proj["savings"].items()},
    }


def _notes(fit, storage: dict, savings: dict, cfg) -> list[str]:
    r = fit.roles
    notes = [
        f"Your log {cfg.log}: {storage['requests']} requests, {storage['impressions']} impressions "
        f"({storage['impressions_per_request']:.2f} per request); request key {r.request_key}.",
        f"Request-only columns: {', '.join(r.ro) or 'none'}; labels: {', '.join(r.labels) or 'none'}; history: "
        f"{', '.join(c for c in (r.history or ()) if c) or 'none'}; timestamp: {r.timestamp or 'none'}.",
        f"Storage ratio (counted Arrow bytes) {storage['measured_uncompressed_ratio']:.2f}x; files: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in storage["file_ratios"].items())
        + f". Cost model: {cfg.model} on {cfg.hardware}.",
    ]
    conf = fit.report["conflicts"]
    if conf["total"]:
        notes.append(
            f"{conf['total']} RO conflicts (request, column) kept from the request's first row (--on-conflict first): "
            + ", ".join(f"{c} {n}" for c, n in conf["requests_by_column"].items())
        )
    notes += list(r.notes) + [f"column {d}" for d in fit.report["dropped"]]
    bal = fit.report["storage"].get("balance")
    if bal:
        notes.append(f"fit: added {bal['added']} float32 {bal['feature']} features: {bal['why']}")
    return notes


def write_outputs(cfg, fit, storage: dict, model: dict, proj: dict, tmp: Path, out: Path, seconds: dict) -> dict:
    """Records, spec, report and the analyze record, all in `tmp` (paths named as under `out`)."""
    from harness.provenance import collect
    from harness.results import write_record

    prov = collect()
    rec_dir = tmp / "records"
    rec_dir.mkdir()
    for kind, obj in ((Kind.STORAGE, storage), (Kind.MODEL, model), (Kind.PROJECT, proj)):
        write_record(rec_dir / f"{kind.value}.json", record_from_flat(kind, obj, provenance=prov))
    (tmp / "spec.toml").write_text(fit.spec.to_toml())
    savings = _savings(storage, model, proj)
    notes = _notes(fit, storage, savings, cfg)
    _report(rec_dir, tmp, out, cfg, notes)
    metrics = {
        "log": {**storage["input"], "path": str(fit.log.path), "requests": storage["requests"]},
        "roles": fit.roles.to_dict(),
        "mapping": fit.mapping(),
        "conflicts": fit.report["conflicts"],
        "convert": fit.convert,
        "storage": {k: storage[k] for k in ("measured_uncompressed_ratio", "predicted_uncompressed_ratio")}
        | {"uncompressed_bytes": storage["uncompressed_bytes"], "file_ratios": storage["file_ratios"]},
        "fit": {
            "impressions": _gof(fit.report["impressions"]),
            "history_length": _gof(fit.report["history_length"]),
            "storage": fit.report["storage"],
            "dropped": fit.report["dropped"],
            "columns": fit.report["columns"],
        },
        "spec": fit.spec.to_dict(),
        "model": {k: model[k] for k in ("predicted_speedup", "ideal_speedup", "f_u", "totals", "attention")},
        "projection": {k: proj[k] for k in ("layouts", "savings", "fits_in_day", "storage_source")},
        "savings": savings,
        "notes": notes,
        "files": {
            "report": str(out / "report.html"),
            "analyze": str(out / "analyze.json"),
            "spec": str(out / "spec.toml"),
            "records": [str(out / "records" / f"{k}.json") for k in ("storage", "model", "project")],
            "request_dataset": str(out / Layout.ROO.dataset_name),
        },
        "seconds": seconds,
        "peak_rss_bytes": peak_rss_bytes(),
    }
    rec = make_record(Kind.ANALYZE, cfg.to_dict(), metrics, provenance=prov)
    write_record(tmp / "analyze.json", rec)
    return rec


def _report(rec_dir: Path, tmp: Path, out: Path, cfg, notes: list[str]) -> None:
    """report.html from the records, with their paths as they will be once `tmp` becomes `out`."""
    from reports.loader import load
    from reports.render import render_html, write_atomic

    rs = load([str(rec_dir)])
    rs.files = [f.replace(str(tmp), str(out), 1) for f in rs.files]
    for r in rs.records:
        r["source"].path = r["source"].path.replace(str(tmp), str(out), 1)
    title = f"What ROO saves on {Path(cfg.log).name}"
    write_atomic(tmp / "report.html", render_html(rs, title, notes))
