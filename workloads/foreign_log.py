"""An impression-level log as another pipeline writes it, for testing `fit`/`analyze` on any schema.

Nothing here follows roo-bench's column convention: the request key is a string (`req_key`), user
columns are `u_*` of int, float, string and list<float> (an embedding) types, the user's history is
a list<int64> column of item ids beside a list<int64> column of their timestamps, item columns are
`item_id`, `i_category` (string) and `i_price` (float64), labels are 0/1 columns `click` and `like`,
and every impression has its own `timestamp`. Rows are shuffled across requests, as a log written
in event order interleaves requests: through a shuffle buffer of `shuffle_window` rows (the whole
log when None), so a request's rows lie anywhere within that many rows of each other.

`conflicts` requests (each with >= 2 impressions) get one user column whose value differs in one of
their rows, as a feature updated in the middle of a request would; `ForeignLog.conflicts` lists the
(request key, column) pairs so a test can check that they are counted exactly.

Streaming: requests are generated `chunk_requests` at a time and written row group by row group,
so memory holds a chunk plus the shuffle buffer, whatever the log's size. Same config, same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workloads.errors import UserError

CONFLICT_COLUMNS = ("u_age", "u_score", "u_country")
COUNTRIES = tuple(f"c{i:02d}" for i in range(40))
KEY, USER_ID = "req_key", "u_user_id"
HISTORY, HISTORY_TS = "u_hist_items", "u_hist_ts"
LABELS = ("click", "like")


@dataclass(frozen=True)
class ForeignLogConfig:
    requests: int = 2000
    seed: int = 0
    mean_impressions: float = 6.0  # k = 1 + geometric, clipped to max_impressions
    max_impressions: int = 40
    history_mean: float = 40.0  # lognormal, sigma 0.8, clipped to [0, max_history]
    max_history: int = 400
    embedding_dim: int = 16
    item_cardinality: int = 200_000
    conflicts: int = 0
    shuffle_window: int | None = None  # rows in the shuffle buffer; None: the whole log
    row_group_rows: int = 16384
    chunk_requests: int = 8192
    codec: str = "zstd"

    def __post_init__(self) -> None:
        for name in ("requests", "max_impressions", "embedding_dim", "row_group_rows", "chunk_requests"):
            if getattr(self, name) < 1:
                raise UserError(f"foreign log: {name}={getattr(self, name)} must be >= 1")
        if not self.mean_impressions >= 1 or not self.history_mean > 0:
            raise UserError("foreign log: mean_impressions must be >= 1 and history_mean > 0")
        if self.conflicts < 0 or (self.shuffle_window is not None and self.shuffle_window < 1):
            raise UserError("foreign log: conflicts must be >= 0 and shuffle_window >= 1 (or None)")
        if self.codec not in ("none", "snappy", "zstd"):
            raise UserError(f"foreign log: codec={self.codec!r}; allowed: none, snappy, zstd")


@dataclass
class ForeignLog:
    """What was written: counts, and the (request key, column) pairs given conflicting values."""

    path: Path
    requests: int = 0
    rows: int = 0
    row_groups: int = 0
    conflicts: list[tuple[str, str]] = field(default_factory=list)


def _chunk(cfg: ForeignLogConfig, first: int, n: int, n_conflicts: int) -> tuple[pa.Table, list]:
    """The impression rows of requests [first, first + n), grouped, and the conflicts planted."""
    rng = np.random.default_rng([cfg.seed, first])
    p = 1.0 / cfg.mean_impressions
    k = np.minimum(rng.geometric(p, n) if p < 1 else np.ones(n, np.int64), cfg.max_impressions).astype(np.int64)
    multi = np.flatnonzero(k >= 2)
    if n_conflicts > multi.size:
        raise UserError(f"foreign log: {n_conflicts} conflicts asked among {multi.size} requests with k >= 2")
    conflict_reqs = np.sort(rng.choice(multi, size=n_conflicts, replace=False))
    mu = np.log(cfg.history_mean) - 0.32
    hl = np.clip(np.rint(rng.lognormal(mu, 0.8, n)), 0, cfg.max_history).astype(np.int64)
    req_ts = 1_700_000_000 + (first + np.arange(n)) * 3 + rng.integers(0, 3, n)
    ids = pa.array(np.arange(first, first + n))
    user = {
        KEY: pc.binary_join_element_wise(f"q{cfg.seed}-", pc.cast(ids, pa.string()), ""),
        USER_ID: pa.array(rng.zipf(1.3, n).astype(np.int64) % 5_000_000),
        "u_age": pa.array(rng.integers(18, 80, n).astype(np.int32)),
        "u_score": pa.array(rng.normal(0.0, 1.0, n)),
        "u_country": pa.array(np.asarray(COUNTRIES)[np.minimum(rng.zipf(1.6, n) - 1, len(COUNTRIES) - 1)]),
        "u_embedding": _lists(rng.normal(size=n * cfg.embedding_dim).astype(np.float32), np.full(n, cfg.embedding_dim)),
    }
    gaps = rng.exponential(1800.0, int(hl.sum())).astype(np.int64) + 1
    user[HISTORY] = _lists(rng.zipf(1.2, int(hl.sum())).astype(np.int64) % cfg.item_cardinality, hl)
    user[HISTORY_TS] = _lists(_history_ts(gaps, hl, req_ts), hl)
    rows = np.repeat(np.arange(n), k)
    t = pa.table({name: col.take(pa.array(rows)) for name, col in user.items()})
    m = rows.size
    within = np.arange(m) - np.repeat(np.cumsum(k) - k, k)
    t = t.append_column("item_id", pa.array(rng.zipf(1.15, m).astype(np.int64) % cfg.item_cardinality))
    t = t.append_column("i_category", pa.array(np.char.add("cat", (rng.zipf(1.4, m) % 200).astype(str))))
    t = t.append_column("i_price", pa.array(np.round(rng.lognormal(2.5, 1.0, m), 2)))
    t = t.append_column("timestamp", pa.array(req_ts[rows] + within))
    t = t.append_column("click", pa.array((rng.random(m) < 0.1).astype(np.int8)))
    t = t.append_column("like", pa.array((rng.random(m) < 0.03).astype(np.int8)))
    return _plant_conflicts(t, rng, k, conflict_reqs)


def _lists(values: np.ndarray, lengths: np.ndarray) -> pa.Array:
    offs = np.zeros(lengths.size + 1, dtype=np.int32)
    np.cumsum(lengths, out=offs[1:])
    return pa.ListArray.from_arrays(pa.array(offs), pa.array(values))


def _history_ts(gaps: np.ndarray, hl: np.ndarray, req_ts: np.ndarray) -> np.ndarray:
    """Ascending timestamps ending before the request: request time minus reversed gap sums."""
    ends = np.cumsum(hl)
    rev = np.cumsum(gaps[::-1])[::-1]  # rev[i] = sum of gaps[i:]
    after = np.concatenate([rev[ends[ends < rev.size]], [0] * int((ends >= rev.size).sum())]).astype(np.int64)
    return np.repeat(req_ts, hl) - (rev - np.repeat(after, hl))


def _plant_conflicts(t: pa.Table, rng: np.random.Generator, k: np.ndarray, reqs: np.ndarray) -> tuple[pa.Table, list]:
    """Give each request in `reqs` (chunk-local, k >= 2) a different value of one user column in
    one of its non-first rows."""
    if reqs.size == 0:
        return t, []
    starts = np.cumsum(k) - k
    rows = starts[reqs] + 1 + (rng.integers(0, 1 << 30, reqs.size) % (k[reqs] - 1))
    cols = np.asarray(CONFLICT_COLUMNS)[rng.integers(0, len(CONFLICT_COLUMNS), reqs.size)]
    keys = t.column(KEY).take(pa.array(starts[reqs])).to_pylist()
    for name in CONFLICT_COLUMNS:
        sel = rows[cols == name]
        if sel.size == 0:
            continue
        col = t.column(name).combine_chunks()
        old = col.take(pa.array(sel))
        if name == "u_country":
            new = pc.binary_join_element_wise(old, pa.scalar("x"), "")  # a code no request has
        else:
            new = pc.add(old, pa.scalar(1, type=col.type))
        mask = np.zeros(len(col), dtype=bool)
        mask[sel] = True
        filled = np.zeros(len(col), dtype=np.int64)
        filled[sel] = np.arange(sel.size)
        col = pc.if_else(pa.array(mask), new.take(pa.array(filled)), col)
        t = t.set_column(t.schema.get_field_index(name), name, col)
    return t, list(zip(keys, cols.tolist(), strict=True))


def _conflicts_per_chunk(cfg: ForeignLogConfig) -> np.ndarray:
    """How many of the log's conflicts each chunk plants (spread over the chunks by request count)."""
    chunks = -(-cfg.requests // cfg.chunk_requests)
    wanted = np.random.default_rng([cfg.seed, 0xC0]).choice(
        cfg.requests, size=min(cfg.conflicts, cfg.requests), replace=False
    )
    return np.bincount(wanted // cfg.chunk_requests, minlength=chunks)


def write_foreign_log(
    path: str | Path, cfg: ForeignLogConfig = ForeignLogConfig(), progress: Callable[[int], None] | None = None
) -> ForeignLog:
    """Write the log to `path` (a Parquet file); `progress(n)` is told of every n requests written."""
    path = Path(path)
    res = ForeignLog(path)
    per_chunk = _conflicts_per_chunk(cfg)
    buf: pa.Table | None = None
    writer = None
    pending: list[pa.Table] = []
    try:
        for first in range(0, cfg.requests, cfg.chunk_requests):
            n = min(cfg.chunk_requests, cfg.requests - first)
            t, planted = _chunk(cfg, first, n, int(per_chunk[first // cfg.chunk_requests]))
            res.conflicts += planted
            res.requests += n
            buf = t if buf is None else pa.concat_tables([buf, t])
            perm = np.random.default_rng([cfg.seed, 0x5F, first]).permutation(buf.num_rows)
            keep = buf.num_rows if cfg.shuffle_window is None else min(cfg.shuffle_window, buf.num_rows)
            out, buf = buf.take(pa.array(perm[: buf.num_rows - keep])), buf.take(pa.array(perm[buf.num_rows - keep :]))
            writer = _write(out, pending, writer, path, cfg, res, final=False)
            if progress is not None:
                progress(n)
        if buf is not None:
            perm = np.random.default_rng([cfg.seed, 0x5F, cfg.requests]).permutation(buf.num_rows)
            writer = _write(buf.take(pa.array(perm)), pending, writer, path, cfg, res, final=True)
    finally:
        if writer is not None:
            writer.close()
    res.row_groups = pq.ParquetFile(path).num_row_groups
    return res


def _write(out: pa.Table, pending: list[pa.Table], writer, path: Path, cfg: ForeignLogConfig, res, final: bool):
    """Row groups of exactly `row_group_rows` (the last one shorter)."""
    if out.num_rows:
        pending.append(out)
    total = sum(t.num_rows for t in pending)
    while pending and (total >= cfg.row_group_rows or final):
        t = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
        rows = min(cfg.row_group_rows, t.num_rows)
        if writer is None:
            comp = {"none": "NONE", "snappy": "SNAPPY", "zstd": "ZSTD"}[cfg.codec]
            writer = pq.ParquetWriter(path, t.schema, compression=comp)
        writer.write_table(t.slice(0, rows), row_group_size=rows)
        res.rows += rows
        rest = t.slice(rows)
        pending[:] = [rest] if rest.num_rows else []
        total = rest.num_rows
    return writer
