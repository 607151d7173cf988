"""Fit a WorkloadSpec to a user's log, so every command can run on "a workload like theirs".

- `fit_file(path, request_key, roles)`: a Parquet log of any schema (impression level, any row
  order, or request level as `convert` writes it): column roles inferred or given
  (workloads.roles), every column mapped to a spec feature (workloads.fit_log).
- `fit_batch(batch)`: a RequestBatch already in memory (roo-bench's own layout).

The count distributions are fitted by workloads.fit_counts (maximum likelihood, goodness of fit
for every candidate, empirical fallback).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from workloads.batch import RequestBatch
from workloads.fit_counts import TV_LIMIT, fit_counts, popularity
from workloads.fit_log import fit_log
from workloads.roles import RoleOptions
from workloads.spec import HistorySpec, SparseGroup, Task, WorkloadSpec

__all__ = ["TV_LIMIT", "fit_batch", "fit_counts", "fit_file", "popularity"]


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
    _, zipf_a = popularity(all_items, card)
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
        pop, a = popularity(vals, card)
        report.setdefault(f"{side}_sparse", {})[fname] = {
            "pooling": rep["chosen"],
            "cardinality": card,
            "popularity": pop,
            "zipf_a": a,
        }
        groups.append(SparseGroup(fname, 1, card, pooling, pop, a))
    return tuple(groups)


def fit_file(path, request_key: str, roles: RoleOptions | None = None, on_conflict: str = "error"):
    """Fit a spec to the log at `path` (any schema; see workloads.fit_log); (spec, report)."""
    res = fit_log(path, request_key, roles or RoleOptions(), on_conflict)
    return res.spec, res.report
