"""What the formulas read: the model's shape (`Shape`) and the statistics of one step (`StepStats`).

Two sources of the step statistics:
- `batch_stats(batch, cfg)`: exact, Python ints, from a concrete RequestBatch (its k_r, L_r, the
  padding the reference does) — what `validate` compares against FlopCounterMode;
- `expected_stats(spec, cfg, requests)`: expectations from the spec's distributions (k, L and
  pooling are drawn independently per request by the generator, so products factor) — for planning.
The formulas are plain arithmetic on those statistics, so a StepStats may also hold numpy arrays
and evaluate many configs at once (roo_ref.cost.projection).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeAlias

import numpy as np

from roo_ref.model_presets import ModelConfig
from workloads.errors import UserError
from workloads.spec import WorkloadSpec

Num: TypeAlias = Any
"""An int (exact statistics), a float (expectations) or a numpy array of floats (many configs)."""


@dataclass(frozen=True)
class Shape:
    """What the formulas need from the spec: feature counts, dense widths, tasks, table rows."""

    n_user_sparse: int
    user_dense: int
    n_item_sparse: int
    item_dense: int
    n_tasks: int
    user_table_rows: tuple[int, ...]
    item_table_rows: tuple[int, ...]
    history_item_rows: int
    action_rows: int

    @classmethod
    def of(cls, spec: WorkloadSpec, cfg: ModelConfig) -> Shape:
        def rows(c: float) -> int:
            return max(1, min(int(c), int(cfg.max_table_rows)))

        return cls(
            n_user_sparse=spec.n_user_sparse,
            user_dense=spec.user_dense,
            n_item_sparse=spec.n_item_sparse,
            item_dense=spec.item_dense,
            n_tasks=spec.n_tasks,
            user_table_rows=tuple(rows(g.cardinality) for _, g in spec.user_features()),
            item_table_rows=tuple(rows(g.cardinality) for _, g in spec.item_features()),
            history_item_rows=rows(spec.history.item_cardinality),
            action_rows=rows(spec.history.action_types),
        )


@dataclass(frozen=True)
class LayoutStats:
    """The statistics one layout's formulas read: the user side runs once per request under ROO
    (`user_rows` = R) and once per impression otherwise (`user_rows` = N, ids and history times k)."""

    requests: Num
    impressions: Num
    user_rows: Num
    user_ids: Num
    hist: Num
    hist_capped: Num
    item_ids: Num
    pairs: Num
    pairs_user: Num
    pad: Num
    padlen: Num


@dataclass(frozen=True)
class StepStats:
    """Statistics of one training step (both layouts).

    requests R and impressions N; user_ids = sum_r u_r (user sparse ids), user_ids_k = sum_r k_r u_r;
    hist = sum_r L_r, hist_k = sum_r k_r L_r; item_ids = item sparse ids; hist_capped(_k): the same
    with the HSTU-truncated history L'_r = min(L_r, max_history_len); pairs_*: mask-aware attention
    pairs per layout (pairs_user_*: context/history-only pairs); pad_* = B * N_max^2 and
    padlen_* = B * N_max, the padded attention the torch reference runs (B sequences padded to the
    batch's longest, N_max)."""

    requests: Num
    impressions: Num
    user_ids: Num
    user_ids_k: Num
    hist: Num
    hist_k: Num
    item_ids: Num
    hist_capped: Num
    hist_capped_k: Num
    pairs_roo: Num
    pairs_imp: Num
    pairs_user_roo: Num
    pairs_user_imp: Num
    pad_roo: Num
    pad_imp: Num
    padlen_roo: Num
    padlen_imp: Num

    def of_layout(self, layout: str) -> LayoutStats:
        roo = layout == "roo"
        return LayoutStats(
            requests=self.requests,
            impressions=self.impressions,
            user_rows=self.requests if roo else self.impressions,
            user_ids=self.user_ids if roo else self.user_ids_k,
            hist=self.hist if roo else self.hist_k,
            hist_capped=self.hist_capped if roo else self.hist_capped_k,
            item_ids=self.item_ids,
            pairs=self.pairs_roo if roo else self.pairs_imp,
            pairs_user=self.pairs_user_roo if roo else self.pairs_user_imp,
            pad=self.pad_roo if roo else self.pad_imp,
            padlen=self.padlen_roo if roo else self.padlen_imp,
        )

    def to_dict(self) -> dict[str, Num]:
        return {name: getattr(self, name) for name in STAT_KEYS}


STAT_KEYS: tuple[str, ...] = tuple(f.name for f in fields(StepStats))


def hist_cap(cfg: ModelConfig) -> int | None:
    """The history length HSTU truncates to (None: no truncation)."""
    return cfg.max_history_len if cfg.arch == "hstu" and cfg.max_history_len else None


def batch_stats(batch: Any, cfg: ModelConfig) -> StepStats:
    """Exact statistics (Python ints) of a concrete batch (RequestBatch; an ImpressionBatch is
    grouped into requests first)."""
    from workloads.batch import ImpressionBatch

    if isinstance(batch, ImpressionBatch):
        batch = batch.to_requests(check_constant=False)
    k = batch.num_impressions.to("cpu").long()
    L = batch.history_lengths.to("cpu").long()
    u = batch.user_sparse_lengths.to("cpu").long().sum(0) if batch.user_sparse_lengths.shape[0] else k * 0
    cap = hist_cap(cfg)
    Lt = L.clamp(max=cap) if cap else L
    h = 1 + Lt  # context + history tokens (causal part)
    tri = h * (h + 1) // 2
    R, N = int(k.numel()), int(k.sum())
    nmax_roo = int((h + k).max()) if k.numel() else 0
    nmax_imp = int((h + 1).max()) if k.numel() else 0
    return StepStats(
        requests=R,
        impressions=N,
        user_ids=int(u.sum()),
        user_ids_k=int((k * u).sum()),
        hist=int(L.sum()),
        hist_k=int((k * L).sum()),
        item_ids=int(batch.item_sparse_values.numel()),
        hist_capped=int(Lt.sum()),
        hist_capped_k=int((k * Lt).sum()),
        pairs_roo=int((tri + k * (h + 1)).sum()),
        pairs_imp=int((k * (tri + h + 1)).sum()),
        pairs_user_roo=int(tri.sum()),
        pairs_user_imp=int((k * tri).sum()),
        pad_roo=R * nmax_roo**2,
        pad_imp=N * nmax_imp**2,
        padlen_roo=R * nmax_roo,
        padlen_imp=N * nmax_imp,
    )


def _pmf_dense(dist: Any) -> np.ndarray:
    xs, ps = dist.pmf_table
    out = np.zeros(int(xs.max()) + 1)
    np.add.at(out, xs, ps)
    return out


def _expected_max_moments(pmf: np.ndarray, n: float) -> tuple[float, float]:
    """E[max] and E[max^2] of n iid draws with this pmf (support 0..len-1)."""
    cdf = np.clip(np.cumsum(pmf), 0.0, 1.0)
    cdf[-1] = 1.0
    fmax = cdf**n
    p = np.diff(np.concatenate([[0.0], fmax]))
    x = np.arange(len(pmf), dtype=float)
    return float(p @ x), float(p @ x**2)


def expected_stats(spec: WorkloadSpec, cfg: ModelConfig, requests: float | None = None) -> StepStats:
    """Expected statistics of a step of `requests` requests (default: spec.requests_per_batch).

    Exact expectations under the generator's independence of k, L and pooling within a request,
    including the padded attention: N_max is a max over iid requests (P(max <= x) = F(x)^R) and,
    in the impression layout, independent of N = sum k_r."""
    R = float(spec.requests_per_batch if requests is None else requests)
    if not R > 0:
        raise UserError(f"requests={requests} must be > 0")
    k_pmf = _pmf_dense(spec.impressions)
    L_pmf = _pmf_dense(spec.history.length)
    cap = hist_cap(cfg)
    if cap is not None and len(L_pmf) > cap + 1:
        L_pmf = np.concatenate([L_pmf[:cap], [L_pmf[cap:].sum()]])
    kx, Lx = np.arange(len(k_pmf)), np.arange(len(L_pmf))
    Ek = float(k_pmf @ kx)
    EL = spec.history.length.mean()
    ELt = float(L_pmf @ Lx)
    Eh, Eh2 = 1 + ELt, float(L_pmf @ (1 + Lx) ** 2)
    Etri = (Eh2 + Eh) / 2
    Eu = sum(g.count * g.pooling.mean() for g in spec.user_sparse)
    Ei = sum(g.count * g.pooling.mean() for g in spec.item_sparse)
    # sequence lengths: roo 1 + L' + k (a convolution), impression 2 + L'
    seq_roo = np.convolve(np.concatenate([[0.0], L_pmf]), k_pmf)
    seq_imp = np.concatenate([[0.0, 0.0], L_pmf])
    m1r, m2r = _expected_max_moments(seq_roo, R)
    m1i, m2i = _expected_max_moments(seq_imp, R)
    N = R * Ek
    return StepStats(
        requests=R,
        impressions=N,
        user_ids=R * Eu,
        user_ids_k=R * Ek * Eu,
        hist=R * EL,
        hist_k=R * Ek * EL,
        item_ids=N * Ei,
        hist_capped=R * ELt,
        hist_capped_k=R * Ek * ELt,
        pairs_roo=R * (Etri + Ek * (Eh + 1)),
        pairs_imp=R * Ek * (Etri + Eh + 1),
        pairs_user_roo=R * Etri,
        pairs_user_imp=R * Ek * Etri,
        pad_roo=R * m2r,
        pad_imp=N * m2i,
        padlen_roo=R * m1r,
        padlen_imp=N * m1i,
    )
