"""Parquet I/O for both layouts (pyarrow), with a `_manifest.json` beside each dataset.

A dataset is a directory holding `data.parquet` and `_manifest.json`. The manifest's leading `_`
is the convention Arrow, Spark, Hive, pandas and duckdb follow for files that are not data, so
`pyarrow.parquet.read_table(dir)`, `pyarrow.dataset.dataset(dir)`, `pandas.read_parquet(dir)` and
duckdb's `read_parquet('dir')` read the directory as it is. Datasets written before under the
name `manifest.json` are still read. Columns:

    request_id  int64                     both layouts (the request key)
    timestamp   int64                     RO
    user_dense  fixed_size_list<f32>[Du]  RO (absent when Du == 0)
    us.<name>   list<int64>               RO, one per user sparse feature
    history_item_ids / history_actions / history_timestamps   list<int64> / list<int32> / list<int64>, RO
    item_id     int64                     NRO
    is.<name>   list<int64>               NRO, one per item sparse feature
    item_dense  fixed_size_list<f32>[Di]  NRO (absent when Di == 0)
    labels      fixed_size_list<f32>[T]   NRO

Impression level (`Layout.IMPRESSION`): one row per impression with exactly these types (RO
values copied per row). Request level (`Layout.ROO`, named `request` on disk: directory and
manifest `layout`): one row per request; RO columns as above, every NRO column wrapped in one more list
(k impressions per row), e.g. `item_id: list<int64>`, `is.<name>: list<list<int64>>`.

Row orders (impression level): `grouped` keeps a request's rows adjacent; `shuffled` puts every
impression of the whole dataset in one seeded random order (workloads.shuffle: an external
shuffle with bounded memory), so the bytes depend on the seed but not on how the rows were chunked.

Writes are atomic: everything goes into a temp dir beside the target, renamed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from workloads.batch import ImpressionBatch, RequestBatch
from workloads.errors import UserError
from workloads.layout import Layout
from workloads.shuffle import DEFAULT_BUDGET_BYTES, ExternalShuffle, shuffle_permutation

ORDERS = ("grouped", "shuffled")
CODECS = ("none", "snappy", "zstd")
DATA_FILE = "data.parquet"
MANIFEST = "_manifest.json"
LEGACY_MANIFEST = "manifest.json"  # the name before readers could skip it; still read
MANIFEST_SCHEMA = "roo-bench/dataset/1"
DEFAULT_ROW_GROUP = 8192
US, IS = "us.", "is."
HISTORY_COLS = ("history_item_ids", "history_actions", "history_timestamps")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UserError(f"{name}={value!r} is not allowed; choose one of: {', '.join(allowed)}")
    return value


def feature_names(spec, n_user: int, n_item: int) -> tuple[list[str], list[str]]:
    """Sparse feature names from the spec (or generic f0, f1, ... without one)."""
    if spec is not None and spec.n_user_sparse == n_user and spec.n_item_sparse == n_item:
        return [n for n, _ in spec.user_features()], [n for n, _ in spec.item_features()]
    return [f"f{i}" for i in range(n_user)], [f"f{i}" for i in range(n_item)]


# --- batch -> arrow ------------------------------------------------------------------------------
def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _offsets(lengths: np.ndarray) -> pa.Array:
    off = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    if off[-1] >= 2**31:
        raise UserError("a column chunk has more than 2^31 values; write with a smaller chunk/row group size")
    return pa.array(off.astype(np.int32))


def _list(values: pa.Array, lengths: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(_offsets(lengths), values)


def _fixed(a: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def _keyed_columns(lengths: np.ndarray, values: np.ndarray, names: list[str], prefix: str, outer=None):
    cols = {}
    pos = 0
    for f, name in enumerate(names):
        m = int(lengths[f].sum())
        arr = _list(pa.array(values[pos : pos + m]), lengths[f])
        cols[prefix + name] = arr if outer is None else _list(arr, outer)
        pos += m
    return cols


def _ro_columns(b, user_names: list[str]) -> dict[str, pa.Array]:
    cols: dict[str, pa.Array] = {"request_id": pa.array(_np(b.request_id)), "timestamp": pa.array(_np(b.timestamp))}
    if b.user_dense.shape[1]:
        cols["user_dense"] = _fixed(_np(b.user_dense))
    cols.update(_keyed_columns(_np(b.user_sparse_lengths), _np(b.user_sparse_values), user_names, US))
    hl = _np(b.history_lengths)
    cols["history_item_ids"] = _list(pa.array(_np(b.history_item_ids)), hl)
    cols["history_actions"] = _list(pa.array(_np(b.history_actions).astype(np.int32)), hl)
    cols["history_timestamps"] = _list(pa.array(_np(b.history_timestamps)), hl)
    return cols


def _nro_columns(b, item_names: list[str], outer: np.ndarray | None) -> dict[str, pa.Array]:
    def wrap(a: pa.Array) -> pa.Array:
        return a if outer is None else _list(a, outer)

    cols = {"item_id": wrap(pa.array(_np(b.item_id)))}
    cols.update(_keyed_columns(_np(b.item_sparse_lengths), _np(b.item_sparse_values), item_names, IS, outer))
    if b.item_dense.shape[1]:
        cols["item_dense"] = wrap(_fixed(_np(b.item_dense)))
    cols["labels"] = wrap(_fixed(_np(b.labels)))
    return cols


def request_table(b: RequestBatch, spec=None) -> pa.Table:
    un, inn = feature_names(spec, b.user_sparse_lengths.shape[0], b.item_sparse_lengths.shape[0])
    cols = _ro_columns(b, un)
    cols.update(_nro_columns(b, inn, _np(b.num_impressions)))
    return pa.table(cols)


def impression_table(b: ImpressionBatch, spec=None) -> pa.Table:
    un, inn = feature_names(spec, b.user_sparse_lengths.shape[0], b.item_sparse_lengths.shape[0])
    cols = _ro_columns(b, un)
    cols.update(_nro_columns(b, inn, None))
    return pa.table(cols)


# --- arrow -> batch ------------------------------------------------------------------------------
def _t(a: np.ndarray, dtype=torch.int64) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # arrow buffers are read-only; torch wants to own writable memory
        a = a.copy()
    return torch.from_numpy(a).to(dtype)


def _arr(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def _vals(a: pa.Array) -> np.ndarray:
    return a.to_numpy(zero_copy_only=False)


def _unlist(a: pa.Array) -> tuple[pa.Array, np.ndarray]:
    return a.flatten(), _vals(a.value_lengths()).astype(np.int64)


def _dense(table: pa.Table, name: str, rows: int, nested: bool) -> torch.Tensor:
    if name not in table.column_names:
        return torch.zeros((rows, 0), dtype=torch.float32)
    a = _arr(table, name)
    if nested:
        a = a.flatten()
    width = a.type.list_size
    return _t(_vals(a.flatten()).reshape(-1, width), torch.float32)


def _keyed(table: pa.Table, prefix: str, rows: int, nested: bool) -> tuple[torch.Tensor, torch.Tensor]:
    names = [c for c in table.column_names if c.startswith(prefix)]
    if not names:
        return torch.zeros((0, rows), dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    lens, vals = [], []
    for n in names:
        a = _arr(table, n)
        if nested:
            a = a.flatten()
        v, ln = _unlist(a)
        lens.append(ln)
        vals.append(_vals(v))
    return _t(np.stack(lens)), _t(np.concatenate(vals))


def _ro_fields(table: pa.Table) -> dict[str, torch.Tensor]:
    rows = table.num_rows
    usl, usv = _keyed(table, US, rows, nested=False)
    h_ids, hl = _unlist(_arr(table, "history_item_ids"))
    h_act, _ = _unlist(_arr(table, "history_actions"))
    h_ts, _ = _unlist(_arr(table, "history_timestamps"))
    return {
        "request_id": _t(_vals(_arr(table, "request_id"))),
        "timestamp": _t(_vals(_arr(table, "timestamp"))),
        "user_dense": _dense(table, "user_dense", rows, nested=False),
        "user_sparse_lengths": usl,
        "user_sparse_values": usv,
        "history_lengths": _t(hl),
        "history_item_ids": _t(_vals(h_ids)),
        "history_actions": _t(_vals(h_act)),
        "history_timestamps": _t(_vals(h_ts)),
    }


def table_to_requests(table: pa.Table) -> RequestBatch:
    ro = _ro_fields(table)
    item, k = _unlist(_arr(table, "item_id"))
    n = int(k.sum())
    isl, isv = _keyed(table, IS, n, nested=True)
    return RequestBatch(
        **ro,
        num_impressions=_t(k),
        item_id=_t(_vals(item)),
        item_sparse_lengths=isl,
        item_sparse_values=isv,
        item_dense=_dense(table, "item_dense", n, nested=True),
        labels=_dense(table, "labels", n, nested=True),
    )


def table_to_impressions(table: pa.Table) -> ImpressionBatch:
    ro = _ro_fields(table)
    n = table.num_rows
    isl, isv = _keyed(table, IS, n, nested=False)
    return ImpressionBatch(
        **ro,
        item_id=_t(_vals(_arr(table, "item_id"))),
        item_sparse_lengths=isl,
        item_sparse_values=isv,
        item_dense=_dense(table, "item_dense", n, nested=False),
        labels=_dense(table, "labels", n, nested=False),
    )


# --- datasets on disk ----------------------------------------------------------------------------
def parquet_compression(codec: str) -> str:
    """The pyarrow `compression=` value for a user-facing codec name (`none`, `snappy`, `zstd`).

    Every Parquet writer here (datasets, `convert`, `storage`, the asv benchmarks) goes through
    this one mapping, so a codec name means the same file format everywhere; an unknown name is
    one UserError listing the allowed ones."""
    return {"none": "NONE", "snappy": "SNAPPY", "zstd": "ZSTD"}[check_choice("codec", codec, CODECS)]


def shuffle_perm(n: int, seed: int) -> torch.Tensor:
    """The `shuffled` order of n impression rows (workloads.shuffle), as a permutation for `permute`."""
    return torch.from_numpy(shuffle_permutation(n, seed))


class DatasetWriter:
    """Streams RequestBatches into one layout's Parquet file, in exact `row_group_size` row groups.

    Use as a context manager over a directory that must not exist yet: data goes to a temp dir
    beside it, renamed into place by `close()`; on an exception the temp dir is removed.

    `order="shuffled"` passes the impression rows through an ExternalShuffle (temp files in the
    temp dir) and writes them at `close()`; `shuffle_memory_bytes` bounds a bucket of it and
    `expected_bytes` (the dataset's Arrow bytes, if known) sizes its bucket count up front."""

    def __init__(
        self,
        out_dir,
        layout: str | Layout,
        order: str = "grouped",
        codec: str = "zstd",
        row_group_size: int = DEFAULT_ROW_GROUP,
        spec=None,
        seed: int | None = None,
        extra: dict | None = None,
        shuffle_memory_bytes: int = DEFAULT_BUDGET_BYTES,
        expected_bytes: int | None = None,
    ):
        self.layout = Layout.parse(layout)
        self.order = check_choice("order", order, ORDERS)
        if self.layout is Layout.ROO and order != "grouped":
            raise UserError("order='shuffled' applies to the impression layout only; request rows are one per request")
        self.compression = parquet_compression(codec)
        if isinstance(row_group_size, bool) or not isinstance(row_group_size, int) or row_group_size < 1:
            raise UserError(f"row_group_size={row_group_size} must be an integer >= 1")
        m = shuffle_memory_bytes
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise UserError(f"shuffle_memory_bytes={m!r} must be an integer >= 1")
        self.codec, self.row_group_size, self.spec, self.seed = codec, row_group_size, spec, seed
        self.extra = extra or {}
        self.out = Path(out_dir)
        self.tmp = make_temp_dir(self.out)
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.requests = self.impressions = self.chunks = 0
        self.memory_bytes = 0
        self.shuffle: ExternalShuffle | None = None
        if self.order == "shuffled":
            self.shuffle = ExternalShuffle(self.tmp, seed or 0, shuffle_memory_bytes, expected_bytes)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def table_for(self, b: RequestBatch) -> pa.Table:
        """The rows of `b` in this layout, in request order (a shuffle happens at `close()`)."""
        if self.layout is Layout.ROO:
            return request_table(b, self.spec)
        return impression_table(b.to_impressions(), self.spec)

    def write(self, b: RequestBatch) -> None:
        self.write_table(self.table_for(b), b.num_requests, b.num_impressions_total)

    def write_table(self, t: pa.Table, requests: int, impressions: int) -> None:
        self.requests += requests
        self.impressions += impressions
        self.chunks += 1
        self.memory_bytes += t.nbytes
        if self.shuffle is not None:
            self.shuffle.add(t)
        else:
            self._append(t)

    def _append(self, t: pa.Table) -> None:
        self.pending.append(t)
        self.pending_rows += t.num_rows
        while self.pending_rows >= self.row_group_size:
            self._flush(self.row_group_size)

    def _flush(self, rows: int) -> None:
        t = pa.concat_tables(self.pending) if len(self.pending) > 1 else self.pending[0]
        head, rest = t.slice(0, rows), t.slice(rows)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp / DATA_FILE, head.schema, compression=self.compression)
        self.writer.write_table(head, row_group_size=rows)
        if rest.num_rows and self.shuffle is not None:
            # a copy of the few rows left, so the sorted bucket they are sliced from can be freed
            rest = rest.take(pa.array(np.arange(rest.num_rows)))
        self.pending = [rest] if rest.num_rows else []
        self.pending_rows = rest.num_rows

    def close(self, progress: Callable[[int], None] | None = None) -> dict:
        """Write what is left (a shuffled dataset: all of it, `progress(rows)` after each sorted
        bucket), the manifest, and move the directory into place; returns the manifest."""
        if self.shuffle is not None:
            for t in self.shuffle.drain():
                rows = t.num_rows
                self._append(t)
                del t  # a bucket's buffers go before the next bucket is read (pending keeps a copy)
                if progress is not None:
                    progress(rows)
            self.shuffle.close()
        if self.pending_rows:
            self._flush(self.pending_rows)
        if self.writer is None:
            raise UserError("nothing to write: the dataset has no rows")
        self.writer.close()
        meta = pq.read_metadata(self.tmp / DATA_FILE)
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "layout": self.layout.dataset_name,
            "order": self.order if self.layout is Layout.IMPRESSION else "grouped",
            "codec": self.codec,
            "row_group_size": self.row_group_size,
            "seed": self.seed,
            "spec": self.spec.to_dict() if self.spec is not None else None,
            "requests": self.requests,
            "impressions": self.impressions,
            "rows": meta.num_rows,
            "row_groups": meta.num_row_groups,
            "file": DATA_FILE,
            "file_bytes": (self.tmp / DATA_FILE).stat().st_size,
            "uncompressed_bytes": sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)),
            "memory_bytes": self.memory_bytes,
            **({"shuffle": self._shuffle_info()} if self.shuffle is not None else {}),
            **self.extra,
        }
        write_json(self.tmp / MANIFEST, manifest)
        commit_temp_dir(self.tmp, self.out)
        return manifest

    def _shuffle_info(self) -> dict:
        s = self.shuffle
        assert s is not None
        return {
            "scope": "dataset",
            "method": "external",
            "buckets": s.buckets,
            "splits": s.splits,
            "largest_bucket_bytes": s.largest_bucket_bytes,
        }

    def abort(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - cleanup only; the original error is what matters
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_dataset(out_dir, batches: Iterable[RequestBatch], layout: str | Layout, **kw) -> dict:
    """Write RequestBatches as one dataset of `layout` (`request`/`roo` or `impression`); returns
    the manifest."""
    with DatasetWriter(out_dir, layout, **kw) as w:
        for b in batches:
            w.write(b)
    return read_manifest(out_dir)


def manifest_path(directory) -> Path | None:
    """The manifest of a dataset directory (`_manifest.json`, else the older `manifest.json`), or None."""
    d = Path(directory)
    for name in (MANIFEST, LEGACY_MANIFEST):
        if (d / name).is_file():
            return d / name
    return None


def read_manifest(path) -> dict:
    p = Path(path)
    m = manifest_path(p if p.is_dir() else p.parent)
    if m is None:
        raise UserError(f"{p} is not a roo-bench dataset (no {MANIFEST}); write one with `roo-bench generate`")
    try:
        return json.loads(m.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{m} is not valid JSON ({e}); regenerate the dataset") from None


def manifest_layout(manifest: dict) -> Layout:
    """The Layout of a dataset from its manifest (which stores the on-disk name, e.g. `request`)."""
    return Layout.parse(manifest["layout"])


def read_table(path, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file (or a dataset dir's data file) as one table; a clear error if unreadable."""
    p = Path(path)
    f = p / DATA_FILE if p.is_dir() else p
    if not f.exists():
        raise UserError(f"{f} does not exist; give a Parquet file or a dataset directory")
    try:
        return pq.read_table(f, columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        why = str(e).splitlines()[0]
        raise UserError(f"{f} is not a readable Parquet file ({why}); check the path or re-export it") from None


def read_dataset(path) -> RequestBatch | ImpressionBatch:
    """Read back exactly what was written: a RequestBatch or an ImpressionBatch (in file row order)."""
    layout = manifest_layout(read_manifest(path))
    t = read_table(path)
    return table_to_requests(t) if layout is Layout.ROO else table_to_impressions(t)


def dataset_dirs(root) -> list[Path]:
    """The dataset dirs at or directly under `root` (for --data DIR)."""
    r = Path(root)
    if manifest_path(r) is not None:
        return [r]
    found = sorted(d for d in r.iterdir() if d.is_dir() and manifest_path(d) is not None) if r.is_dir() else []
    if not found:
        raise UserError(f"{r} holds no roo-bench dataset (no {MANIFEST}); write one with `roo-bench generate`")
    return found


# --- atomic output helpers ------------------------------------------------------------------------
def make_temp_dir(out: Path) -> Path:
    """A temp dir beside `out` (same filesystem, so the final rename is atomic)."""
    out = Path(out)
    if out.exists():
        raise UserError(f"output {out} already exists; choose a new --out or remove it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output parent directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"output directory {parent} is not writable; choose another --out")
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as e:
        raise UserError(f"cannot create output in {parent} ({e.strerror}); choose another --out") from None


def commit_temp_dir(tmp: Path, out: Path) -> None:
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the result should look like any new dir
        os.rename(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot move output into {out} ({e.strerror}); choose another --out") from None


def write_json(path: Path, obj) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
