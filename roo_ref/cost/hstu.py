"""Formulas of the HSTU ranking model, per layout.

Tokens per step T = user rows + history tokens + N targets (context + history truncated to
L' = min(L, max_history_len) + targets); under ROO one sequence per request carries all its
targets, in the impression layout each impression is its own sequence with a copy of the history.
Per-token components carry the share of context + history tokens as their user fraction, the
attention the share of history-history pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

from roo_ref.cost.components import ID_BYTES, PARAM_BYTES, Acc, Component, heads_loss, new_component
from roo_ref.cost.stats import LayoutStats, Num, Shape
from roo_ref.model_presets import ModelConfig


@dataclass(frozen=True)
class _Tokens:
    """Token counts of one layout's sequences."""

    total: Num  # T = user rows + history tokens + targets
    user_share: Num  # (user rows + history tokens) / T in the impression layout, 0 under ROO

    @classmethod
    def of(cls, v: LayoutStats, layout: str) -> _Tokens:
        roo = layout == "roo"
        T = v.user_rows + v.hist_capped + v.impressions
        return cls(T, (v.user_rows + v.hist_capped) / T if not roo else 0.0)


def hstu_components(sh: Shape, cfg: ModelConfig, v: LayoutStats, layout: str, e: int) -> list[Component]:
    """The compute rows of an HSTU model in one layout (`v`: that layout's statistics)."""
    tok = _Tokens.of(v, layout)
    out = _inputs(sh, cfg, v, layout, e)
    out += _sequence_and_projections(cfg, tok, layout, e)
    out.append(_attention(cfg, v, tok, layout, e))
    out += _pointwise_and_out(cfg, tok, layout, e)

    N, d = v.impressions, cfg.embedding_dim
    c = new_component("head mlp", layout, "item", ("head",))
    a = Acc(c, e)
    a.elementwise(N * d, bwd_passes=1, flops=0, kernels=2)  # gather the target tokens
    width = a.mlp(N, d, cfg.head_arch)
    out.append(c)
    out.append(heads_loss(layout, N, width, sh.n_tasks, e))
    return out


def _inputs(sh: Shape, cfg: ModelConfig, v: LayoutStats, layout: str, e: int) -> list[Component]:
    """User embeddings and context, history embeddings, item embeddings and item arch."""
    N, rows_u, ht, d = v.impressions, v.user_rows, v.hist_capped, cfg.embedding_dim
    out: list[Component] = []

    c = new_component("user embeddings", layout, "user", ("user_sparse",), user_fraction=1.0)
    Acc(c, e).emb_bag(v.user_ids, rows_u, d)
    c.kernels += 3 * sh.n_user_sparse + 1
    c.param_bytes += PARAM_BYTES * d * sum(sh.user_table_rows)
    out.append(c)

    c = new_component("user context", layout, "user", ("user_context",), user_fraction=1.0)
    Acc(c, e).linear(rows_u, sh.n_user_sparse * d + sh.user_dense, d, grad_in=sh.n_user_sparse > 0)
    out.append(c)

    c = new_component("history embeddings", layout, "user", ("action_table",), user_fraction=1.0)
    a = Acc(c, e)
    a.emb_bag(2 * ht, 2 * ht, d)
    a.elementwise(ht * d, reads=2, writes=1, bwd_passes=2, kernels=8)
    c.param_bytes += PARAM_BYTES * d * sh.action_rows
    out.append(c)

    c = new_component("item embeddings", layout, "item", ("item_sparse", "item_table"))
    a = Acc(c, e)
    a.emb_bag(v.item_ids, N * sh.n_item_sparse, d)
    a.emb_bag(N, N, d)
    c.kernels += 3 * sh.n_item_sparse + 4
    c.param_bytes += PARAM_BYTES * d * (sum(sh.item_table_rows) + sh.history_item_rows)
    out.append(c)

    n_item_in = sh.n_item_sparse * d + sh.item_dense
    if n_item_in:
        c = new_component("item arch", layout, "item", ("item_arch",))
        Acc(c, e).linear(N, n_item_in, d, grad_in=sh.n_item_sparse > 0)
        out.append(c)
    return out


def _layer_paths(cfg: ModelConfig) -> list[str]:
    return [f"hstu.layers.{i}" for i in range(cfg.hstu_layers)]


def _sequence_and_projections(cfg: ModelConfig, tok: _Tokens, layout: str, e: int) -> list[Component]:
    """The jagged sequence build, the layer norms and the uvqk projections on every token."""
    T, d, nl = tok.total, cfg.embedding_dim, cfg.hstu_layers
    layers = _layer_paths(cfg)
    out: list[Component] = []

    c = new_component(
        "hstu sequence build",
        layout,
        "shared",
        user_fraction=tok.user_share,
        note="jagged concat of context/history/targets, RAB positions and times",
    )
    Acc(c, e).elementwise(T * d, reads=1, writes=1, bwd_passes=2, flops=0, kernels=40)
    c.bytes += ID_BYTES * T * 8
    out.append(c)

    norms = [f"{p}.norm" for p in layers] + [f"{p}.norm_attn" for p in layers] + ["hstu.norm"]
    c = new_component("hstu layer norms", layout, "shared", norms, user_fraction=tok.user_share)
    a = Acc(c, e)
    for _ in range(nl):
        a.layer_norm(T, d)
        a.layer_norm(T, cfg.v_dim)
    a.layer_norm(T, d)
    out.append(c)

    uvqk = [f"{p}.uvqk" for p in layers]
    c = new_component("hstu uvqk projection", layout, "shared", uvqk, user_fraction=tok.user_share)
    a = Acc(c, e)
    for _ in range(nl):
        a.linear(T, d, 2 * cfg.v_dim + 2 * cfg.qk_dim)
    out.append(c)
    return out


def _attention(cfg: ModelConfig, v: LayoutStats, tok: _Tokens, layout: str, e: int) -> Component:
    """Padded dense FLOPs (what the torch reference runs and FlopCounterMode counts) and the
    mask-aware ones (the pairs the target-aware mask keeps); bytes per backend."""
    T, H, nl = tok.total, cfg.num_heads, cfg.hstu_layers
    pad, padlen, pairs = v.pad, v.padlen, v.pairs
    dqk, dv = cfg.d_qk, cfg.d_v
    c = new_component(
        "hstu attention",
        layout,
        "shared",
        [f"{p}.attention" for p in _layer_paths(cfg)],
        user_fraction=(v.pairs_user / pairs if layout != "roo" else 0.0),
        note="fwd/bwd_flops: padded dense (counted by FlopCounterMode); *_mask_aware: kept pairs",
    )
    if cfg.rab:
        c.param_bytes += nl * PARAM_BYTES * (cfg.pos_buckets + cfg.time_buckets)
    per = 2 * H * (dqk + dv)
    c.fwd_flops, c.bwd_flops = nl * per * pad, nl * 2 * per * pad
    c.fwd_flops_mask_aware, c.bwd_flops_mask_aware = nl * per * pairs, nl * 2 * per * pairs
    if cfg.attention_backend == "torch":
        # padded reference: ~8 passes over the [B, H, N, N] scores forward, ~12 backward; plus the
        # padding of q, k, v and the un-padding of the output (forward and backward)
        c.bytes = nl * (
            e * H * pad * 20
            + 4 * pad * 4
            + e * padlen * (2 * cfg.qk_dim + cfg.v_dim) * 4
            + e * T * (2 * cfg.qk_dim + 2 * cfg.v_dim) * 4
        )
        c.other_flops = nl * H * pad * 14
        c.kernels = nl * 60
    else:
        # fused kernel: read q, k, v, write out; backward reads them + dout, writes dq, dk, dv
        c.bytes = nl * e * T * (2 * cfg.qk_dim + cfg.v_dim) * 4
        c.other_flops = nl * H * pairs * 14
        c.kernels = nl * 3
    return c


def _pointwise_and_out(cfg: ModelConfig, tok: _Tokens, layout: str, e: int) -> list[Component]:
    """silu(u) * norm(a) with the residual add, and the out projections."""
    T, d, nl = tok.total, cfg.embedding_dim, cfg.hstu_layers
    c = new_component(
        "hstu pointwise", layout, "shared", user_fraction=tok.user_share, note="silu(u) * norm(a), residual add"
    )
    a = Acc(c, e)
    for _ in range(nl):
        a.elementwise(T * cfg.v_dim, reads=1, writes=1, bwd_passes=3, flops=4, kernels=3)  # silu
        a.elementwise(T * cfg.v_dim, reads=2, writes=1, bwd_passes=4, flops=1, kernels=3)  # gate
        a.elementwise(T * d, reads=2, writes=1, bwd_passes=1, flops=1, kernels=1)  # residual
    pointwise = c

    outs = [f"{p}.out" for p in _layer_paths(cfg)]
    c = new_component("hstu out projection", layout, "shared", outs, user_fraction=tok.user_share)
    a = Acc(c, e)
    for _ in range(nl):
        a.linear(T, cfg.v_dim, d)
    return [pointwise, c]
