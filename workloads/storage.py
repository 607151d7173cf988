"""Storage measurement: what each layout costs on disk and in memory, beside the analytic prediction.

Analytic model (uncompressed, the in-memory Arrow layout of workloads/parquet_io.py): a request
carries U bytes of request-only (RO) data and k impressions of I bytes of non-request-only (NRO)
data each. Impression level stores k(U + I) per request, request level U + kI (plus one list
offset per NRO column, which we count). With expected values from the spec:

    predicted_uncompressed_ratio = E[k](U + I) / (U + o + E[k] I)

where o is the request level's extra list offsets. `row_bytes(spec)` gives U, I and o so the cost
model can reuse them; the measured ratio divides the impression-level by the request-level
in-memory Arrow bytes of the same generated requests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from workloads.batch import ImpressionBatch, RequestBatch
from workloads.layout import Layout
from workloads.parquet_io import (
    CODECS,
    DEFAULT_ROW_GROUP,
    ORDERS,
    impression_table,
    parquet_compression,
    request_table,
    shuffle_perm,
)
from workloads.spec import WorkloadSpec

OFFSET = 4  # bytes per list offset (arrow list<...> uses int32 offsets)
TB = 1e12


def row_bytes(spec: WorkloadSpec) -> dict[str, float]:
    """Expected uncompressed bytes: `user` (U, RO per request), `item` (I, NRO per impression),
    `request_overhead` (o, request level only) and `impressions_per_request` (E[k])."""
    h = spec.history.length.mean()
    user: float = 8 + 8  # request_id, timestamp
    user += 4 * spec.user_dense
    user += sum(g.count * (OFFSET + 8 * g.pooling.mean()) for g in spec.user_sparse)
    user += 3 * OFFSET + h * (8 + 4 + 8)  # history ids (int64), actions (int32), timestamps (int64)
    item: float = 8  # item_id
    item += sum(g.count * (OFFSET + 8 * g.pooling.mean()) for g in spec.item_sparse)
    item += 4 * spec.item_dense + 4 * spec.n_tasks
    nro_columns = 1 + spec.n_item_sparse + (1 if spec.item_dense else 0) + 1
    return {
        "user": float(user),
        "item": float(item),
        "request_overhead": float(OFFSET * nro_columns),
        "impressions_per_request": spec.impressions.mean(),
    }


def uncompressed_bytes_per_impression(spec: WorkloadSpec, layout: str | Layout = Layout.IMPRESSION) -> float:
    """Expected uncompressed bytes per impression for `layout` (`impression`, or `roo`/`request`)."""
    r = row_bytes(spec)
    k = r["impressions_per_request"]
    if Layout.parse(layout) is Layout.IMPRESSION:
        return r["user"] + r["item"]
    return (r["user"] + r["request_overhead"]) / k + r["item"]


def predicted_uncompressed_ratio(spec: WorkloadSpec) -> float:
    """k(U+I)/(U+kI) from the spec's expected values (see the module docstring)."""
    impression = uncompressed_bytes_per_impression(spec, Layout.IMPRESSION)
    return impression / uncompressed_bytes_per_impression(spec, Layout.ROO)


def _timed_write(table: pa.Table, path: Path, codec: str, row_group_size: int) -> float:
    t0 = time.perf_counter()
    pq.write_table(table, path, compression=parquet_compression(codec), row_group_size=row_group_size)
    return time.perf_counter() - t0


def _timed_read(path: Path) -> float:
    t0 = time.perf_counter()
    pq.read_table(path)
    return time.perf_counter() - t0


def format_row(
    layout: str, order: str, codec: str, path: Path, impressions: int, write_s: float, read_s: float, mem: int
) -> dict:
    """One `storage --json` format row: a written Parquet file's bytes (on disk and uncompressed),
    per impression, and its write/read times and rates against `mem` in-memory Arrow bytes."""
    size = path.stat().st_size
    meta = pq.read_metadata(path)
    return {
        "layout": layout,
        "order": order,
        "codec": codec,
        "file_bytes": size,
        "parquet_uncompressed_bytes": sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)),
        "bytes_per_impression": size / impressions,
        "samples_per_tb": TB / (size / impressions),
        "write_s": write_s,
        "read_s": read_s,
        "write_mb_s": mem / 1e6 / write_s if write_s > 0 else None,
        "read_mb_s": mem / 1e6 / read_s if read_s > 0 else None,
        "memory_bytes": mem,
    }


def measure(
    batch: RequestBatch,
    spec: WorkloadSpec | None = None,
    codecs: tuple[str, ...] = CODECS,
    orders: tuple[str, ...] = ORDERS,
    row_group_size: int = DEFAULT_ROW_GROUP,
    seed: int = 0,
    workdir: str | os.PathLike | None = None,
) -> dict:
    """Per layout x order x codec: file bytes, bytes/impression, samples per TB, write/read time
    and MB/s (of in-memory data), in-memory Arrow bytes; plus predicted vs measured ratios."""
    n_imp = batch.num_impressions_total
    imp: ImpressionBatch = batch.to_impressions()
    # keyed by the datasets' on-disk names (`request`, `impression`), as in the JSON output
    req_name, imp_name = Layout.ROO.dataset_name, Layout.IMPRESSION.dataset_name
    tables: list[tuple[str, str, pa.Table]] = [(req_name, "grouped", request_table(batch, spec))]
    for order in orders:
        b = imp if order == "grouped" else imp.permute(shuffle_perm(n_imp, seed))
        tables.append((imp_name, order, impression_table(b, spec)))
    formats = []
    tmp = Path(tempfile.mkdtemp(prefix="roo-storage-", dir=workdir))
    try:
        for layout, order, table in tables:
            mem = table.nbytes
            for codec in codecs:
                path = tmp / f"{layout}-{order}-{codec}.parquet"
                write_s = _timed_write(table, path, codec, row_group_size)
                read_s = _timed_read(path)
                formats.append(format_row(layout, order, codec, path, n_imp, write_s, read_s, mem))
                path.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mem_req = tables[0][2].nbytes
    mem_imp = tables[1][2].nbytes
    out = {
        "requests": batch.num_requests,
        "impressions": n_imp,
        "impressions_per_request": n_imp / batch.num_requests,
        "history_length_mean": float(batch.history_lengths.double().mean()),
        "predicted_uncompressed_ratio": predicted_uncompressed_ratio(spec) if spec is not None else None,
        "measured_uncompressed_ratio": mem_imp / mem_req,
        "uncompressed_bytes": {req_name: mem_req, imp_name: mem_imp},
        "row_bytes": row_bytes(spec) if spec is not None else None,
        "formats": formats,
    }
    if out["predicted_uncompressed_ratio"] is not None:
        p = out["predicted_uncompressed_ratio"]
        out["ratio_error"] = out["measured_uncompressed_ratio"] / p - 1.0
    # the savings a user asks about: same disk, how many more impressions (per codec and order)
    by = {(f["layout"], f["order"], f["codec"]): f["file_bytes"] for f in formats}
    out["file_ratios"] = {
        f"{order}/{codec}": by[(imp_name, order, codec)] / by[(req_name, "grouped", codec)]
        for order in orders
        for codec in codecs
    }
    return out
