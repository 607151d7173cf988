"""Storage of a user's own log in both layouts: file bytes per codec, write and read time, memory.

What `storage` measures on generated batches (workloads.storage), measured here on the user's
bytes, streaming: each layout is written once per codec from one pass (`LayoutFiles`, every codec
at once), then each file is read back once, batch by batch, timing the read and counting the
Arrow bytes it decodes to (`read_back`). The impression layout is the log itself (in its own row
order) or, for a request-level dataset, its requests expanded to one row per impression (`explode`).

The uncompressed ratio is counted, not read back: workloads.log_pass.request_batches counts every
row's Arrow bytes (fixed widths, 4-byte offsets, string bytes), the quantity the cost model's
k(U+I)/(U+kI) describes; `memory_bytes` per file is what a reader actually allocates (pyarrow
adds validity bitmaps to columns read from Parquet, nulls or not).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workloads.parquet_io import parquet_compression
from workloads.storage import format_row

Tick = Callable[[int], None]


class LayoutFiles:
    """One layout written in several codecs from one stream of tables (`write`), each file timed."""

    def __init__(self, paths: dict[str, Path], layout: str, order: str):
        self.paths, self.layout, self.order = paths, layout, order
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.write_s = dict.fromkeys(paths, 0.0)
        self.rows = 0

    def write(self, t: pa.Table) -> None:
        if t.num_rows == 0:
            return
        for codec, path in self.paths.items():
            t0 = time.perf_counter()
            if codec not in self.writers:
                self.writers[codec] = pq.ParquetWriter(path, t.schema, compression=parquet_compression(codec))
            self.writers[codec].write_table(t, row_group_size=max(1, t.num_rows))
            self.write_s[codec] += time.perf_counter() - t0
        self.rows += t.num_rows

    def close(self) -> None:
        for codec, w in self.writers.items():
            t0 = time.perf_counter()
            w.close()
            self.write_s[codec] += time.perf_counter() - t0
        self.writers.clear()


def read_back(path: Path, tick: Tick | None = None) -> tuple[float, int]:
    """(seconds, Arrow bytes) of one streaming read of `path`, batch by batch.

    One row group at a time: over the whole file at once, pyarrow's reader pre-buffers the column
    chunks of every row group it is given, which holds the file in memory."""
    pf = pq.ParquetFile(path)
    mem = 0
    t0 = time.perf_counter()
    for g in range(pf.num_row_groups):
        for b in pf.iter_batches(batch_size=16384, row_groups=[g], use_threads=True):
            mem += b.nbytes
            if tick is not None:
                tick(b.num_rows)
    return time.perf_counter() - t0, mem


def explode(t: pa.Table, k: np.ndarray, ro: set[str]) -> pa.Table:
    """A request-level table as impression rows: RO columns repeated k times, the lists flattened."""
    idx = pa.array(np.repeat(np.arange(t.num_rows), k))
    cols = []
    for name in t.column_names:
        col = t.column(name)
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        cols.append(col.take(idx) if name in ro else col.flatten())
    return pa.Table.from_arrays(cols, names=t.column_names)


def format_rows(files: LayoutFiles, impressions: int, tick: Tick | None = None) -> list[dict]:
    """The `storage --json` format rows of a closed LayoutFiles (reads every file back)."""
    rows = []
    for codec, path in files.paths.items():
        if not path.exists():
            continue
        read_s, mem = read_back(path, tick)
        rows.append(format_row(files.layout, files.order, codec, path, impressions, files.write_s[codec], read_s, mem))
    return rows


def file_ratios(formats: list[dict]) -> dict[str, float]:
    """Impression-level over request-level file bytes, per `order/codec`."""
    req = {f["codec"]: f["file_bytes"] for f in formats if f["layout"] == "request"}
    return {
        f"{f['order']}/{f['codec']}": f["file_bytes"] / req[f["codec"]]
        for f in formats
        if f["layout"] == "impression" and f["codec"] in req
    }


def input_row(files: Iterable[Path], rows: int, tick: Tick | None = None) -> dict:
    """The log as given: its bytes, codec(s), one streaming read's seconds and Arrow bytes."""
    files = list(files)
    read_s = mem = 0.0
    codecs = set()
    for f in files:
        s, m = read_back(f, tick)
        read_s += s
        mem += m
        meta = pq.read_metadata(f)
        if meta.num_row_groups and meta.num_columns:
            codecs.add(meta.row_group(0).column(0).compression.lower())
    size = sum(f.stat().st_size for f in files)
    return {
        "files": len(files),
        "file_bytes": size,
        "codec": ",".join(sorted(codecs)),
        "rows": rows,
        "read_s": read_s,
        "memory_bytes": int(mem),
    }
