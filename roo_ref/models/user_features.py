"""The user side every model reads: request-only (RO) features to per-row user feature vectors.

`UserFeatureModel` is the base class of DLRM, TwoTower and HSTURanker. Its constructor builds the
user-side modules, in this order (the order fixes which random draws initialize which weights, so
a seed gives the same model whichever class builds it):

    user_sparse      the user sparse features' bags (one EmbeddingBagCollection, a D vector each)
    user_dense_arch  pooled-history models: an MLP of the user dense features to one D vector
    user_context     history-token models (HSTU): a Linear of the flattened bags + raw dense
                     features to the context token
    item_table, action_table   the history's tables; `item_table` also embeds the candidate item

The modules keep these flat names on the model because the cost model (roo_ref.cost) and the FLOP
attribution (roo_ref.flops) key on their module paths. Rows are requests in the ROO layout and
impressions in the impression layout; the user side itself does not care which.

`prepare(batch, layout)` builds a `PreparedBatch`: every table lookup's per-batch part (hashed ids,
offsets, bags), the request -> impression expansion (ROO) and the subclass's own per-batch tables
(`prepare_extra`; HSTU's sequence table). `forward(batch, layout)` takes a PreparedBatch or a raw
batch (prepared first) and runs `run(prepared)`, which needs no host sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from roo_ref.embeddings import BagLookup, EmbeddingBagCollection, Table
from roo_ref.expansion import Expansion
from roo_ref.jagged import row_index
from roo_ref.jagged_dispatch import complete_cumsum
from roo_ref.model_presets import ModelConfig
from roo_ref.models.common import MLP, check_layout, model_layout, param_dtype
from workloads.batch import ImpressionBatch, RequestBatch
from workloads.errors import UserError
from workloads.layout import Layout
from workloads.spec import WorkloadSpec


@dataclass(frozen=True)
class PreparedBatch:
    """A batch and its per-batch bookkeeping, built once (outside a timed step) by `prepare`.

    batch: the raw batch (dense features, labels); user_sparse / item_sparse: the collections'
    lookups; history_items / history_actions: the pooled history's lookups (pooled-history models);
    item_rows: the candidate items' rows of `item_table`; expand: ROO's request -> impression
    expansion (roo_ref.expansion; None in the impression layout); extra: the model's own (HSTU: its
    SequencePlan)."""

    batch: RequestBatch | ImpressionBatch
    layout: Layout
    user_sparse: BagLookup
    item_sparse: BagLookup
    item_rows: torch.Tensor
    history_items: BagLookup | None = None
    history_actions: BagLookup | None = None
    expand: Expansion | None = None
    extra: Any = None
    # the model shape that prepared it (its ids are hashed into that model's tables)
    made_for: str = ""


class UserFeatureModel(nn.Module):
    """A model whose user side is `user_sparse` + user dense + the history tables.

    pooled_history=True (DLRM, two-tower): the dense features go through `user_dense_arch`, the
    history is pooled (item-table mean + action-table mean), and `user_feature_vectors` stacks them.
    pooled_history=False (HSTU): the history stays a token sequence (the model embeds it with the
    same tables) and `user_context_token` is the sequence's first token."""

    def __init__(self, spec: WorkloadSpec, cfg: ModelConfig, *, pooled_history: bool):
        super().__init__()
        self.config = cfg
        self.pooled_history = pooled_history
        d = cfg.embedding_dim
        self.user_sparse = EmbeddingBagCollection(
            [g.cardinality for _, g in spec.user_features()], d, cfg.max_table_rows
        )
        if pooled_history:
            self.user_dense_arch = MLP(spec.user_dense, (*cfg.dense_arch, d)) if spec.user_dense else None
            # one D vector per sparse feature, one for the dense features, one for the history
            self.n_user_vectors = spec.n_user_sparse + (1 if spec.user_dense else 0) + 1
        else:
            self.user_context = nn.Linear(spec.n_user_sparse * d + spec.user_dense, d)
        self.item_table = Table(spec.history.item_cardinality, d, cfg.max_table_rows)
        self.action_table = Table(spec.history.action_types, d, cfg.max_table_rows)

    def prepare(self, batch, layout: str | Layout) -> PreparedBatch:
        """`batch` (a RequestBatch for "roo", an ImpressionBatch for "impression") with its lookups'
        per-batch parts and the expansion index; a PreparedBatch of the same layout as it is. May
        sync with the device (HSTU: the sequence lengths): build it before a timed step."""
        if isinstance(batch, PreparedBatch):
            if batch.layout is not model_layout(layout):
                raise UserError(f"layout={str(layout)!r}, but the batch was prepared for {batch.layout.value!r}")
            if batch.made_for != self.prepared_for():
                raise UserError("this batch was prepared by a model of another configuration; prepare it again")
            return batch
        roo = check_layout(batch, layout)
        b, n = batch, batch.item_id.numel()
        pooled = self.pooled_history
        return PreparedBatch(
            batch=b,
            layout=Layout.ROO if roo else Layout.IMPRESSION,
            user_sparse=self.user_sparse.plan(b.user_sparse_lengths, b.user_sparse_values),
            item_sparse=self.item_sparse.plan(b.item_sparse_lengths, b.item_sparse_values),
            item_rows=self.item_table.hash(b.item_id),
            history_items=self.item_table.plan_mean(b.history_item_ids, b.history_lengths) if pooled else None,
            history_actions=self.action_table.plan_mean(b.history_actions, b.history_lengths) if pooled else None,
            expand=Expansion(row_index(b.num_impressions, n), complete_cumsum(b.num_impressions)) if roo else None,
            extra=self.prepare_extra(b, roo),
            made_for=self.prepared_for(),
        )

    def prepared_for(self) -> str:
        """What a prepared batch depends on: the model class and its configuration."""
        return f"{type(self).__name__}:{self.config!r}"

    def prepare_extra(self, batch, roo: bool) -> Any:
        """A subclass's own per-batch bookkeeping (PreparedBatch.extra)."""
        return None

    def forward(self, batch, layout: str) -> dict[str, torch.Tensor]:
        return self.run(self.prepare(batch, layout))

    def run(self, p: PreparedBatch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def user_feature_vectors(self, p: PreparedBatch) -> torch.Tensor:
        """[rows, n_user_vectors, D]: the sparse bags, the dense vector (if any), the pooled history."""
        parts = [self.user_sparse.lookup(p.user_sparse)]
        if self.user_dense_arch is not None:
            parts.append(self.user_dense_arch(p.batch.user_dense.to(param_dtype(self)))[:, None])
        hist = self.item_table.lookup_mean(p.history_items)
        hist = hist + self.action_table.lookup_mean(p.history_actions)
        parts.append(hist[:, None])
        return torch.cat(parts, 1)

    def user_context_token(self, p: PreparedBatch) -> torch.Tensor:
        """[rows, D]: the sparse bags and the raw dense features through `user_context`."""
        x = self.user_sparse.lookup(p.user_sparse).flatten(1)
        dt = self.user_context.weight.dtype  # user_dense arrives fp32; the model may run in another dtype
        x = torch.cat([x.to(dt), p.batch.user_dense.to(dt)], 1)
        return self.user_context(x)

    def item_inputs(self, p: PreparedBatch) -> list[torch.Tensor]:
        """[N, 1, D] parts of the item side: the sparse bags [N, Fi, D], the candidate's item-table
        row, the item dense MLP's vector (models with `item_dense_arch`, when the spec has dense)."""
        parts = [self.item_sparse.lookup(p.item_sparse), self.item_table.lookup(p.item_rows)[:, None]]
        arch = getattr(self, "item_dense_arch", None)
        if arch is not None:
            parts.append(arch(p.batch.item_dense.to(param_dtype(self)))[:, None])
        return parts
