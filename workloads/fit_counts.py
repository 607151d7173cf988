"""Fit count distributions to samples: the building block of every fitted spec.

Count distributions (impressions per request, history length, pooling factors) are fitted by
maximum likelihood with scipy.stats (geometric, Poisson, lognormal, Zipf; fixed when constant),
each clipped to the observed [min, max]; the candidate with the smallest total-variation distance
to the observed histogram wins, unless that distance exceeds TV_LIMIT, in which case the empirical
histogram itself becomes the distribution. Goodness of fit (TV distance, KS statistic, relative
error of the mean) is reported for every candidate. `popularity` fits the rank-frequency slope of
ids (Zipf) or calls them uniform.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import stats

from workloads.distributions import Dist
from workloads.errors import UserError

TV_LIMIT = 0.05  # above this total-variation distance the parametric fit is rejected
MAX_EMPIRICAL_BINS = 512


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


def popularity(ids: np.ndarray, cardinality: int) -> tuple[str, float]:
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
