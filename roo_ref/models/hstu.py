"""HSTU ranker (GR semantics) over [context, history, targets] sequences.

Per layer on the jagged token sequence x:
    u, v, q, k = split(uvqk(norm(x))); u = silu(u)
    a = hstu_attention(q, k, v)  (silu(alpha q k^T + rab) / N * target-aware mask) @ v
    x = x + out(u * norm_attn(a))
`N` is the fixed config constant `normalizer` (not the sequence length), so a request sequence and
its impression sequences are scaled identically.

Tokens: one context token (user sparse bags + user dense -> `user_context`, built by
roo_ref.models.user_features with the history tables), the history (item id
embedding + action embedding, the most recent `max_history_len` events), then targets (candidate
item id embedding + `item_arch` of the item features). RAB positions: context 0, history 1..L,
every target L+1; timestamps: context and targets get the request time, history its own times.
So a target token carries the same position/time in both layouts.

Layouts: "impression": one sequence per impression (its duplicated context + history + 1 target,
num_targets=1). "roo": one sequence per request (context + history + its k targets, num_targets=k).
The target-aware mask (history causal; a target sees the history and itself only) makes the target
outputs identical. `head` + `heads` read the target tokens' outputs, in request-grouped order.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from roo_ref.attention import hstu_attention
from roo_ref.embeddings import EmbeddingBagCollection
from roo_ref.jagged_dispatch import (
    complete_cumsum,
    expand_by_request,
    jagged_concat,
    jagged_tail,
    positions_in_segment,
)
from roo_ref.model_presets import ModelConfig
from roo_ref.models.common import MLP, bce_loss, check_layout, param_dtype
from roo_ref.models.user_features import UserFeatureModel
from workloads.spec import WorkloadSpec


class HSTUAttention(nn.Module):
    """The attention op as a module (so FLOP counts attribute to it) holding the RAB tables."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.d_qk, self.d_v = cfg.num_heads, cfg.d_qk, cfg.d_v
        self.alpha = 1.0 / math.sqrt(cfg.d_qk)
        self.normalizer = cfg.normalizer
        self.backend = cfg.attention_backend
        # The Triton kernel's options (roo_ref.kernels.options.HstuKernelOptions; None: its
        # defaults); set by build_model, ignored by the torch backend.
        self.kernel_options = None
        if cfg.rab:
            self.pos_weights = nn.Parameter(torch.randn(cfg.pos_buckets) * 0.1)
            self.time_weights = nn.Parameter(torch.randn(cfg.time_buckets) * 0.1)
        else:
            self.pos_weights = self.time_weights = None

    def forward(self, q, k, v, offsets, max_len, num_targets, positions, timestamps):
        h = self.heads
        out = hstu_attention(
            q.reshape(-1, h, self.d_qk),
            k.reshape(-1, h, self.d_qk),
            v.reshape(-1, h, self.d_v),
            offsets,
            max_len,
            self.alpha,
            self.normalizer,
            num_targets,
            positions if self.pos_weights is not None else None,
            timestamps if self.time_weights is not None else None,
            self.pos_weights,
            self.time_weights,
            backend=self.backend,
            kernel_options=self.kernel_options,
            # offsets and targets are built from non-negative lengths here (HSTURanker.forward):
            # valid by construction, so no per-layer device->host sync to re-check them
            check_values=False,
        )
        return out.reshape(out.shape[0], h * self.d_v)


class HSTULayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.embedding_dim
        self.split = (cfg.v_dim, cfg.v_dim, cfg.qk_dim, cfg.qk_dim)
        self.norm = nn.LayerNorm(d)
        self.uvqk = nn.Linear(d, sum(self.split))
        self.attention = HSTUAttention(cfg)
        self.norm_attn = nn.LayerNorm(cfg.v_dim)
        self.out = nn.Linear(cfg.v_dim, d)

    def forward(self, x, offsets, max_len, num_targets, positions, timestamps):
        u, v, q, k = torch.split(self.uvqk(self.norm(x)), self.split, dim=-1)
        a = self.attention(q, k, v, offsets, max_len, num_targets, positions, timestamps)
        return x + self.out(F.silu(u) * self.norm_attn(a))


class HSTUStack(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(HSTULayer(cfg) for _ in range(cfg.hstu_layers))
        self.norm = nn.LayerNorm(cfg.embedding_dim)

    def forward(self, x, offsets, num_targets, positions, timestamps):
        lengths = offsets[1:] - offsets[:-1]
        max_len = int(lengths.max()) if lengths.numel() else 0  # the torch reference pads to this
        for layer in self.layers:
            x = layer(x, offsets, max_len, num_targets, positions, timestamps)
        return self.norm(x)


class HSTURanker(UserFeatureModel):
    def __init__(self, spec: WorkloadSpec, cfg: ModelConfig):
        super().__init__(spec, cfg, pooled_history=False)
        d = cfg.embedding_dim
        self.item_sparse = EmbeddingBagCollection(
            [g.cardinality for _, g in spec.item_features()], d, cfg.max_table_rows
        )
        n_item_in = spec.n_item_sparse * d + spec.item_dense
        self.item_arch = nn.Linear(n_item_in, d) if n_item_in else None
        self.hstu = HSTUStack(cfg)
        self.head = MLP(d, cfg.head_arch)
        self.heads = nn.Linear(self.head.out_dim, spec.n_tasks)

    def targets(self, b) -> torch.Tensor:
        t = self.item_table(b.item_id)
        if self.item_arch is not None:
            x = self.item_sparse(b.item_sparse_lengths, b.item_sparse_values).flatten(1)
            x = torch.cat([x, b.item_dense.to(param_dtype(self))], 1)
            t = t + self.item_arch(x)
        return t

    def forward(self, batch, layout: str) -> dict[str, torch.Tensor]:
        roo = check_layout(batch, layout)
        dev = batch.item_id.device
        ctx = self.user_context_token(batch)  # [rows, D], rows = requests (roo) or impressions
        rows = ctx.shape[0]
        n = batch.item_id.numel()
        h_len = batch.history_lengths
        h_ids, h_act, h_ts = batch.history_item_ids, batch.history_actions, batch.history_timestamps
        if self.config.max_history_len:
            keep, h_len = jagged_tail(h_len, self.config.max_history_len)
            h_ids, h_act, h_ts = h_ids[keep], h_act[keep], h_ts[keep]
        hist = self.item_table(h_ids) + self.action_table(h_act)
        tgt = self.targets(batch)
        t_len = batch.num_impressions if roo else torch.ones(n, dtype=torch.int64, device=dev)
        one = torch.ones(rows, dtype=torch.int64, device=dev)
        parts = [(ctx, one), (hist.to(ctx.dtype), h_len), (tgt.to(ctx.dtype), t_len)]
        x, lengths, starts = jagged_concat(parts)
        offsets = complete_cumsum(lengths)
        # RAB inputs: positions ctx 0, history 1..L, targets L+1; times: request time / own time
        h_pos = positions_in_segment(complete_cumsum(h_len), int(h_len.sum())) + 1
        t_pos = expand_by_request((h_len + 1)[:, None], t_len, n)[:, 0]
        positions, _, _ = jagged_concat([(torch.zeros_like(one), one), (h_pos, h_len), (t_pos, t_len)])
        t_ts = expand_by_request(batch.timestamp[:, None], t_len, n)[:, 0]
        timestamps, _, _ = jagged_concat([(batch.timestamp, one), (h_ts, h_len), (t_ts, t_len)])
        y = self.hstu(x, offsets, t_len, positions, timestamps)
        out = y.index_select(0, starts[2])  # target outputs, request-grouped impression order
        logits = self.heads(self.head(out))
        return {"loss": bce_loss(logits, batch.labels), "logits": logits}
