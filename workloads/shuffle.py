"""A global shuffle of impression rows with bounded memory (`generate --order shuffled`).

Every row gets a key, a seeded 64-bit hash of its index in the whole dataset (splitmix64, a
bijection, so no two rows share a key); the shuffled order is the rows sorted by key. Because the
key depends only on the seed and the row's global index, the order is the same however the rows
arrive (generator chunk size) and however many buckets the external pass uses.

External pass: rows are scattered into B temporary Parquet bucket files by key range (bucket b
holds the b-th slice of the key space, so the buckets in order are the keys in order); each bucket
is then read, sorted by key and handed on in pieces of PIECE_ROWS rows. B is chosen so a bucket
holds about `budget_bytes` of Arrow data; a bucket that turns out larger (the size estimate was
low) is split again by the quantiles of its own keys before it is read. Arrow memory at a time:
one bucket (at most the budget, unless a single row is larger) plus its read buffers and one
piece, i.e. under about twice the budget, plus roughly half a MiB per open bucket writer while
scattering; temp disk is about the dataset's Arrow size (LZ4).

`shuffle_permutation(n, seed)` is the same order computed in memory (for `storage` and the
benchmarks), so an in-memory shuffled table equals the external one row for row.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

KEY = "_shuffle_key"
DEFAULT_BUDGET_BYTES = 256 << 20
MAX_BUCKETS = 256  # open bucket writers at once; larger data gets bigger buckets, split again later
_TEMP_CODEC = "LZ4"  # fast; the temp files are read once
PIECE_ROWS = 8192  # rows per sorted table handed on

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = 0x9E3779B97F4A7C15
_DOMAIN = 0x5EED5F0F  # keeps these keys apart from other seeded streams of the same seed


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection on uint64 that scrambles every bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def row_keys(seed: int, start: int, n: int) -> np.ndarray:
    """The shuffle keys (uint64) of the rows with global indices start .. start+n-1."""
    base = _mix(np.array([(seed * _GOLDEN + _DOMAIN) & (2**64 - 1)], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        return _mix(np.arange(start, start + n, dtype=np.uint64) + base)


def shuffle_permutation(n: int, seed: int) -> np.ndarray:
    """The shuffled order of n rows in memory: row indices sorted by their keys."""
    return np.argsort(row_keys(seed, 0, n), kind="stable")


def bucket_count(expected_bytes: int | None, budget_bytes: int) -> int:
    """Buckets for a dataset of about `expected_bytes` (None: one, split later if it outgrows the budget)."""
    if not expected_bytes:
        return 1
    return int(min(MAX_BUCKETS, max(1, math.ceil(1.25 * expected_bytes / budget_bytes))))


def _key_bucket(keys: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket of each key: the top 32 bits scaled to [0, buckets), monotone in the key."""
    return ((keys >> np.uint64(32)) * np.uint64(buckets)) >> np.uint64(32)


class _Buckets:
    """Temp Parquet files, one per bucket id, each fed row slices of whatever arrives."""

    def __init__(self, directory: Path, prefix: str):
        self.dir, self.prefix = directory, prefix
        self.writers: dict[int, pq.ParquetWriter] = {}
        self.bytes: dict[int, int] = {}
        self.rows: dict[int, int] = {}

    def path(self, b: int) -> Path:
        return self.dir / f"{self.prefix}{b:05d}.parquet"

    def put(self, table: pa.Table, ids: np.ndarray) -> None:
        order = np.argsort(ids, kind="stable")
        t = table.take(pa.array(order))
        counts = np.bincount(ids, minlength=int(ids.max()) + 1)
        pos = 0
        for b in np.flatnonzero(counts).tolist():
            sub = t.slice(pos, int(counts[b]))
            pos += int(counts[b])
            if b not in self.writers:
                self.writers[b] = pq.ParquetWriter(
                    self.path(b), t.schema, compression=_TEMP_CODEC, use_dictionary=False
                )
                self.bytes[b] = self.rows[b] = 0
            self.writers[b].write_table(sub)
            self.bytes[b] += sub.nbytes
            self.rows[b] += sub.num_rows

    def close(self) -> list[tuple[Path, int, int]]:
        """(path, Arrow bytes, rows) of every bucket written, in bucket (= key) order."""
        for w in self.writers.values():
            w.close()
        done = [(self.path(b), self.bytes[b], self.rows[b]) for b in sorted(self.writers)]
        self.writers.clear()
        return done


class ExternalShuffle:
    """`add` tables in dataset order, then `drain` yields them shuffled; see the module docstring.

    The temp files live in a `_shuffle-*` directory under `workdir` (a name dataset readers skip);
    `close` removes it, and so does removing `workdir`."""

    def __init__(self, workdir: Path, seed: int, budget_bytes: int = DEFAULT_BUDGET_BYTES, expected_bytes=None):
        if budget_bytes < 1:
            raise ValueError(f"budget_bytes={budget_bytes} must be >= 1")
        self.seed, self.budget = seed, budget_bytes
        self.buckets = bucket_count(expected_bytes, budget_bytes)
        self.dir = Path(tempfile.mkdtemp(prefix="_shuffle-", dir=workdir))
        self._scatter = _Buckets(self.dir, "b")
        self.rows = 0
        self.piece_rows = PIECE_ROWS
        self.splits = 0  # buckets that outgrew the budget and were split again
        self.largest_bucket_bytes = 0  # Arrow bytes of the largest bucket held in memory at once

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        keys = row_keys(self.seed, self.rows, table.num_rows)
        self.rows += table.num_rows
        self._scatter.put(table.append_column(KEY, pa.array(keys)), _key_bucket(keys, self.buckets).astype(np.int64))

    def drain(self) -> Iterator[pa.Table]:
        """Every row added, in key order: one sorted table per bucket (at most about the budget)."""
        for path, nbytes, rows in self._scatter.close():
            yield from self._sorted(path, nbytes, rows, depth=0)

    def _sorted(self, path: Path, nbytes: int, rows: int, depth: int) -> Iterator[pa.Table]:
        if nbytes > self.budget and rows > 1:
            for sub in self._split(path, nbytes, rows, depth):
                yield from self._sorted(*sub, depth=depth + 1)
            return
        self.largest_bucket_bytes = max(self.largest_bucket_bytes, nbytes)
        t = pq.read_table(path, use_threads=False)
        path.unlink()
        order = np.argsort(t.column(KEY).to_numpy())
        t = t.drop_columns([KEY])
        # handed on in pieces, so the bucket is held once and not beside a sorted copy of itself
        for lo in range(0, rows, self.piece_rows):
            yield t.take(pa.array(order[lo : lo + self.piece_rows]))

    def _split(self, path: Path, nbytes: int, rows: int, depth: int) -> list[tuple[Path, int, int]]:
        """Split one bucket at the quantiles of its keys: m parts of equal row counts, in key order."""
        self.splits += 1
        m = min(rows, max(2, math.ceil(nbytes / self.budget)))
        parts = _Buckets(self.dir, f"s{depth}-{self.splits}-")
        with pq.ParquetFile(path) as pf:
            keys = np.sort(pf.read(columns=[KEY]).column(KEY).to_numpy())
            bounds = keys[(np.arange(1, m) * rows) // m]  # part j holds key ranks [j*rows/m, (j+1)*rows/m)
            del keys
            batch_rows = max(1, rows * self.budget // (4 * nbytes))
            for batch in pf.iter_batches(batch_size=batch_rows, use_threads=False):
                t = pa.Table.from_batches([batch])
                ids = np.searchsorted(bounds, t.column(KEY).to_numpy(), side="right")
                parts.put(t, ids.astype(np.int64))
        done = parts.close()
        path.unlink()
        return done

    def close(self) -> None:
        self._scatter.close()
        shutil.rmtree(self.dir, ignore_errors=True)
