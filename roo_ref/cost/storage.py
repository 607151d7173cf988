"""Storage rows: uncompressed bytes of a step's samples per layout, exact from a batch or per
impression for the projection, and the compressed sizes the projection assumes per codec.

The per-value sizes are those of workloads.storage.row_bytes (the in-memory Arrow layout written
to Parquet); `batch_storage_bytes` applies them to a batch's actual counts.
"""

from __future__ import annotations

from typing import Any

from roo_ref.cost.stats import Num, batch_stats
from roo_ref.model_presets import ModelConfig
from workloads.spec import WorkloadSpec

# Compressed size as a fraction of each layout's uncompressed bytes, when no measured storage file
# is given. Request level zstd: an assumed 2.5x; impression level relative to the request-level
# file, from the Parquet sizes `roo-bench storage` measures: grouped rows 1.1x, shuffled rows 7.7x
# (never above the uncompressed impression bytes).
ZSTD_REQUEST_RATIO = 2.5
ZSTD_IMPRESSION_VS_REQUEST = {"grouped": 1.1, "shuffled": 7.7}


def batch_storage_bytes(batch: Any, spec: WorkloadSpec) -> dict:
    """Uncompressed (Arrow in-memory) bytes of a concrete batch per layout, with the per-value
    sizes of workloads.storage.row_bytes applied to the batch's actual counts (the exact
    counterpart of its expected-value model): {"impression": bytes, "roo": bytes}."""
    from workloads.storage import OFFSET

    st = batch_stats(batch, ModelConfig())
    R, N = st.requests, st.impressions
    fu, fi = spec.n_user_sparse, spec.n_item_sparse
    user_fixed = 16 + 4 * spec.user_dense + fu * OFFSET + 3 * OFFSET
    item = N * (8 + fi * OFFSET + 4 * spec.item_dense + 4 * spec.n_tasks) + 8 * st.item_ids
    nro_columns = 1 + fi + (1 if spec.item_dense else 0) + 1
    return {
        "impression": N * user_fixed + 8 * st.user_ids_k + 20 * st.hist_k + item,
        "roo": R * (user_fixed + OFFSET * nro_columns) + 8 * st.user_ids + 20 * st.hist + item,
    }


def bytes_per_impression(row: dict[str, float], layout: str, k: Num) -> Num:
    """Uncompressed bytes per impression from workloads.storage.row_bytes at `k` impressions per
    request: the request-only part once per request under ROO, once per impression otherwise."""
    if layout == "roo":
        return (row["user"] + row["request_overhead"]) / k + row["item"]
    return row["user"] + row["item"]


def storage_by_codec(per_imp: dict, measured: dict | None = None) -> dict:
    """Bytes per impression per codec assumption, both layouts: {codec: {layout: bytes}}.

    `measured`: a `roo-bench storage --json` object; its per-format bytes_per_impression are used
    as they are (with the layouts named request/impression there)."""
    if measured is not None:
        return _measured_by_codec(measured)
    roo_z = per_imp["roo"] / ZSTD_REQUEST_RATIO
    out = {"none": dict(per_imp)}
    for order, f in ZSTD_IMPRESSION_VS_REQUEST.items():
        out[f"zstd ({order} rows, assumed)"] = {"impression": min(per_imp["impression"], roo_z * f), "roo": roo_z}
    return out


def _measured_by_codec(measured: dict) -> dict:
    out: dict = {}
    for f in measured.get("formats", []):
        key = f"{f['codec']} ({f['order']} rows)"
        lay = "roo" if f["layout"] == "request" else "impression"
        out.setdefault(key, {})[lay] = float(f["bytes_per_impression"])
    for key, v in list(out.items()):
        if "roo" not in v:  # shuffled impression rows compare with the (grouped) request file
            codec = key.split(" ")[0]
            v["roo"] = out.get(f"{codec} (grouped rows)", {}).get("roo")
    return out
