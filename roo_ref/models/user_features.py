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
"""

from __future__ import annotations

import torch
from torch import nn

from roo_ref.embeddings import EmbeddingBagCollection, Table
from roo_ref.model_presets import ModelConfig
from roo_ref.models.common import MLP, param_dtype
from workloads.spec import WorkloadSpec


class UserFeatureModel(nn.Module):
    """A model whose user side is `user_sparse` + user dense + the history tables.

    pooled_history=True (DLRM, two-tower): the dense features go through `user_dense_arch`, the
    history is pooled (item-table mean + action-table mean), and `user_feature_vectors` stacks them.
    pooled_history=False (HSTU): the history stays a token sequence (the model embeds it with the
    same tables) and `user_context_token` is the sequence's first token."""

    def __init__(self, spec: WorkloadSpec, cfg: ModelConfig, *, pooled_history: bool):
        super().__init__()
        self.config = cfg
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

    def user_feature_vectors(self, b) -> torch.Tensor:
        """[rows, n_user_vectors, D]: the sparse bags, the dense vector (if any), the pooled history."""
        parts = [self.user_sparse(b.user_sparse_lengths, b.user_sparse_values)]
        if self.user_dense_arch is not None:
            parts.append(self.user_dense_arch(b.user_dense.to(param_dtype(self)))[:, None])
        hist = self.item_table.pooled_mean(b.history_item_ids, b.history_lengths)
        hist = hist + self.action_table.pooled_mean(b.history_actions, b.history_lengths)
        parts.append(hist[:, None])
        return torch.cat(parts, 1)

    def user_context_token(self, b) -> torch.Tensor:
        """[rows, D]: the sparse bags and the raw dense features through `user_context`."""
        x = self.user_sparse(b.user_sparse_lengths, b.user_sparse_values).flatten(1)
        dt = self.user_context.weight.dtype  # user_dense arrives fp32; the model may run in another dtype
        x = torch.cat([x.to(dt), b.user_dense.to(dt)], 1)
        return self.user_context(x)
