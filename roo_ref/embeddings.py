"""Embedding tables: pooled sparse features (a collection of per-feature tables, mode sum, fused
into one weight with per-feature row blocks and looked up in one call, as fbgemm's
TableBatchedEmbeddingBags) and plain lookup tables, with rows capped at `max_rows` per feature (ids
hashed modulo the cap, as a production model hashes a huge id space into a fixed table).

All tables use sparse gradients: the optimizer (roo_ref.train) updates only the rows a batch
touched, so step cost does not scale with table size — on both layouts alike. Two gradient paths:
- by default (nn.Embedding / nn.EmbeddingBag, sparse=True) the weight gets a sparse COO gradient;
- in row-gradient mode (`enable_row_grads(model)`, what the Trainer uses) a lookup's backward hands
  its per-id gradient rows to the table's `row_grads` (roo_ref.sparse_optim) and the weight gets no
  gradient: the fused optimizer updates from them without a COO tensor or a host sync.

Every lookup is split in two: `plan` (hash the ids into the table's rows, the offsets and the bag of
each id: per-batch bookkeeping, built once before the step by the models' `prepare`) and `lookup`
(the step's part). `forward` does both.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from roo_ref.jagged import row_index
from roo_ref.jagged_dispatch import complete_cumsum
from roo_ref.sparse_optim import RowGrads, row_grad_lookup


@dataclass(frozen=True)
class BagLookup:
    """One embedding-bag lookup's per-batch part: `ids` already hashed into the table's rows,
    `offsets` [bags + 1] (include_last_offset), `bag` [nnz] the bag of each id (the row-gradient
    backward reads it), `batch` the B of the [B, F, dim] output."""

    ids: torch.Tensor
    offsets: torch.Tensor
    bag: torch.Tensor
    batch: int


def table_rows(cardinality: int, max_rows: int) -> int:
    return max(1, min(int(cardinality), int(max_rows)))


def hash_ids(ids: torch.Tensor, rows: int | torch.Tensor) -> torch.Tensor:
    # ids are >= 0 (generator contract); modulo keeps the popular (small) ids distinct
    return torch.remainder(ids, rows)


def init_table(weight: torch.Tensor) -> None:
    # uniform(+-1/sqrt(rows)) as torchrec's default; keeps pooled sums O(1) for any pooling factor
    bound = 1.0 / max(weight.shape[0], 1) ** 0.5
    nn.init.uniform_(weight, -bound, bound)


class EmbeddingBagCollection(nn.Module):
    """The F features' tables (EmbeddingBag, sum) fused into one weight [sum(rows), dim]: feature f
    owns the row block [row_offsets[f], row_offsets[f] + rows[f]). Input feature-major lengths
    [F, B] + values (feature 0's ids for all B rows, then feature 1's, ...); output [B, F, dim]."""

    # Why fused (as fbgemm's TableBatchedEmbeddingBags / torchrec): with one table per feature a GPU
    # training step is host-bound (one lookup, one sparse gradient and one optimizer update per
    # feature: ~900 kernel launches and 162 syncs per early-ranking step on an H100); fused, a
    # collection costs one lookup, one sparse gradient and one optimizer update.

    def __init__(self, cardinalities: list[int], dim: int, max_rows: int):
        super().__init__()
        self.dim = dim
        self.rows = [table_rows(c, max_rows) for c in cardinalities]
        total = sum(self.rows)
        self.bag = nn.EmbeddingBag(
            total, dim, mode="sum", sparse=True, include_last_offset=True, _weight=torch.empty(total, dim)
        )
        starts = list(itertools.accumulate(self.rows, initial=0))[:-1]  # first row of each feature's block
        self.register_buffer("row_offsets", torch.tensor(starts, dtype=torch.int64), persistent=False)
        self.register_buffer("row_counts", torch.tensor(self.rows, dtype=torch.int64), persistent=False)
        # uniform(+-1/sqrt(rows_f)) per feature block, drawn in feature order. No N(0, 1) draw
        # first (nn.EmbeddingBag's own init, which init_table would overwrite): at the presets' sizes
        # that throw-away draw costs 18 of the 25 s of building an early-ranking model on the CPU,
        # twice per sweep point.
        for blk in self.bag.weight.detach().split(self.rows):
            init_table(blk)  # THIS feature's rows set the bound
        self.row_grads: RowGrads | None = None  # set by enable_row_grads

    @property
    def weight(self) -> nn.Parameter:
        return self.bag.weight

    @property
    def num_features(self) -> int:
        return len(self.rows)

    def forward(self, lengths: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """-> [B, F, dim] pooled embeddings (an empty bag pools to zeros); no host sync (no .tolist())."""
        return self.lookup(self.plan(lengths, values))

    def plan(self, lengths: torch.Tensor, values: torch.Tensor) -> BagLookup:
        """The per-batch part of a lookup (no host sync): ids hashed into their feature's block."""
        n_feat, batch = lengths.shape
        if n_feat != self.num_features:
            raise ValueError(f"got {n_feat} sparse features, the model has {self.num_features} tables")
        # bag f * B + b of each id (values are feature-major), its feature, then its hashed row
        bag = row_index(lengths.reshape(-1), values.numel())
        feature = torch.div(bag, max(batch, 1), rounding_mode="floor")
        ids = hash_ids(values, self.row_counts[feature]) + self.row_offsets[feature]
        return BagLookup(ids, complete_cumsum(lengths), bag, batch)

    def lookup(self, plan: BagLookup) -> torch.Tensor:
        """[B, F, dim] from a plan of this collection."""
        if self.num_features == 0:
            return self._empty(plan.batch)
        if self.row_grads is not None:
            pooled = row_grad_lookup(self.weight, plan.ids, self.row_grads, plan.offsets, plan.bag)
        else:
            pooled = self.bag(plan.ids, plan.offsets)  # [F * B, dim], bag f * B + b
        return pooled.view(self.num_features, plan.batch, self.dim).transpose(0, 1)

    def _empty(self, batch: int) -> torch.Tensor:
        # a [B, 0, dim] tensor on the model's device/dtype (those of the empty [0, dim] weight)
        w = self.bag.weight
        return torch.zeros(batch, 0, self.dim, device=w.device, dtype=w.dtype)


class Table(nn.Module):
    """A lookup table with hashed ids (sparse gradients); `pooled_mean` pools jagged rows."""

    def __init__(self, cardinality: int, dim: int, max_rows: int):
        super().__init__()
        self.rows = table_rows(cardinality, max_rows)
        self.emb = nn.Embedding(self.rows, dim, sparse=True, _weight=torch.empty(self.rows, dim))  # no N(0, 1) draw
        init_table(self.emb.weight)
        self.row_grads: RowGrads | None = None  # set by enable_row_grads

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lookup(self.hash(ids))

    def hash(self, ids: torch.Tensor) -> torch.Tensor:
        """The per-batch part of a plain lookup: ids hashed into the table's rows."""
        return hash_ids(ids, self.rows)

    def lookup(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows `rows` (hashed ids) of the table: [*rows.shape, dim]."""
        if self.row_grads is not None:
            return row_grad_lookup(self.emb.weight, rows, self.row_grads)
        return self.emb(rows)

    def pooled_mean(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean over each jagged row ([B, dim]; 0 for an empty row), without materializing [H, dim]."""
        return self.lookup_mean(self.plan_mean(ids, lengths))

    def plan_mean(self, ids: torch.Tensor, lengths: torch.Tensor) -> BagLookup:
        return BagLookup(self.hash(ids), complete_cumsum(lengths), row_index(lengths, ids.numel()), lengths.numel())

    def lookup_mean(self, plan: BagLookup) -> torch.Tensor:
        if self.row_grads is not None:
            return row_grad_lookup(self.emb.weight, plan.ids, self.row_grads, plan.offsets, plan.bag, "mean")
        return nn.functional.embedding_bag(
            plan.ids, self.emb.weight, plan.offsets, mode="mean", sparse=True, include_last_offset=True
        )


def enable_row_grads(model: nn.Module) -> dict[int, RowGrads]:
    """Switch every Table and EmbeddingBagCollection of `model` to row-gradient mode (their weights
    get no .grad; each lookup's backward adds to the module's `row_grads`). Returns {id(weight):
    its RowGrads}, for the fused optimizer. Idempotent."""
    sinks: dict[int, RowGrads] = {}
    for m in model.modules():
        if isinstance(m, EmbeddingBagCollection | Table):
            if m.row_grads is None:
                m.row_grads = RowGrads()
            w = m.weight if isinstance(m, EmbeddingBagCollection) else m.emb.weight
            sinks[id(w)] = m.row_grads
    return sinks


def embedding_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The table weights (sparse gradients), for the embedding optimizer: each Table's and each
    EmbeddingBagCollection's fused weight (one parameter for all of its features)."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)]
