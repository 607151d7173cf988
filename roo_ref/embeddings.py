"""Embedding tables: pooled sparse features (one EmbeddingBag per feature, mode sum) and plain
lookup tables, with rows capped at `max_rows` (ids hashed modulo the cap, as a production model
hashes a huge id space into a fixed table).

All tables use sparse gradients: the optimizer (roo_ref.train) updates only the rows a batch
touched, so step cost does not scale with table size — on both layouts alike.
"""

from __future__ import annotations

import torch
from torch import nn

from roo_ref.jagged_dispatch import complete_cumsum


def table_rows(cardinality: int, max_rows: int) -> int:
    return max(1, min(int(cardinality), int(max_rows)))


def hash_ids(ids: torch.Tensor, rows: int) -> torch.Tensor:
    # ids are >= 0 (generator contract); modulo keeps the popular (small) ids distinct
    return torch.remainder(ids, rows)


def init_table(weight: torch.Tensor) -> None:
    # uniform(+-1/sqrt(rows)) as torchrec's default; keeps pooled sums O(1) for any pooling factor
    bound = 1.0 / max(weight.shape[0], 1) ** 0.5
    nn.init.uniform_(weight, -bound, bound)


class EmbeddingBagCollection(nn.Module):
    """One EmbeddingBag (sum) per feature; input feature-major lengths [F, B] + values."""

    def __init__(self, cardinalities: list[int], dim: int, max_rows: int):
        super().__init__()
        self.dim = dim
        self.rows = [table_rows(c, max_rows) for c in cardinalities]
        self.bags = nn.ModuleList(
            nn.EmbeddingBag(r, dim, mode="sum", sparse=True, include_last_offset=True) for r in self.rows
        )
        for b in self.bags:
            init_table(b.weight)

    @property
    def num_features(self) -> int:
        return len(self.bags)

    def forward(self, lengths: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """-> [B, F, dim] pooled embeddings (an empty bag pools to zeros)."""
        n_feat, batch = lengths.shape
        if n_feat != len(self.bags):
            raise ValueError(f"got {n_feat} sparse features, the model has {len(self.bags)} tables")
        if n_feat == 0:
            return self._empty(batch)
        per_feature = lengths.sum(1).tolist()
        starts = [0]
        for n in per_feature:
            starts.append(starts[-1] + n)
        out = []
        for f, bag in enumerate(self.bags):
            ids = hash_ids(values[starts[f] : starts[f + 1]], self.rows[f])
            out.append(bag(ids, complete_cumsum(lengths[f])))
        return torch.stack(out, 1)

    def _empty(self, batch: int) -> torch.Tensor:
        # a [B, 0, dim] tensor on the model's device/dtype (no table to take them from)
        p = next(iter(self.parameters()), None)
        kw = {} if p is None else {"device": p.device, "dtype": p.dtype}
        return torch.zeros(batch, 0, self.dim, **kw)


class Table(nn.Module):
    """A lookup table with hashed ids (sparse gradients); `pooled_mean` pools jagged rows."""

    def __init__(self, cardinality: int, dim: int, max_rows: int):
        super().__init__()
        self.rows = table_rows(cardinality, max_rows)
        self.emb = nn.Embedding(self.rows, dim, sparse=True)
        init_table(self.emb.weight)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(hash_ids(ids, self.rows))

    def pooled_mean(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean over each jagged row ([B, dim]; 0 for an empty row), without materializing [H, dim]."""
        return nn.functional.embedding_bag(
            hash_ids(ids, self.rows),
            self.emb.weight,
            complete_cumsum(lengths),
            mode="mean",
            sparse=True,
            include_last_offset=True,
        )


def embedding_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The table weights (sparse gradients), for the embedding optimizer."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)]
