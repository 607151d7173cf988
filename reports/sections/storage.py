"""Storage: bytes, read/write time and in-memory bytes per layout × row order × codec, with the
predicted vs measured uncompressed ratio and the grouped-vs-shuffled finding.

Two "uncompressed" ratios differ and the headline names both: the in-memory (decoded Arrow) bytes,
which the analytic ratio k(U+I)/(U+kI) models, and the bytes of Parquet files written without a
codec, which are smaller because Parquet's dictionary and run-length encodings apply anyway."""

from __future__ import annotations

from reports import plots
from reports.format import fx, pct, ratio, rel_error, secs, si
from reports.loader import ResultSet
from reports.sections.common import pick_format, preset_of, storage_formats

SERIES_ORDER = ("request", "grouped", "shuffled")


def build(rs: ResultSet, ok_points) -> dict:
    items = []
    for st in rs.of("storage"):
        fmts = storage_formats(st)
        if not fmts:
            continue
        m = st["metrics"]
        name = preset_of(st)
        items.append(
            {
                "name": name,
                "source": st["device_label"],
                "where": st["source"].where,
                "chart": plots.storage_chart(fmts, name),
                "rows": _format_rows(fmts),
                "findings": _findings(fmts),
                "pred_ratio": fx(m.get("predicted_uncompressed_ratio")),
                "meas_ratio": fx(m.get("measured_uncompressed_ratio")),
                "ratio_error": pct(
                    rel_error(m.get("measured_uncompressed_ratio"), m.get("predicted_uncompressed_ratio"))
                ),
                "counts": ", ".join(f"{k}={m[k]}" for k in ("requests", "impressions") if k in m),
                "file_ratios": _file_ratios(fmts),
            }
        )
    if not items:
        return {
            "items": [],
            "empty": "No storage results: run `roo-bench storage --preset NAME --json` and pass its output.",
        }
    return {"items": items}


def _format_rows(fmts: list[dict]) -> list[dict]:
    rows = []
    for f in sorted(fmts, key=lambda f: (f["codec"], SERIES_ORDER.index(f["series"]))):
        base = pick_format(fmts, "request", f["codec"])
        rows.append(
            {
                "layout": f["layout"],
                "order": f["order"],
                "codec": f["codec"],
                "file_bytes": si(f["file_bytes"], "B"),
                "bpi": si(f["bytes_per_impression"], "B"),
                "vs_request": fx(ratio(f["bytes_per_impression"], base and base["bytes_per_impression"])),
                "write_s": secs(f["write_s"]),
                "read_s": secs(f["read_s"]),
                "memory": si(f["memory_bytes"], "B"),
                "highlight": f["series"] == "shuffled" and f["codec"] == "zstd",
            }
        )
    return rows


def _file_ratios(fmts: list[dict]) -> str:
    """'grouped 3.35×, shuffled 3.42×': impression-level ÷ request-level file bytes, no codec."""
    q = pick_format(fmts, "request", "none")
    parts = []
    for order in ("grouped", "shuffled"):
        f = pick_format(fmts, order, "none")
        if f and q:
            parts.append(f"impression rows {order} {fx(ratio(f['bytes_per_impression'], q['bytes_per_impression']))}")
    return ", ".join(parts)


def _findings(fmts: list[dict]) -> list[str]:
    """One sentence on what row order costs under compression (the first codec with all three series)."""
    for codec in ("zstd", "snappy"):
        q, g, s = (pick_format(fmts, k, codec) for k in SERIES_ORDER)
        if q and g and s:
            bpi = "bytes_per_impression"
            return [
                f"With {codec}, impression-level rows kept grouped by request cost "
                f"{fx(ratio(g[bpi], q[bpi]))} the request-level bytes; "
                f"shuffled (as training shuffles produce) they cost "
                f"{fx(ratio(s[bpi], q[bpi]))}. Reading them takes "
                f"{fx(ratio(g['read_s'], q['read_s']))} / "
                f"{fx(ratio(s['read_s'], q['read_s']))} as long, "
                f"with {fx(ratio(g['memory_bytes'], q['memory_bytes']))} the in-memory bytes."
            ]
    return []
