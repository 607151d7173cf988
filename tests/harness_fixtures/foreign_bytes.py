"""A direct count of a foreign log's bytes (workloads.foreign_log), in plain Python from the Arrow
types and independent of workloads.log_sketch.row_bytes: what `fit` and `analyze` must reproduce."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from workloads.foreign_log import HISTORY, HISTORY_TS, KEY

# the log's request-only (user) columns
USER = ("u_user_id", "u_age", "u_score", "u_country", "u_embedding", HISTORY, HISTORY_TS)


def py_bytes(v, t: pa.DataType) -> float:
    """Arrow bytes of one value, counted in plain Python from its type."""
    if pa.types.is_string(t):
        return 4 + len(v.encode())
    if pa.types.is_list(t):
        return 4 + sum(py_bytes(x, t.value_type) for x in v)
    return t.bit_width / 8


def direct_bytes(path, ro: tuple[str, ...]) -> tuple[float, float]:
    """(impression-level, request-level) bytes of the log by a direct count: every row, and every
    request with its RO values from its first row in file order and one list per other column."""
    t = pq.read_table(path)
    types = {f.name: f.type for f in t.schema}
    rows = t.to_pylist()
    imp = sum(py_bytes(r[c], types[c]) for r in rows for c in types)
    seen: set = set()
    req = 0.0
    for r in rows:
        if r[KEY] not in seen:
            seen.add(r[KEY])
            req += sum(py_bytes(r[c], types[c]) for c in (KEY, *ro)) + 4 * (len(types) - 1 - len(ro))
        req += sum(py_bytes(r[c], types[c]) for c in types if c not in ro and c != KEY)
    return imp, req
