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

The sequence table (`SequencePlan`: the kept history's rows, where each token goes, offsets, the
longest sequence, num_targets, positions, timestamps, the target tokens) depends on the batch alone:
`prepare` builds it once, and the step gathers the tokens into it with one index_select.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from roo_ref.attention import hstu_attention
from roo_ref.embeddings import EmbeddingBagCollection
from roo_ref.jagged import row_index
from roo_ref.jagged_dispatch import complete_cumsum, jagged_concat, jagged_tail, positions_in_segment
from roo_ref.model_presets import ModelConfig
from roo_ref.models.common import MLP, bce_loss, impression_weights, param_dtype
from roo_ref.models.regions import INTERACTION, ITEM, LOSS, USER, Regions
from roo_ref.models.user_features import PreparedBatch, UserFeatureModel
from workloads.spec import WorkloadSpec


@dataclass(frozen=True)
class SequencePlan:
    """One batch's HSTU sequences, [context, history, targets] per row (request or impression).

    history_items / history_actions: the kept history tokens' rows of item_table / action_table;
    order [tokens]: the index into cat(context rows, history tokens, target tokens) of every
    sequence token; offsets [rows + 1]; max_len: the longest sequence (a host int); num_targets
    [rows]; positions / timestamps [tokens] (the RAB inputs); targets [N]: the sequence index of
    each target token, in request-grouped impression order."""

    history_items: torch.Tensor
    history_actions: torch.Tensor
    order: torch.Tensor
    offsets: torch.Tensor
    max_len: int
    num_targets: torch.Tensor
    positions: torch.Tensor
    timestamps: torch.Tensor
    targets: torch.Tensor


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
            # offsets and targets are built from non-negative lengths (HSTURanker.prepare_extra):
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

    def forward(self, x, offsets, num_targets, positions, timestamps, max_len: int | None = None):
        """max_len: the longest sequence (a host int; computed here, a device sync, when None)."""
        if max_len is None:
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

    def targets(self, p: PreparedBatch) -> torch.Tensor:
        t = self.item_table.lookup(p.item_rows)
        if self.item_arch is not None:
            x = self.item_sparse.lookup(p.item_sparse).flatten(1)
            x = torch.cat([x, p.batch.item_dense.to(param_dtype(self))], 1)
            t = t + self.item_arch(x)
        return t

    def prepare_extra(self, b, roo: bool) -> SequencePlan:
        """The sequence table of batch `b` (syncs: the kept history's size, the longest sequence)."""
        dev = b.item_id.device
        rows, n = b.request_id.numel(), b.item_id.numel()
        h_len = b.history_lengths
        h_ids, h_act, h_ts = b.history_item_ids, b.history_actions, b.history_timestamps
        if self.config.max_history_len:
            keep, h_len = jagged_tail(h_len, self.config.max_history_len, h_ids.numel())
            h_ids, h_act, h_ts = h_ids[keep], h_act[keep], h_ts[keep]
        n_hist = h_ids.numel()
        t_len = b.num_impressions if roo else torch.ones(n, dtype=torch.int64, device=dev)
        one = torch.ones(rows, dtype=torch.int64, device=dev)
        src = torch.arange(rows + n_hist + n, device=dev)  # cat(context, history, targets) index
        parts = [(src[:rows], one), (src[rows : rows + n_hist], h_len), (src[rows + n_hist :], t_len)]
        _, lengths, starts = jagged_concat(parts)
        order = torch.empty_like(src).scatter_(0, torch.cat(starts), src)
        # RAB inputs: positions ctx 0, history 1..L, targets L+1; times: request time / own time
        h_pos = positions_in_segment(complete_cumsum(h_len), n_hist) + 1
        request_of_target = row_index(t_len, n)
        t_pos = (h_len + 1).index_select(0, request_of_target)
        t_ts = b.timestamp.index_select(0, request_of_target)
        return SequencePlan(
            history_items=self.item_table.hash(h_ids),
            history_actions=self.action_table.hash(h_act),
            order=order,
            offsets=complete_cumsum(lengths),
            max_len=int(lengths.max()) if lengths.numel() else 0,
            num_targets=t_len,
            positions=torch.cat([torch.zeros_like(one), h_pos, t_pos]).index_select(0, order),
            timestamps=torch.cat([b.timestamp, h_ts, t_ts]).index_select(0, order),
            targets=starts[2],
        )

    def run(self, p: PreparedBatch) -> dict[str, torch.Tensor]:
        seq: SequencePlan = p.extra
        regions = Regions()
        with regions(USER):
            ctx = self.user_context_token(p)  # [rows, D], rows = requests (roo) or impressions
            hist = self.item_table.lookup(seq.history_items) + self.action_table.lookup(seq.history_actions)
        regions.tag(USER, ctx, hist)
        with regions(ITEM):
            tgt = self.targets(p)
        regions.tag(ITEM, tgt)
        # the stack's work is the history's (one target token per impression sequence): user side
        with regions(USER):
            x = torch.cat([ctx, hist.to(ctx.dtype), tgt.to(ctx.dtype)]).index_select(0, seq.order)
            y = self.hstu(x, seq.offsets, seq.num_targets, seq.positions, seq.timestamps, max_len=seq.max_len)
        regions.tag(USER, y)
        with regions(INTERACTION):
            out = y.index_select(0, seq.targets)  # target outputs, request-grouped impression order
            logits = self.heads(self.head(out))
        regions.tag(INTERACTION, logits)
        with regions(LOSS):
            loss = bce_loss(logits, p.batch.labels, impression_weights(p.batch))
        regions.tag(LOSS, loss)
        return {"loss": loss, "logits": logits}
