"""Two-tower retrieval with in-batch negatives.

`user_tower` (RO: the user feature vectors of roo_ref.models.user_features: user sparse bags,
user dense MLP, pooled history) -> u; `item_tower` (NRO: item
sparse bags, candidate item id, item dense MLP) -> i. For impression n of request r(n):
    s(n, m) = <u_r(n), i_m> / sqrt(tower_dim)   over every impression m of the batch
    loss_ce(n) = logsumexp_m s(n, m) - s(n, n)         (label: the impression's own item)
plus BCE heads on the positive score (one logit per task). Total = mean CE + mean BCE.

Same negative set in both layouts. "impression": u is per impression, `similarity` is an [N, N]
matmul. "roo": u per request, `similarity` is [R, N] and each request's logsumexp is expanded to
its k impressions — identical values at 1/k of the matmul (the ROO saving for retrieval).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from roo_ref.embeddings import EmbeddingBagCollection
from roo_ref.model_presets import ModelConfig
from roo_ref.models.common import MLP, at_least_fp32, bce_loss, impression_weights, weighted_mean
from roo_ref.models.regions import INTERACTION, ITEM, LOSS, USER, Regions
from roo_ref.models.user_features import PreparedBatch, UserFeatureModel
from workloads.spec import WorkloadSpec


class InBatchSimilarity(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, u_rows: torch.Tensor, items: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """logsumexp over all the batch's items for each user row: [rows]. `real` [N] bool: the
        items that count (a padded batch's real impressions; padding items are no negatives)."""
        s = at_least_fp32(torch.matmul(u_rows, items.t()) * self.scale)
        if real is not None:
            s = s.masked_fill(~real[None, :], float("-inf"))
        return torch.logsumexp(s, dim=1)


class TwoTower(UserFeatureModel):
    def __init__(self, spec: WorkloadSpec, cfg: ModelConfig):
        super().__init__(spec, cfg, pooled_history=True)
        d = cfg.embedding_dim
        self.user_tower = MLP(self.n_user_vectors * d, (*cfg.user_arch, cfg.tower_dim), final_act=False)
        self.item_sparse = EmbeddingBagCollection(
            [g.cardinality for _, g in spec.item_features()], d, cfg.max_table_rows
        )
        self.item_dense_arch = MLP(spec.item_dense, (*cfg.dense_arch, d)) if spec.item_dense else None
        n_item_in = spec.n_item_sparse + (1 if spec.item_dense else 0) + 1
        self.item_tower = MLP(n_item_in * d, (*cfg.item_arch, cfg.tower_dim), final_act=False)
        self.similarity = InBatchSimilarity(cfg.tower_dim)
        self.heads = nn.Linear(1, spec.n_tasks)

    def user_side(self, p: PreparedBatch) -> torch.Tensor:
        return self.user_tower(self.user_feature_vectors(p).flatten(1))

    def item_side(self, p: PreparedBatch) -> torch.Tensor:
        return self.item_tower(torch.cat(self.item_inputs(p), 1).flatten(1))

    def run(self, p: PreparedBatch) -> dict[str, torch.Tensor]:
        regions = Regions()
        with regions(USER):
            u = self.user_side(p)
        regions.tag(USER, u)
        with regions(ITEM):
            i = self.item_side(p).to(u.dtype)
        regions.tag(ITEM, i)
        # the similarity runs once per user row (once per request under ROO): user side in ROO's sense
        weights = impression_weights(p.batch)
        with regions(USER):
            lse = self.similarity(u, i, None if weights is None else weights[0] > 0)
        regions.tag(USER, lse)
        with regions(INTERACTION):
            if p.expand is not None:
                u, lse = p.expand(u), p.expand(lse)
            pos = (u * i).sum(-1) * self.similarity.scale  # the impression's own item
            logits = self.heads(pos[:, None])
        regions.tag(INTERACTION, logits, pos, lse)
        with regions(LOSS):
            ce = weighted_mean(lse - at_least_fp32(pos), weights)
            loss = ce + bce_loss(logits, p.batch.labels, weights)
        regions.tag(LOSS, loss)
        return {"loss": loss, "logits": logits}
