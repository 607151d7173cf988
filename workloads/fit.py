"""Fit a WorkloadSpec to a user's log, so every command can run on "a workload like theirs".

Input: a Parquet file or dataset dir in roo-bench's column convention (workloads/parquet_io.py:
`history_*`, `us.*`, `is.*`, `item_id`, dense and label columns), impression level (one row per
impression, any row order) or request level, keyed by `--request-key`.

Count distributions (impressions per request, history length, pooling factors) are fitted by
maximum likelihood with scipy.stats (geometric, Poisson, lognormal, Zipf; fixed when constant),
each clipped to the observed [min, max]; the candidate with the smallest total-variation distance
to the observed histogram wins, unless that distance exceeds TV_LIMIT, in which case the empirical
histogram itself becomes the distribution. Goodness of fit (TV distance, KS statistic, relative
error of the mean) is reported for every candidate.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pyarrow as pa
from scipy import stats

from workloads.batch import RequestBatch
from workloads.distributions import Dist
from workloads.errors import UserError
from workloads.parquet_io import IS, US, read_table, table_to_impressions, table_to_requests
from workloads.spec import HistorySpec, SparseGroup, Task, WorkloadSpec

TV_LIMIT = 0.05  # above this total-variation distance the parametric fit is rejected
MAX_EMPIRICAL_BINS = 512
REQUIRED = ("item_id", "history_item_ids", "history_actions", "history_timestamps", "labels")


def _dist(**kw) -> Dist:
    if "mean" in kw:
        kw["mean_"] = kw.pop("mean")
    return Dist(**kw)


def _empirical(x: np.ndarray, lo: int, hi: int) -> Dist:
    vals, counts = np.unique(x, return_counts=True)
    if vals.size > MAX_EMPIRICAL_BINS:  # quantile bins, each represented by its mean (keeps the mean)
        edges = np.unique(np.quantile(x, np.linspace(0, 1, MAX_EMPIRICAL_BINS + 1)))
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
        counts = np.bincount(idx)
        sums = np.bincount(idx, weights=x)
        keep = counts > 0
        vals = np.rint(sums[keep] / counts[keep]).astype(np.int64)
        counts = counts[keep]
    return Dist(
        kind="empirical", values=tuple(int(v) for v in vals), weights=tuple(float(c) for c in counts), min=lo, max=hi
    )


def _tv(d: Dist, x: np.ndarray) -> float:
    xs, ps = d.pmf_table
    vals, counts = np.unique(x, return_counts=True)
    emp = dict(zip(vals.tolist(), (counts / x.size).tolist(), strict=True))
    model = dict(zip(xs.tolist(), ps.tolist(), strict=True))
    keys = set(emp) | set(model)
    return 0.5 * sum(abs(emp.get(value, 0.0) - model.get(value, 0.0)) for value in keys)


def _ks(d: Dist, x: np.ndarray) -> float:
    xs, ps = d.pmf_table
    grid = np.union1d(xs, np.unique(x))
    model_cdf = np.cumsum(ps)[np.clip(np.searchsorted(xs, grid, side="right") - 1, -1, xs.size - 1)]
    model_cdf = np.where(np.searchsorted(xs, grid, side="right") == 0, 0.0, model_cdf)
    emp_cdf = np.searchsorted(np.sort(x), grid, side="right") / x.size
    return float(np.max(np.abs(model_cdf - emp_cdf)))


def fit_counts(
    x: np.ndarray, name: str, kinds=("fixed", "geometric", "poisson", "lognormal", "zipf")
) -> tuple[Dist, dict]:
    """Best Dist for non-negative integer samples `x`, and a report of every candidate."""
    x = np.asarray(x, dtype=np.int64)
    if x.size == 0:
        raise UserError(f"{name}: no samples to fit; the input has no requests")
    lo, hi = int(x.min()), int(x.max())
    mean = float(x.mean())
    if lo == hi:
        d = Dist(kind="fixed", value=lo, min=lo, _name=name)
        return d, {"chosen": "fixed", "mean": mean, "candidates": {"fixed": {"tv": 0.0, "ks": 0.0, "mean_error": 0.0}}}
    cands: dict[str, Dist] = {}
    for kind in kinds:
        try:
            if kind == "geometric" and lo >= 1:
                cands[kind] = _dist(kind="geometric", mean=max(1.0, mean), min=lo, max=hi, _name=name)
            elif kind == "poisson" and mean > 0:
                cands[kind] = _dist(kind="poisson", mean=mean, min=lo, max=hi, _name=name)
            elif kind == "lognormal" and lo >= 1:
                s, _, scale = stats.lognorm.fit(x.astype(float), floc=0)
                if s > 0:
                    cands[kind] = _dist(
                        kind="lognormal", mean=scale * math.exp(s * s / 2), sigma=s, min=lo, max=hi, _name=name
                    )
            elif kind == "zipf" and lo >= 1:
                # MLE of the Zipf exponent on [1, hi] (bounded search; scipy's zipf has no closed form)
                logs = np.log(x.astype(float))
                support = np.arange(1, hi + 1, dtype=float)

                def nll(a: float, logs=logs, support=support) -> float:
                    return a * logs.mean() + math.log(np.sum(support**-a))

                from scipy.optimize import minimize_scalar

                a = minimize_scalar(nll, bounds=(1.01, 6.0), method="bounded").x
                cands[kind] = _dist(kind="zipf", a=float(a), min=lo, max=hi, _name=name)
        except Exception:  # noqa: BLE001 - a candidate that cannot be fitted is simply not a candidate
            continue
    report: dict[str, dict[str, Any]] = {}
    for kind, d in cands.items():
        report[kind] = {
            "tv": _tv(d, x),
            "ks": _ks(d, x),
            "mean_error": d.mean() / mean - 1 if mean else 0.0,
            "params": d.to_dict(),
        }
    best = min(report, key=lambda kind: report[kind]["tv"]) if report else None
    if best is None or report[best]["tv"] > TV_LIMIT or abs(report[best]["mean_error"]) > 0.02:
        d = _empirical(x, lo, hi)
        d = dataclasses.replace(d, _name=name)
        report["empirical"] = {"tv": _tv(d, x), "ks": _ks(d, x), "mean_error": d.mean() / mean - 1}
        best = "empirical"
    else:
        d = cands[best]
    return d, {"chosen": best, "mean": mean, "candidates": report}


def _popularity(ids: np.ndarray, cardinality: int) -> tuple[str, float]:
    """'zipf' with the rank-frequency slope, or 'uniform' when the slope is flat."""
    if ids.size < 100:
        return "uniform", 1.1
    _, counts = np.unique(ids, return_counts=True)
    freq = np.sort(counts)[::-1].astype(float)
    top = min(freq.size, 1000)
    if top < 10:
        return "uniform", 1.1
    ranks = np.arange(1, top + 1, dtype=float)
    slope = -np.polyfit(np.log(ranks), np.log(freq[:top]), 1)[0]
    if slope < 0.3:
        return "uniform", 1.1
    return "zipf", float(round(slope, 3))


def _load(path, request_key: str) -> tuple[RequestBatch, list[str], list[str]]:
    t = read_table(path)
    if t.num_rows == 0:
        raise UserError(f"{path} has no rows; nothing to fit")
    if request_key not in t.column_names:
        raise UserError(f"request key column {request_key!r} is not in {path}; columns: {', '.join(t.column_names)}")
    if request_key != "request_id":
        if "request_id" in t.column_names:
            raise UserError(f"{path} has a column 'request_id' besides the key {request_key!r}; rename it first")
        t = t.rename_columns(["request_id" if c == request_key else c for c in t.column_names])
    missing = [c for c in REQUIRED if c not in t.column_names]
    if missing:
        raise UserError(
            f"{path} lacks column(s) {missing} of roo-bench's convention (history_*, us.*, is.*, item_id, labels); "
            "rename your columns to it (see workloads/parquet_io.py)"
        )
    user = [c[len(US) :] for c in t.column_names if c.startswith(US)]
    item = [c[len(IS) :] for c in t.column_names if c.startswith(IS)]
    request_level = pa.types.is_list(t.schema.field("item_id").type)
    if request_level:
        return table_to_requests(t), user, item
    return table_to_impressions(t).to_requests(check_constant=False), user, item


def fit_batch(
    b: RequestBatch, user_names: list[str] | None = None, item_names: list[str] | None = None, name: str = "fitted"
) -> tuple[WorkloadSpec, dict]:
    report: dict = {}
    k = b.num_impressions.numpy()
    imp, report["impressions"] = fit_counts(k, "impressions", ("fixed", "geometric", "poisson", "lognormal", "zipf"))
    if imp.min < 1:
        imp = dataclasses.replace(imp, min=1)
    hl = b.history_lengths.numpy()
    hist_len, report["history_length"] = fit_counts(hl, "history.length", ("fixed", "lognormal", "poisson", "zipf"))
    h_ids = b.history_item_ids.numpy()
    all_items = np.concatenate([h_ids, b.item_id.numpy()])
    card = int(all_items.max()) + 1 if all_items.size else 1
    _, zipf_a = _popularity(all_items, card)
    acts = b.history_actions.numpy()
    ts = b.history_timestamps.numpy()
    gaps = np.diff(ts)
    same = np.ones(gaps.size, dtype=bool)
    ends = np.cumsum(hl)[:-1] - 1
    same[ends[(ends >= 0) & (ends < gaps.size)]] = False
    pos_gaps = gaps[same & (gaps > 0)]
    history = HistorySpec(
        length=hist_len,
        item_cardinality=card,
        zipf_a=zipf_a,
        action_types=int(acts.max()) + 1 if acts.size else 1,
        mean_gap_s=float(pos_gaps.mean()) if pos_gaps.size else 3600.0,
    )
    user_sparse = _groups(b.user_sparse_lengths.numpy(), b.user_sparse_values.numpy(), user_names, "user", report)
    item_sparse = _groups(b.item_sparse_lengths.numpy(), b.item_sparse_values.numpy(), item_names, "item", report)
    labels = b.labels.numpy()
    tasks = tuple(Task(f"task{j}", float(labels[:, j].mean())) for j in range(labels.shape[1])) or (Task(),)
    spec = WorkloadSpec(
        name=name,
        description=f"fitted to {b.num_requests} requests / {b.num_impressions_total} impressions",
        impressions=imp,
        history=history,
        user_sparse=user_sparse,
        user_dense=int(b.user_dense.shape[1]),
        item_sparse=item_sparse,
        item_dense=int(b.item_dense.shape[1]),
        tasks=tasks,
    )
    report["data"] = {
        "requests": b.num_requests,
        "impressions": b.num_impressions_total,
        "impressions_per_request": float(k.mean()),
        "history_length_mean": float(hl.mean()),
    }
    report["spec_means"] = {"impressions_per_request": imp.mean(), "history_length": hist_len.mean()}
    return spec, report


def _groups(lengths: np.ndarray, values: np.ndarray, names: list[str] | None, side: str, report: dict):
    groups = []
    pos = 0
    for f in range(lengths.shape[0]):
        m = int(lengths[f].sum())
        vals = values[pos : pos + m]
        pos += m
        fname = names[f] if names and f < len(names) else f"{side}_{f}"
        pooling, rep = fit_counts(lengths[f], f"{side}_sparse.{f}.pooling", ("fixed", "poisson", "lognormal"))
        card = int(vals.max()) + 1 if vals.size else 1
        pop, a = _popularity(vals, card)
        report.setdefault(f"{side}_sparse", {})[fname] = {
            "pooling": rep["chosen"],
            "cardinality": card,
            "popularity": pop,
            "zipf_a": a,
        }
        groups.append(SparseGroup(fname, 1, card, pooling, pop, a))
    return tuple(groups)


def fit_file(path, request_key: str) -> tuple[WorkloadSpec, dict]:
    b, user, item = _load(path, request_key)
    return fit_batch(b, user, item)
