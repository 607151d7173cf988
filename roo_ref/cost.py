"""Analytic cost model of one training step, per model component, both layouts.

What it prices (docs/cost-model.md has every formula and assumption):
- FLOPs, forward and backward, *exactly as torch's FlopCounterMode counts them*: the matmul-family
  ops (mm, addmm, bmm) of every Linear, interaction, in-batch logits matrix and the HSTU attention's
  padded explicit matmuls, following autograd (a Linear whose input does not require grad runs no
  grad-input matmul). Elementwise work (activations, layer norms, losses, optimizers) is outside the
  counter's accounting; it is estimated separately in `other_flops` and never mixed into `fwd_flops`.
- HSTU attention both ways: `fwd_flops`/`bwd_flops` = the padded dense count the torch reference
  runs ([B, H, N_max, N_max] scores), `*_mask_aware` = the pairs the target-aware mask keeps
  (history causal h(h+1)/2 with h = 1 + L context+history tokens, plus t(h+1) for t targets).
- Bytes moved through device memory (operands read and results written once per kernel; weights,
  activations, embedding rows, optimizer state), parameter bytes, kernel counts.
- Time: roofline per component, max(FLOPs / peak(dtype), bytes / bandwidth) + kernels x launch
  overhead, on a roo_ref.hardware.DeviceSpec; the user-side share f_u and the ideal speedup.
- Communication (roo_ref.comm_cost) and storage (workloads.storage) rows in the same table.

Two sources of the per-step statistics the formulas need (`Stats`, a dict):
- `batch_stats(batch, cfg)`: exact, Python ints, from a concrete RequestBatch (its k_r, L_r, the
  padding the reference does) — what `validate` compares against FlopCounterMode;
- `expected_stats(spec, cfg, requests)`: expectations from the spec's distributions (k, L and
  pooling are drawn independently per request by the generator, so products factor) — for planning.
The formulas (`layout_components`) are plain arithmetic on those statistics, so they also accept
numpy arrays and evaluate many configs at once (harness.project).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from roo_ref.model_presets import ModelConfig
from workloads.errors import SpecError, UserError
from workloads.spec import WorkloadSpec

LAYOUTS = ("impression", "roo")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
PARAM_BYTES = 4  # fp32 master weights (bf16 runs as autocast over fp32 parameters, roo_ref.train)
ID_BYTES = 8  # int64 ids and lengths
ATTENTION_COUNTS = ("padded", "mask_aware")

# per-element estimates for work FlopCounterMode does not count (docs/cost-model.md)
LN_FWD_FLOPS, LN_BWD_FLOPS = 8, 16
ADAM_FLOPS, ADAGRAD_FLOPS = 12, 4
BCE_FLOPS = 10
# rows whose parameters are embedding tables (sparse gradients, row-wise Adagrad, no all-reduce)
EMBEDDING_ROWS = ("user embeddings", "history pooling", "history embeddings", "item embeddings")


# --- components ----------------------------------------------------------------------------------
@dataclass
class Component:
    """One row of the cost table (numbers are ints, floats or numpy arrays)."""

    name: str
    layout: str
    side: str  # "user" | "item" | "shared" | "expansion" | "optimizer" | "comm" | "storage"
    fwd_flops: object = 0  # FlopCounterMode-accounted (matmul family)
    bwd_flops: object = 0
    fwd_flops_mask_aware: object | None = None  # None: same as fwd_flops
    bwd_flops_mask_aware: object | None = None
    other_flops: object = 0  # elementwise estimate, outside FlopCounterMode's accounting
    bytes: object = 0  # device memory traffic, fwd + bwd (+ update for optimizers)
    kernels: object = 0
    param_bytes: object = 0
    user_fraction: object = 0.0  # share of this component's impression-layout work that ROO dedups
    comm_bytes: object = 0  # network bytes per step (all ranks), comm rows only
    storage_bytes: object = 0  # uncompressed bytes of the step's samples, storage row only
    modules: tuple[str, ...] = ()  # roo_ref.flops module paths whose counted FLOPs this row prices
    note: str = ""

    @property
    def flops(self):
        return self.fwd_flops + self.bwd_flops

    @property
    def flops_mask_aware(self):
        f = self.fwd_flops if self.fwd_flops_mask_aware is None else self.fwd_flops_mask_aware
        b = self.bwd_flops if self.bwd_flops_mask_aware is None else self.bwd_flops_mask_aware
        return f + b

    def to_dict(self) -> dict:
        d = {f.name: _py(getattr(self, f.name)) for f in fields(self)}
        d["modules"] = list(self.modules)
        d["flops"] = _py(self.flops)
        d["flops_mask_aware"] = _py(self.flops_mask_aware)
        d["fwd_flops_mask_aware"] = _py(self.fwd_flops if self.fwd_flops_mask_aware is None
                                        else self.fwd_flops_mask_aware)
        d["bwd_flops_mask_aware"] = _py(self.bwd_flops if self.bwd_flops_mask_aware is None
                                        else self.bwd_flops_mask_aware)
        return d


def _py(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


class _Acc:
    """Accumulates Linear/elementwise pieces into one Component."""

    def __init__(self, comp: Component, e: int):
        self.c, self.e = comp, e

    def linear(self, m, k, n, *, bias=True, grad_in=True, act=False):
        """nn.Linear (addmm, or mm without bias) on [m, k] -> [m, n], optional ReLU after it.
        Backward: grad-weight mm always; grad-input mm only if the input requires grad."""
        c, e = self.c, self.e
        f = 2 * m * k * n
        c.fwd_flops += f
        c.bwd_flops += f * 2 if grad_in else f
        c.bytes += e * (m * k + k * n + m * n) + (2 * e * m * n if act else 0)
        c.bytes += e * (m * k + m * n) + PARAM_BYTES * k * n + (e * m * n if bias else 0)
        if grad_in:
            c.bytes += e * (m * n + k * n + m * k)
        if act:
            c.bytes += 3 * e * m * n
        c.kernels += 2 + (1 if bias else 0) + (1 if grad_in else 0) + (2 if act else 0)
        c.other_flops += (2 * m * n if act else 0) + (2 * m * n if bias else 0)
        c.param_bytes += PARAM_BYTES * (k * n + (n if bias else 0))
        return self

    def mlp(self, m, k, sizes, *, final_act=True, grad_in=True):
        d = k
        for i, s in enumerate(sizes):
            self.linear(m, d, s, grad_in=grad_in if i == 0 else True, act=final_act or i < len(sizes) - 1)
            d = s
        return d

    def elementwise(self, elements, *, reads=1, writes=1, bwd_passes=3, flops=1, kernels=2):
        """An elementwise op over `elements` values: fwd reads+writes, bwd `bwd_passes` passes."""
        c, e = self.c, self.e
        c.bytes += e * elements * (reads + writes + bwd_passes)
        c.other_flops += flops * elements * 2
        c.kernels += kernels
        return self

    def layer_norm(self, rows, width):
        c, e = self.c, self.e
        c.bytes += e * rows * width * (2 + 3) + 2 * PARAM_BYTES * width * 3
        c.other_flops += (LN_FWD_FLOPS + LN_BWD_FLOPS) * rows * width
        c.kernels += 3
        c.param_bytes += 2 * PARAM_BYTES * width
        return self


# --- model shape -----------------------------------------------------------------------------------
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
        def rows(c):
            return max(1, min(int(c), int(cfg.max_table_rows)))

        return cls(
            n_user_sparse=spec.n_user_sparse, user_dense=spec.user_dense,
            n_item_sparse=spec.n_item_sparse, item_dense=spec.item_dense, n_tasks=spec.n_tasks,
            user_table_rows=tuple(rows(g.cardinality) for _, g in spec.user_features()),
            item_table_rows=tuple(rows(g.cardinality) for _, g in spec.item_features()),
            history_item_rows=rows(spec.history.item_cardinality), action_rows=rows(spec.history.action_types),
        )


# --- statistics of a step ------------------------------------------------------------------------------
STAT_KEYS = (
    "R", "N", "user_ids", "user_ids_k", "hist", "hist_k", "item_ids",
    "ht", "ht_k", "pairs_roo", "pairs_imp", "pairs_user_roo", "pairs_user_imp",
    "pad_roo", "pad_imp", "padlen_roo", "padlen_imp",
)
"""R requests, N impressions; user_ids = sum_r u_r (user sparse ids), user_ids_k = sum_r k_r u_r;
hist = sum_r L_r, hist_k = sum_r k_r L_r; item_ids = item sparse ids; ht/ht_k: the same with the
HSTU-truncated history L'_r = min(L_r, max_history_len); pairs_*: mask-aware attention pairs per
layout (pairs_user_*: context/history-only pairs); pad_* = B * N_max^2 and padlen_* = B * N_max, the
padded attention the torch reference runs (B sequences padded to the batch's longest, N_max)."""


def _hist_cap(cfg: ModelConfig) -> int | None:
    return cfg.max_history_len if cfg.arch == "hstu" and cfg.max_history_len else None


def batch_stats(batch, cfg: ModelConfig) -> dict:
    """Exact statistics (Python ints) of a concrete batch (RequestBatch; an ImpressionBatch is
    grouped into requests first)."""
    from workloads.batch import ImpressionBatch

    if isinstance(batch, ImpressionBatch):
        batch = batch.to_requests(check_constant=False)
    k = batch.num_impressions.to("cpu").long()
    L = batch.history_lengths.to("cpu").long()
    u = batch.user_sparse_lengths.to("cpu").long().sum(0) if batch.user_sparse_lengths.shape[0] else k * 0
    cap = _hist_cap(cfg)
    Lt = L.clamp(max=cap) if cap else L
    h = 1 + Lt  # context + history tokens (causal part)
    tri = h * (h + 1) // 2
    s = {
        "R": int(k.numel()),
        "N": int(k.sum()),
        "user_ids": int(u.sum()),
        "user_ids_k": int((k * u).sum()),
        "hist": int(L.sum()),
        "hist_k": int((k * L).sum()),
        "item_ids": int(batch.item_sparse_values.numel()),
        "ht": int(Lt.sum()),
        "ht_k": int((k * Lt).sum()),
        "pairs_roo": int((tri + k * (h + 1)).sum()),
        "pairs_imp": int((k * (tri + h + 1)).sum()),
        "pairs_user_roo": int(tri.sum()),
        "pairs_user_imp": int((k * tri).sum()),
    }
    nmax_roo = int((h + k).max()) if k.numel() else 0
    nmax_imp = int((h + 1).max()) if k.numel() else 0
    s.update(pad_roo=s["R"] * nmax_roo**2, pad_imp=s["N"] * nmax_imp**2,
             padlen_roo=s["R"] * nmax_roo, padlen_imp=s["N"] * nmax_imp)
    return s


def _pmf_dense(dist) -> np.ndarray:
    xs, ps = dist.pmf_table
    out = np.zeros(int(xs.max()) + 1)
    np.add.at(out, xs, ps)
    return out


def _expected_max_moments(pmf: np.ndarray, n: float) -> tuple[float, float]:
    """E[max] and E[max^2] of n iid draws with this pmf (support 0..len-1)."""
    cdf = np.clip(np.cumsum(pmf), 0.0, 1.0)
    cdf[-1] = 1.0
    fmax = cdf ** n
    p = np.diff(np.concatenate([[0.0], fmax]))
    x = np.arange(len(pmf), dtype=float)
    return float(p @ x), float(p @ x**2)


def expected_stats(spec: WorkloadSpec, cfg: ModelConfig, requests: float | None = None) -> dict:
    """Expected statistics of a step of `requests` requests (default: spec.requests_per_batch).

    Exact expectations under the generator's independence of k, L and pooling within a request,
    including the padded attention: N_max is a max over iid requests (P(max <= x) = F(x)^R) and,
    in the impression layout, independent of N = sum k_r."""
    R = float(spec.requests_per_batch if requests is None else requests)
    if not R > 0:
        raise UserError(f"requests={requests} must be > 0")
    k_pmf = _pmf_dense(spec.impressions)
    L_pmf = _pmf_dense(spec.history.length)
    cap = _hist_cap(cfg)
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
    return {
        "R": R, "N": N,
        "user_ids": R * Eu, "user_ids_k": R * Ek * Eu,
        "hist": R * EL, "hist_k": R * Ek * EL,
        "item_ids": N * Ei,
        "ht": R * ELt, "ht_k": R * Ek * ELt,
        "pairs_roo": R * (Etri + Ek * (Eh + 1)), "pairs_imp": R * Ek * (Etri + Eh + 1),
        "pairs_user_roo": R * Etri, "pairs_user_imp": R * Ek * Etri,
        "pad_roo": R * m2r, "pad_imp": N * m2i, "padlen_roo": R * m1r, "padlen_imp": N * m1i,
    }


# --- the formulas ------------------------------------------------------------------------------------
def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise UserError(f"layout={layout!r}; allowed: {', '.join(LAYOUTS)}")


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise UserError(f"dtype={dtype!r}; allowed: {', '.join(DTYPE_BYTES)}") from None


def check_priceable(spec: WorkloadSpec, cfg: ModelConfig) -> None:
    """Spec/model combinations the model (and so this cost model) cannot run: one SpecError."""
    from roo_ref.models import check_compatible

    if not isinstance(cfg, ModelConfig):
        raise SpecError(f"model config must be a ModelConfig, got {type(cfg).__name__}")
    check_compatible(spec, cfg)


def layout_components(spec_or_shape, cfg: ModelConfig, stats: dict, layout: str,
                      dtype: str = "bf16") -> list[Component]:
    """The component rows of one layout (no comm/storage rows; see `model_cost`)."""
    _check_layout(layout)
    sh = spec_or_shape if isinstance(spec_or_shape, Shape) else Shape.of(spec_or_shape, cfg)
    e = dtype_bytes(dtype)
    if cfg.arch == "hstu":
        comps = _hstu(sh, cfg, stats, layout, e)
    else:
        comps = _dlrm_or_two_tower(sh, cfg, stats, layout, e)
    comps.append(_dense_optimizer(comps, layout))
    return comps


def _new(name, layout, side, modules=(), **kw) -> Component:
    return Component(name=name, layout=layout, side=side, modules=tuple(modules), **kw)


def _emb_bag(acc: _Acc, ids, rows_out, width):
    """Pooled lookup: read ids and their rows, write the pooled rows; backward writes one sparse
    gradient row per id (embedding_bag's sparse backward)."""
    c = acc.c
    c.bytes += ID_BYTES * ids * 2 + PARAM_BYTES * width * ids + acc.e * rows_out * width
    c.bytes += acc.e * rows_out * width + PARAM_BYTES * width * ids
    c.other_flops += 2 * width * ids


def _dlrm_or_two_tower(sh: Shape, cfg: ModelConfig, st: dict, layout: str, e: int) -> list[Component]:
    roo = layout == "roo"
    R, N = st["R"], st["N"]
    rows_u = R if roo else N
    d = cfg.embedding_dim
    tt = cfg.arch == "two_tower"
    out: list[Component] = []

    c = _new("user embeddings", layout, "user", ("user_sparse",), user_fraction=1.0)
    a = _Acc(c, e)
    _emb_bag(a, st["user_ids"] if roo else st["user_ids_k"], rows_u, d)
    c.kernels += 3 * sh.n_user_sparse + (1 if sh.n_user_sparse else 0)
    c.param_bytes += PARAM_BYTES * d * sum(sh.user_table_rows)
    out.append(c)

    if sh.user_dense:
        c = _new("user dense arch", layout, "user", ("user_dense_arch",), user_fraction=1.0)
        _Acc(c, e).mlp(rows_u, sh.user_dense, (*cfg.dense_arch, d), grad_in=False)
        out.append(c)

    c = _new("history pooling", layout, "user", ("action_table",), user_fraction=1.0)
    a = _Acc(c, e)
    h = st["hist"] if roo else st["hist_k"]
    _emb_bag(a, 2 * h, 2 * rows_u, d)
    a.elementwise(rows_u * d, reads=2, writes=1, bwd_passes=2, kernels=6)
    c.param_bytes += PARAM_BYTES * d * sh.action_rows
    out.append(c)

    n_user_in = sh.n_user_sparse + (1 if sh.user_dense else 0) + 1
    name = "user tower" if tt else "user arch"
    c = _new(name, layout, "user", ("user_tower" if tt else "user_arch",), user_fraction=1.0)
    a = _Acc(c, e)
    a.elementwise(rows_u * n_user_in * d, bwd_passes=2, flops=0, kernels=2)  # cat
    a.mlp(rows_u, n_user_in * d, (*cfg.user_arch, cfg.tower_dim if tt else cfg.user_vectors * d), final_act=False)
    out.append(c)

    c = _new("item embeddings", layout, "item", ("item_sparse", "item_table"))
    a = _Acc(c, e)
    _emb_bag(a, st["item_ids"], N * sh.n_item_sparse, d)
    _emb_bag(a, N, N, d)  # the candidate item id
    c.kernels += 3 * sh.n_item_sparse + 4
    c.param_bytes += PARAM_BYTES * d * (sum(sh.item_table_rows) + sh.history_item_rows)
    out.append(c)

    if sh.item_dense:
        c = _new("item dense arch", layout, "item", ("item_dense_arch",))
        _Acc(c, e).mlp(N, sh.item_dense, (*cfg.dense_arch, d), grad_in=False)
        out.append(c)

    n_item_in = sh.n_item_sparse + (1 if sh.item_dense else 0) + 1
    name = "item tower" if tt else "item arch"
    c = _new(name, layout, "item", ("item_tower" if tt else "item_arch",))
    a = _Acc(c, e)
    a.elementwise(N * n_item_in * d, bwd_passes=2, flops=0, kernels=2)
    a.mlp(N, n_item_in * d, (*cfg.item_arch, cfg.tower_dim if tt else cfg.item_vectors * d), final_act=False)
    out.append(c)

    if tt:
        t = cfg.tower_dim
        c = _new("in-batch logits", layout, "user", ("similarity",), user_fraction=1.0)
        f = 2 * rows_u * t * N
        c.fwd_flops, c.bwd_flops = f, 2 * f
        s = rows_u * N
        c.bytes = e * (rows_u * t + N * t + s) + 4 * s * 4 + e * (2 * s + rows_u * t + N * t) * 2
        c.other_flops = 8 * s
        c.kernels = 12
        out.append(c)
        if roo:
            out.append(_expansion(layout, R, N, t + 1, e))
        c = _new("heads + loss", layout, "item", ("heads",))
        a = _Acc(c, e)
        a.elementwise(N * t, reads=2, writes=1, bwd_passes=3, kernels=6)  # positive score
        a.linear(N, 1, sh.n_tasks)
        c.bytes += 4 * N * sh.n_tasks * 6
        c.other_flops += BCE_FLOPS * N * sh.n_tasks
        c.kernels += 10
        out.append(c)
        return out

    if roo:
        out.append(_expansion(layout, R, N, cfg.user_vectors * d, e))
    V = cfg.user_vectors + cfg.item_vectors
    c = _new("interaction", layout, "item", ("interaction",))
    if cfg.interaction == "dot":
        f = 2 * N * V * V * d
        c.fwd_flops, c.bwd_flops = f, 2 * f
        c.bytes = e * (N * V * d * 2 + N * V * V) * 3 + e * N * (V * (V - 1) // 2 + V * d) * 4
        c.kernels = 10
        c.other_flops = 0
        width_out = V * (V - 1) // 2 + V * d
    else:
        a = _Acc(c, e)
        w = V * d
        for _ in range(cfg.dcn_layers):
            a.linear(N, w, cfg.dcn_rank, bias=False)
            a.linear(N, cfg.dcn_rank, w)
            a.elementwise(N * w, reads=3, writes=1, bwd_passes=5, flops=2, kernels=4)
        width_out = w
    out.append(c)

    c = _new("top arch", layout, "item", ("top_arch",))
    top_out = _Acc(c, e).mlp(N, width_out, cfg.top_arch)
    out.append(c)
    out.append(_heads_loss(layout, N, top_out, sh.n_tasks, e))
    return out


def _heads_loss(layout, N, width, tasks, e) -> Component:
    c = _new("heads + loss", layout, "item", ("heads",))
    a = _Acc(c, e)
    a.linear(N, width, tasks)
    c.bytes += 4 * N * tasks * 6
    c.other_flops += BCE_FLOPS * N * tasks
    c.kernels += 8
    return c


def _expansion(layout, R, N, width, e) -> Component:
    """expand_by_request: index_select forward (read R rows, write N), index_add backward."""
    c = _new("request→impression expansion", layout, "expansion")
    c.bytes = e * width * (R + N) + ID_BYTES * N * 2 + e * width * (N + 2 * R) + ID_BYTES * N
    c.other_flops = width * N  # the backward's per-request gradient sum
    c.kernels = 5
    return c


def _hstu(sh: Shape, cfg: ModelConfig, st: dict, layout: str, e: int) -> list[Component]:
    roo = layout == "roo"
    R, N = st["R"], st["N"]
    rows_u = R if roo else N
    d, H = cfg.embedding_dim, cfg.num_heads
    ht = st["ht"] if roo else st["ht_k"]
    T = rows_u + ht + N  # tokens: context + history + targets
    user_tok = (rows_u + ht) / T if not roo else 0.0
    nl = cfg.hstu_layers
    out: list[Component] = []

    c = _new("user embeddings", layout, "user", ("user_sparse",), user_fraction=1.0)
    a = _Acc(c, e)
    _emb_bag(a, st["user_ids"] if roo else st["user_ids_k"], rows_u, d)
    c.kernels += 3 * sh.n_user_sparse + 1
    c.param_bytes += PARAM_BYTES * d * sum(sh.user_table_rows)
    out.append(c)

    c = _new("user context", layout, "user", ("user_context",), user_fraction=1.0)
    _Acc(c, e).linear(rows_u, sh.n_user_sparse * d + sh.user_dense, d, grad_in=sh.n_user_sparse > 0)
    out.append(c)

    c = _new("history embeddings", layout, "user", ("action_table",), user_fraction=1.0)
    a = _Acc(c, e)
    _emb_bag(a, 2 * ht, 2 * ht, d)
    a.elementwise(ht * d, reads=2, writes=1, bwd_passes=2, kernels=8)
    c.param_bytes += PARAM_BYTES * d * sh.action_rows
    out.append(c)

    c = _new("item embeddings", layout, "item", ("item_sparse", "item_table"))
    a = _Acc(c, e)
    _emb_bag(a, st["item_ids"], N * sh.n_item_sparse, d)
    _emb_bag(a, N, N, d)
    c.kernels += 3 * sh.n_item_sparse + 4
    c.param_bytes += PARAM_BYTES * d * (sum(sh.item_table_rows) + sh.history_item_rows)
    out.append(c)

    n_item_in = sh.n_item_sparse * d + sh.item_dense
    if n_item_in:
        c = _new("item arch", layout, "item", ("item_arch",))
        _Acc(c, e).linear(N, n_item_in, d, grad_in=sh.n_item_sparse > 0)
        out.append(c)

    c = _new("hstu sequence build", layout, "shared", user_fraction=user_tok,
             note="jagged concat of context/history/targets, RAB positions and times")
    _Acc(c, e).elementwise(T * d, reads=1, writes=1, bwd_passes=2, flops=0, kernels=40)
    c.bytes += ID_BYTES * T * 8
    out.append(c)

    layers = [f"hstu.layers.{i}" for i in range(nl)]
    c = _new("hstu layer norms", layout, "shared", [f"{p}.norm" for p in layers]
             + [f"{p}.norm_attn" for p in layers] + ["hstu.norm"], user_fraction=user_tok)
    a = _Acc(c, e)
    for _ in range(nl):
        a.layer_norm(T, d)
        a.layer_norm(T, cfg.v_dim)
    a.layer_norm(T, d)
    out.append(c)

    c = _new("hstu uvqk projection", layout, "shared", [f"{p}.uvqk" for p in layers], user_fraction=user_tok)
    a = _Acc(c, e)
    for _ in range(nl):
        a.linear(T, d, 2 * cfg.v_dim + 2 * cfg.qk_dim)
    out.append(c)

    pad = st["pad_roo"] if roo else st["pad_imp"]
    padlen = st["padlen_roo"] if roo else st["padlen_imp"]
    pairs = st["pairs_roo"] if roo else st["pairs_imp"]
    pairs_user = st["pairs_user_roo"] if roo else st["pairs_user_imp"]
    dqk, dv = cfg.d_qk, cfg.d_v
    c = _new("hstu attention", layout, "shared", [f"{p}.attention" for p in layers],
             user_fraction=(pairs_user / pairs if not roo else 0.0),
             note="fwd/bwd_flops: padded dense (counted by FlopCounterMode); *_mask_aware: kept pairs")
    if cfg.rab:
        c.param_bytes += nl * PARAM_BYTES * (cfg.pos_buckets + cfg.time_buckets)
    per = 2 * H * (dqk + dv)
    c.fwd_flops, c.bwd_flops = nl * per * pad, nl * 2 * per * pad
    c.fwd_flops_mask_aware, c.bwd_flops_mask_aware = nl * per * pairs, nl * 2 * per * pairs
    if cfg.attention_backend == "torch":
        # padded reference: ~8 passes over the [B, H, N, N] scores forward, ~12 backward; plus the
        # padding of q, k, v and the un-padding of the output (forward and backward)
        c.bytes = nl * (e * H * pad * 20 + 4 * pad * 4 + e * padlen * (2 * cfg.qk_dim + cfg.v_dim) * 4
                        + e * T * (2 * cfg.qk_dim + 2 * cfg.v_dim) * 4)
        c.other_flops = nl * H * pad * 14
        c.kernels = nl * 60
    else:
        # fused kernel: read q, k, v, write out; backward reads them + dout, writes dq, dk, dv
        c.bytes = nl * e * T * (2 * cfg.qk_dim + cfg.v_dim) * 4
        c.other_flops = nl * H * pairs * 14
        c.kernels = nl * 3
    out.append(c)

    c = _new("hstu pointwise", layout, "shared", user_fraction=user_tok,
             note="silu(u) * norm(a), residual add")
    a = _Acc(c, e)
    for _ in range(nl):
        a.elementwise(T * cfg.v_dim, reads=1, writes=1, bwd_passes=3, flops=4, kernels=3)  # silu
        a.elementwise(T * cfg.v_dim, reads=2, writes=1, bwd_passes=4, flops=1, kernels=3)  # gate
        a.elementwise(T * d, reads=2, writes=1, bwd_passes=1, flops=1, kernels=1)  # residual
    out.append(c)

    c = _new("hstu out projection", layout, "shared", [f"{p}.out" for p in layers], user_fraction=user_tok)
    a = _Acc(c, e)
    for _ in range(nl):
        a.linear(T, cfg.v_dim, d)
    out.append(c)

    c = _new("head mlp", layout, "item", ("head",))
    a = _Acc(c, e)
    a.elementwise(N * d, bwd_passes=1, flops=0, kernels=2)  # gather the target tokens
    width = a.mlp(N, d, cfg.head_arch)
    out.append(c)
    out.append(_heads_loss(layout, N, width, sh.n_tasks, e))
    return out


def _dense_optimizer(comps: list[Component], layout: str) -> Component:
    """Adam on every dense parameter (28 B/param: read p, g, m, v; write p, m, v)."""
    dense_bytes = sum(c.param_bytes for c in comps if c.name not in EMBEDDING_ROWS)
    n = dense_bytes / PARAM_BYTES
    c = _new("dense optimizer (Adam)", layout, "optimizer")
    c.bytes = 7 * PARAM_BYTES * n
    c.other_flops = ADAM_FLOPS * n
    c.kernels = 12
    return c


def embedding_optimizer(cfg: ModelConfig, stats: dict, layout: str, e: int) -> Component:
    """Row-wise Adagrad on the rows the step touched (upper bound: one row per id looked up, no
    dedup): coalesce the sparse gradient, read/write the row and its one-float state."""
    roo = layout == "roo"
    d = cfg.embedding_dim
    user = stats["user_ids"] if roo else stats["user_ids_k"]
    hstu = cfg.arch == "hstu"
    hist = stats[("ht" if hstu else "hist") + ("" if roo else "_k")]
    ids = user + 2 * hist + stats["item_ids"] + stats["N"]
    c = _new("embedding optimizer (row-wise Adagrad)", layout, "optimizer")
    per_id = PARAM_BYTES * d * 5 + 2 * ID_BYTES + 8
    c.bytes = per_id * ids
    c.other_flops = ADAGRAD_FLOPS * d * ids
    c.kernels = 12
    c.user_fraction = (user + 2 * hist) / ids if not roo else 0.0
    return c


# --- time (roofline) ---------------------------------------------------------------------------------------
def _device(device):
    from roo_ref.hardware import DeviceSpec, get_device

    if isinstance(device, DeviceSpec):
        return device
    return get_device(str(device))


def component_time_s(c: Component, device, dtype: str, attention: str = "padded"):
    """max(FLOPs / peak(dtype), bytes / bandwidth) + kernels * launch overhead.

    The compute roof uses the matmul FLOPs (padded or mask-aware attention); elementwise work is
    priced by its bytes (it is bandwidth-bound)."""
    if attention not in ATTENTION_COUNTS:
        raise UserError(f"attention={attention!r}; allowed: {', '.join(ATTENTION_COUNTS)}")
    dev = _device(device)
    flops = c.flops if attention == "padded" else c.flops_mask_aware
    return np.maximum(flops / dev.peak_flops(dtype), c.bytes / dev.bandwidth) + c.kernels * dev.launch_overhead_s


def attention_mode(cfg: ModelConfig) -> str:
    """What the model actually runs: the torch reference does the padded work, a fused kernel
    skips masked blocks (priced mask-aware)."""
    return "padded" if cfg.attention_backend == "torch" else "mask_aware"


# --- whole-model cost ---------------------------------------------------------------------------------------
@dataclass
class LayoutCost:
    layout: str
    components: list[Component]
    step_s: object
    requests: object
    impressions: object
    storage_bytes_per_impression: float | None = None
    extra: dict = field(default_factory=dict)

    def total(self, attr: str):
        return sum(getattr(c, attr) for c in self.components)

    def totals(self) -> dict:
        comps = self.components
        t = {
            "fwd_flops": sum(c.fwd_flops for c in comps),
            "bwd_flops": sum(c.bwd_flops for c in comps),
            "flops": sum(c.flops for c in comps),
            "flops_mask_aware": sum(c.flops_mask_aware for c in comps),
            "other_flops": sum(c.other_flops for c in comps),
            "bytes": sum(c.bytes for c in comps),
            "kernels": sum(c.kernels for c in comps),
            "param_bytes": sum(c.param_bytes for c in comps),
            "alltoall_bytes": sum(c.comm_bytes for c in comps if c.name.startswith("all-to-all")),
            "allreduce_bytes": sum(c.comm_bytes for c in comps if c.name.startswith("all-reduce")),
            "storage_bytes": sum(c.storage_bytes for c in comps),
            "storage_bytes_per_impression": self.storage_bytes_per_impression,
            "predicted_step_ms": self.step_s * 1e3,
            "requests_per_step": self.requests,
            "impressions_per_step": self.impressions,
        }
        t.update(self.extra)
        return {k: _py(v) for k, v in t.items()}


def layout_cost(spec: WorkloadSpec, cfg: ModelConfig, stats: dict, layout: str, dtype: str = "bf16",
                device="h100", world_size: int = 1, bus_bw: float | None = None,
                a2a=None, attention: str | None = None) -> LayoutCost:
    """All rows of one layout (compute, optimizers, comm, storage) and the predicted step time.

    `a2a`: a comm_cost.A2ABytes for this layout (else the expected one for `world_size`);
    comm time is added only when `bus_bw` (bytes/s, nccl-tests busbw) is given."""
    from roo_ref import comm_cost
    from workloads.storage import uncompressed_bytes_per_impression

    e = dtype_bytes(dtype)
    attention = attention or attention_mode(cfg)
    comps = layout_components(spec, cfg, stats, layout, dtype)
    comps.insert(len(comps) - 1, embedding_optimizer(cfg, stats, layout, e))
    step = sum(component_time_s(c, device, dtype, attention) for c in comps)
    if a2a is None:
        a2a = comm_cost.expected_a2a_bytes(spec, layout, world_size, requests_per_rank=float(stats["R"]) / world_size,
                                           embedding_dim=cfg.embedding_dim, emb_bytes=e,
                                           row_cap=cfg.max_table_rows)
    cross = a2a.cross_total
    dense_param_bytes = sum(c.param_bytes for c in comps if c.name not in EMBEDDING_ROWS)
    c_a2a = _new("all-to-all (sparse features)", layout, "comm", comm_bytes=a2a.total,
                 note=f"handed bytes, all {world_size} ranks; {cross:.6g} cross ranks")
    c_ar = _new("all-reduce (dense grads)", layout, "comm",
                comm_bytes=world_size * comm_cost.allreduce_bytes(dense_param_bytes, world_size),
                note="ring all-reduce, all ranks")
    if bus_bw is not None and world_size > 1:
        step = step + comm_cost.step_a2a_time_s(a2a, world_size, bus_bw) \
            + comm_cost.allreduce_time_s(dense_param_bytes, world_size, bus_bw)
    per_imp = uncompressed_bytes_per_impression(spec, "request" if layout == "roo" else "impression")
    c_st = _new("storage (uncompressed)", layout, "storage", storage_bytes=per_imp * stats["N"],
                note="Arrow/Parquet uncompressed bytes of the step's samples (workloads.storage)")
    comps += [c_a2a, c_ar, c_st]
    return LayoutCost(layout, comps, step, stats["R"], stats["N"], per_imp,
                      extra={"alltoall_cross_bytes": cross})


def f_user(imp: LayoutCost, device, dtype: str, attention: str = "padded"):
    """User-side share of the impression layout's step time: the work ROO does once per request."""
    num = sum(component_time_s(c, device, dtype, attention) * c.user_fraction for c in imp.components)
    return num / imp.step_s


def ideal_speedup(f_u, k):
    """1 / (f_u / k + 1 - f_u)."""
    return 1.0 / (f_u / k + 1.0 - f_u)


def model_cost(spec: WorkloadSpec, cfg: ModelConfig, batch=None, requests: float | None = None,
               dtype: str = "bf16", device="h100", world_size: int = 1, bus_bw: float | None = None) -> dict:
    """Both layouts: exact from `batch` (a RequestBatch) or expected from the spec (`requests`
    per step, default spec.requests_per_batch). Returns {"layouts": {layout: LayoutCost}, "f_u",
    "ideal_speedup", "predicted_speedup", "stats", "exact"}."""
    from roo_ref import comm_cost

    check_priceable(spec, cfg)
    dev = _device(device)
    e = dtype_bytes(dtype)
    if batch is not None:
        stats = batch_stats(batch, cfg)
    else:
        stats = expected_stats(spec, cfg, requests)
    att = attention_mode(cfg)
    out = {}
    for layout in LAYOUTS:
        if batch is not None:
            a2a = comm_cost.exact_a2a_bytes(batch, layout, world_size, embedding_dim=cfg.embedding_dim,
                                            emb_bytes=e, row_cap=cfg.max_table_rows, spec=spec)
        else:
            a2a = comm_cost.expected_a2a_bytes(spec, layout, world_size, requests_per_rank=stats["R"] / world_size,
                                               embedding_dim=cfg.embedding_dim, emb_bytes=e,
                                               row_cap=cfg.max_table_rows)
        out[layout] = layout_cost(spec, cfg, stats, layout, dtype, dev, world_size, bus_bw, a2a, att)
    fu = f_user(out["impression"], dev, dtype, att)
    k = stats["N"] / stats["R"]
    return {
        "layouts": out,
        "f_u": fu,
        "mean_impressions_per_request": k,
        "ideal_speedup": ideal_speedup(fu, k),
        "predicted_speedup": out["impression"].step_s / out["roo"].step_s,
        "stats": stats,
        "exact": batch is not None,
        "attention": att,
        "device": dev,
        "dtype": dtype,
    }


def point_cost(spec: WorkloadSpec, model_config: ModelConfig, request_batch, layout: str,
               dtype: str = "bf16", device_name: str | None = None) -> dict:
    """What harness.run_point records for one measured point (exact, from its batch).

    flops_per_step: what FlopCounterMode counts (padded attention for the torch backend, the
    mask-aware count for a fused kernel it cannot see); both counts are returned as well."""
    from roo_ref.hardware import guess_device_key

    _check_layout(layout)
    key = guess_device_key(device_name or "cpu")
    mc = model_cost(spec, model_config, batch=request_batch, dtype=dtype, device=key)
    lc = mc["layouts"][layout]
    padded, masked = lc.total("flops"), lc.total("flops_mask_aware")
    torch_attention = model_config.attention_backend == "torch"
    return {
        "flops_per_step": padded if torch_attention else masked,
        "flops_masked_counted": torch_attention and model_config.arch == "hstu",
        "flops_padded": padded,
        "flops_mask_aware": masked,
        "bytes_per_step": lc.total("bytes"),
        "predicted_step_ms": lc.step_s * 1e3,
        "predicted_speedup": mc["predicted_speedup"],
        "ideal_speedup": mc["ideal_speedup"],
        "f_u": mc["f_u"],
        "device_key": key,
    }


__all__ = [
    "ATTENTION_COUNTS", "Component", "LAYOUTS", "LayoutCost", "STAT_KEYS", "Shape", "attention_mode",
    "batch_stats", "batch_storage_bytes", "check_priceable", "component_time_s", "embedding_optimizer",
    "expected_stats",
    "f_user", "ideal_speedup", "layout_components", "layout_cost", "model_cost", "point_cost",
]


# --- storage from a concrete batch ---------------------------------------------------------------------
def batch_storage_bytes(batch, spec: WorkloadSpec) -> dict:
    """Uncompressed (Arrow in-memory) bytes of a concrete batch per layout, with the per-value
    sizes of workloads.storage.row_bytes applied to the batch's actual counts (the exact
    counterpart of its expected-value model): {"impression": bytes, "roo": bytes}."""
    from workloads.storage import OFFSET

    st = batch_stats(batch, ModelConfig())
    R, N = st["R"], st["N"]
    fu, fi = spec.n_user_sparse, spec.n_item_sparse
    user_fixed = 16 + 4 * spec.user_dense + fu * OFFSET + 3 * OFFSET
    item = N * (8 + fi * OFFSET + 4 * spec.item_dense + 4 * spec.n_tasks) + 8 * st["item_ids"]
    nro_columns = 1 + fi + (1 if spec.item_dense else 0) + 1
    return {
        "impression": N * user_fixed + 8 * st["user_ids_k"] + 20 * st["hist_k"] + item,
        "roo": R * (user_fixed + OFFSET * nro_columns) + 8 * st["user_ids"] + 20 * st["hist"] + item,
    }
