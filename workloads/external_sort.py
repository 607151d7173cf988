"""`convert` for input whose requests are not adjacent: an external sort by request key.

The rows are hash-partitioned by key into temp Parquet files (each about `budget` bytes of the
input), so every request lands whole in one partition; each partition is then sorted in memory
(stably, so a request keeps its impressions in file order) and converted. Partitions are written
in partition order, so the output is deterministic for a given input and budget.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workloads.convert_rows import (
    ConvertResult,
    constant_columns,
    key_array,
    read_row_groups,
    requests_table,
    run_starts,
)
from workloads.parquet_io import DATA_FILE, parquet_compression


def external_sort_convert(
    pf: pq.ParquetFile,
    tmp: Path,
    key: str,
    ro: list[str] | None,
    policy: str,
    codec: str,
    budget: int,
    res: ConvertResult,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Hash-partition rows by key into temp files, then sort and convert each partition in memory.

    `ro=None` decides the RO columns over all partitions first (columns constant within every
    request); the result's counters and `ro_columns` are filled in `res`."""
    meta = pf.metadata
    total = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    parts = max(1, math.ceil(total / budget))
    res.partitions = parts
    pdir = Path(tempfile.mkdtemp(prefix="parts-", dir=tmp))
    try:
        written = _partition(pf, key, parts, pdir, progress)
        if ro is None:  # auto: columns constant within every request, decided over all partitions
            ro = [n for n in pf.schema_arrow.names if n != key]
            for p in written:
                t = _sorted(pq.read_table(pdir / f"{p}.parquet"), key)
                ro = constant_columns(t, ro, run_starts(key_array(t, key)))
        res.ro_columns = ro
        writer = None
        try:
            for p in written:
                t = _sorted(pq.read_table(pdir / f"{p}.parquet"), key)
                out, c = requests_table(t, run_starts(key_array(t, key)), key, ro, policy)
                res.conflicts += c
                res.rows_out += out.num_rows
                if progress is not None:
                    progress(t.num_rows)
                if writer is None:
                    writer = pq.ParquetWriter(tmp / DATA_FILE, out.schema, compression=parquet_compression(codec))
                writer.write_table(out)
        finally:
            if writer is not None:
                writer.close()
    finally:
        shutil.rmtree(pdir, ignore_errors=True)


def _partition(pf: pq.ParquetFile, key: str, parts: int, pdir: Path, progress=None) -> list[int]:
    """Write every row into `pdir/<bucket>.parquet`; returns the buckets written, in order."""
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for t in read_row_groups(pf):
            if progress is not None:
                progress(t.num_rows)
            bucket = _bucket(key_array(t, key), parts)
            for p in np.unique(bucket):
                sub = t.filter(pa.array(bucket == p))
                if p not in writers:
                    writers[p] = pq.ParquetWriter(pdir / f"{p}.parquet", t.schema, compression="NONE")
                writers[p].write_table(sub)
    finally:
        for w in writers.values():
            w.close()
    return sorted(writers)


def _bucket(keys: np.ndarray, parts: int) -> np.ndarray:
    if parts == 1:
        return np.zeros(keys.size, dtype=np.int64)
    if keys.dtype.kind in "iu":
        h = keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        return (h >> np.uint64(33)).astype(np.int64) % parts
    # non-integer keys: crc32 (python's hash() is salted per process, which would break determinism)
    return np.array([zlib.crc32(str(key).encode()) % parts for key in keys.tolist()], dtype=np.int64)


def _sorted(t: pa.Table, key: str) -> pa.Table:
    # sort_indices is stable: a request's rows keep their file order
    return t.take(pc.sort_indices(t, sort_keys=[(key, "ascending")]))
