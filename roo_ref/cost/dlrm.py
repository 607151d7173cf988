"""Formulas of the DLRM ranking models (early/late ranking) and two-tower retrieval, per layout.

The user side (user embeddings, dense arch, history pooling, UserArch or user tower) runs on the
layout's user rows: once per request under ROO, once per impression otherwise. The item side and
everything after the join (interaction, top MLP, logits, heads) runs per impression; under ROO the
user output is expanded to the impressions first (`expansion`), and DCN-v2's first cross layer
projects the user columns per request (V_user x_user on R rows), expanding that rank-wide product.
"""

from __future__ import annotations

from roo_ref.cost.components import (
    BCE_FLOPS,
    ID_BYTES,
    PARAM_BYTES,
    Acc,
    Component,
    heads_loss,
    new_component,
)
from roo_ref.cost.stats import LayoutStats, Num, Shape
from roo_ref.model_presets import ModelConfig


def dlrm_components(sh: Shape, cfg: ModelConfig, v: LayoutStats, layout: str, e: int) -> list[Component]:
    """The compute rows of a DLRM or two-tower model in one layout (`v`: that layout's statistics)."""
    out = _user_side(sh, cfg, v, layout, e) + _item_side(sh, cfg, v, layout, e)
    if cfg.arch == "two_tower":
        return out + _two_tower_top(sh, cfg, v, layout, e)
    return out + _dlrm_top(sh, cfg, v, layout, e)


def _user_side(sh: Shape, cfg: ModelConfig, v: LayoutStats, layout: str, e: int) -> list[Component]:
    rows_u, d = v.user_rows, cfg.embedding_dim
    tt = cfg.arch == "two_tower"
    out: list[Component] = []

    c = new_component("user embeddings", layout, "user", ("user_sparse",), user_fraction=1.0)
    Acc(c, e).emb_bag(v.user_ids, rows_u, d)
    c.kernels += 3 * sh.n_user_sparse + (1 if sh.n_user_sparse else 0)
    c.param_bytes += PARAM_BYTES * d * sum(sh.user_table_rows)
    out.append(c)

    if sh.user_dense:
        c = new_component("user dense arch", layout, "user", ("user_dense_arch",), user_fraction=1.0)
        Acc(c, e).mlp(rows_u, sh.user_dense, (*cfg.dense_arch, d), grad_in=False)
        out.append(c)

    c = new_component("history pooling", layout, "user", ("action_table",), user_fraction=1.0)
    a = Acc(c, e)
    a.emb_bag(2 * v.hist, 2 * rows_u, d)
    a.elementwise(rows_u * d, reads=2, writes=1, bwd_passes=2, kernels=6)
    c.param_bytes += PARAM_BYTES * d * sh.action_rows
    out.append(c)

    n_user_in = sh.n_user_sparse + (1 if sh.user_dense else 0) + 1
    name = "user tower" if tt else "user arch"
    c = new_component(name, layout, "user", ("user_tower" if tt else "user_arch",), user_fraction=1.0)
    a = Acc(c, e)
    a.elementwise(rows_u * n_user_in * d, bwd_passes=2, flops=0, kernels=2)  # cat
    width = cfg.tower_dim if tt else cfg.user_vectors * d
    a.mlp(rows_u, n_user_in * d, (*cfg.user_arch, width), final_act=False)
    out.append(c)
    return out


def _item_side(sh: Shape, cfg: ModelConfig, v: LayoutStats, layout: str, e: int) -> list[Component]:
    N, d = v.impressions, cfg.embedding_dim
    tt = cfg.arch == "two_tower"
    out: list[Component] = []

    c = new_component("item embeddings", layout, "item", ("item_sparse", "item_table"))
    a = Acc(c, e)
    a.emb_bag(v.item_ids, N * sh.n_item_sparse, d)
    a.emb_bag(N, N, d)  # the candidate item id
    c.kernels += 3 * sh.n_item_sparse + 4
    c.param_bytes += PARAM_BYTES * d * (sum(sh.item_table_rows) + sh.history_item_rows)
    out.append(c)

    if sh.item_dense:
        c = new_component("item dense arch", layout, "item", ("item_dense_arch",))
        Acc(c, e).mlp(N, sh.item_dense, (*cfg.dense_arch, d), grad_in=False)
        out.append(c)

    n_item_in = sh.n_item_sparse + (1 if sh.item_dense else 0) + 1
    name = "item tower" if tt else "item arch"
    c = new_component(name, layout, "item", ("item_tower" if tt else "item_arch",))
    a = Acc(c, e)
    a.elementwise(N * n_item_in * d, bwd_passes=2, flops=0, kernels=2)
    a.mlp(N, n_item_in * d, (*cfg.item_arch, cfg.tower_dim if tt else cfg.item_vectors * d), final_act=False)
    out.append(c)
    return out


def _two_tower_top(sh: Shape, cfg: ModelConfig, v: LayoutStats, layout: str, e: int) -> list[Component]:
    """In-batch logits [user rows, N], the expansion of the user vectors under ROO, the heads."""
    R, N, rows_u = v.requests, v.impressions, v.user_rows
    t = cfg.tower_dim
    out: list[Component] = []
    c = new_component("in-batch logits", layout, "user", ("similarity",), user_fraction=1.0)
    f = 2 * rows_u * t * N
    c.fwd_flops, c.bwd_flops = f, 2 * f
    s = rows_u * N
    c.bytes = e * (rows_u * t + N * t + s) + 4 * s * 4 + e * (2 * s + rows_u * t + N * t) * 2
    c.other_flops = 8 * s
    c.kernels = 12
    c.gemms += [(rows_u, t, N), (rows_u, N, t), (N, rows_u, t)]
    out.append(c)
    if layout == "roo":
        out.append(expansion(layout, R, N, t + 1, e))
    c = new_component("heads + loss", layout, "item", ("heads",))
    a = Acc(c, e)
    a.elementwise(N * t, reads=2, writes=1, bwd_passes=3, kernels=6)  # positive score
    a.linear(N, 1, sh.n_tasks)
    c.bytes += 4 * N * sh.n_tasks * 6
    c.other_flops += BCE_FLOPS * N * sh.n_tasks
    c.kernels += 10
    out.append(c)
    return out


def _dlrm_top(sh: Shape, cfg: ModelConfig, v: LayoutStats, layout: str, e: int) -> list[Component]:
    """The expansion under ROO, the interaction (dot or DCN-v2), the top MLP, the heads."""
    R, N, d = v.requests, v.impressions, cfg.embedding_dim
    out: list[Component] = []
    roo = layout == "roo"
    split = roo and cfg.interaction == "dcn" and cfg.dcn_layers > 0  # V_user x_user per request
    if roo:
        out.append(expansion(layout, R, N, cfg.user_vectors * d + (cfg.dcn_rank if split else 0), e))
    V = cfg.user_vectors + cfg.item_vectors
    c = new_component("interaction", layout, "item", ("interaction",))
    if cfg.interaction == "dot":
        f = 2 * N * V * V * d
        c.fwd_flops, c.bwd_flops = f, 2 * f
        c.bytes = e * (N * V * d * 2 + N * V * V) * 3 + e * N * (V * (V - 1) // 2 + V * d) * 4
        c.kernels = 10
        c.other_flops = 0
        c.gemms += [(N * V, d, V), (N * V, V, d), (N * V, V, d)]  # the batched [V, d] x [d, V] products
        width_out = V * (V - 1) // 2 + V * d
    else:
        a = Acc(c, e)
        w, wu = V * d, cfg.user_vectors * d
        for layer in range(cfg.dcn_layers):
            if split and layer == 0:
                a.linear(R, wu, cfg.dcn_rank, bias=False)
                a.linear(N, w - wu, cfg.dcn_rank, bias=False)
                c.bytes += e * N * cfg.dcn_rank  # its addmm reads the expanded user product
            else:
                a.linear(N, w, cfg.dcn_rank, bias=False)
            a.linear(N, cfg.dcn_rank, w)
            # x0 * y + x: a mul and an add forward (6 passes); backward the mul's two products (6),
            # the bias gradient's reduction (1) and autograd adding up x0's and x's gradients from
            # their several uses (3 + 3)
            a.elementwise(N * w, reads=4, writes=2, bwd_passes=13, flops=2, kernels=7)
        width_out = w
    out.append(c)

    c = new_component("top arch", layout, "item", ("top_arch",))
    top_out = Acc(c, e).mlp(N, width_out, cfg.top_arch)
    out.append(c)
    out.append(heads_loss(layout, N, top_out, sh.n_tasks, e))
    return out


def expansion(layout: str, R: Num, N: Num, width: int, e: int) -> Component:
    """roo_ref.expansion: index_select forward (read R rows, write N); backward, each request's run
    of impression gradients pooled by embedding_bag (read N rows and the positions, write R)."""
    c = new_component("request→impression expansion", layout, "expansion")
    c.bytes = e * width * (R + N) + ID_BYTES * N * 2 + e * width * (N + 2 * R) + ID_BYTES * N
    c.other_flops = width * N  # the backward's per-request gradient sum
    c.kernels = 5
    return c
