"""DLRM-style ranker with a UserArch (early-ranking: dot interaction; late-ranking: DCN-v2).

User side (RO): the user feature vectors of roo_ref.models.user_features (user sparse bags + user
dense MLP + pooled history) -> `user_arch`, an MLP compressing them to `user_vectors` vectors. Item side (NRO): item
sparse bags + candidate item id (the same item table as the history) + item dense MLP -> `item_arch`
(to `item_vectors` vectors). Then `interaction` -> `top_arch` -> `heads` (one logit per task).

Layouts: "impression" runs every module on the impression rows (user features duplicated);
"roo" runs the user side once per request and expands its output to the impressions (an
index_select by the prepared impression -> request index) right before the interaction (backward:
per-request gradient sum).
"""

from __future__ import annotations

import torch
from torch import nn

from roo_ref.embeddings import EmbeddingBagCollection
from roo_ref.model_presets import ModelConfig
from roo_ref.models.common import MLP, bce_loss, impression_weights
from roo_ref.models.regions import INTERACTION, ITEM, LOSS, USER, Regions
from roo_ref.models.user_features import PreparedBatch, UserFeatureModel
from workloads.spec import WorkloadSpec


class DotInteraction(nn.Module):
    """Pairwise dot products of all vectors (upper triangle) plus the vectors themselves."""

    def __init__(self, n_vectors: int, dim: int):
        super().__init__()
        iu = torch.triu_indices(n_vectors, n_vectors, offset=1)
        self.register_buffer("iu", iu, persistent=False)
        self.out_dim = iu.shape[1] + n_vectors * dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # z [N, V, D]
        dots = torch.bmm(z, z.transpose(1, 2))[:, self.iu[0], self.iu[1]]
        return torch.cat([dots, z.flatten(1)], 1)


class CrossLayer(nn.Module):
    """DCN-v2 low-rank cross: x_{l+1} = x0 * (U (V x_l) + b) + x_l."""

    def __init__(self, width: int, rank: int):
        super().__init__()
        self.v = nn.Linear(width, rank, bias=False)
        self.u = nn.Linear(rank, width)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.u(self.v(x)) + x


class DCNInteraction(nn.Module):
    def __init__(self, n_vectors: int, dim: int, layers: int, rank: int):
        super().__init__()
        width = n_vectors * dim
        self.cross = nn.ModuleList(CrossLayer(width, rank) for _ in range(layers))
        self.out_dim = width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x0 = x = z.flatten(1)
        for layer in self.cross:
            x = layer(x0, x)
        return x


class DLRM(UserFeatureModel):
    def __init__(self, spec: WorkloadSpec, cfg: ModelConfig):
        super().__init__(spec, cfg, pooled_history=True)
        d = cfg.embedding_dim
        self.user_arch = MLP(self.n_user_vectors * d, (*cfg.user_arch, cfg.user_vectors * d), final_act=False)
        self.item_sparse = EmbeddingBagCollection(
            [g.cardinality for _, g in spec.item_features()], d, cfg.max_table_rows
        )
        self.item_dense_arch = MLP(spec.item_dense, (*cfg.dense_arch, d)) if spec.item_dense else None
        n_item_in = spec.n_item_sparse + (1 if spec.item_dense else 0) + 1  # + item id
        self.item_arch = MLP(n_item_in * d, (*cfg.item_arch, cfg.item_vectors * d), final_act=False)
        n_vec = cfg.user_vectors + cfg.item_vectors
        if cfg.interaction == "dot":
            self.interaction = DotInteraction(n_vec, d)
        else:
            self.interaction = DCNInteraction(n_vec, d, cfg.dcn_layers, cfg.dcn_rank)
        self.top_arch = MLP(self.interaction.out_dim, cfg.top_arch)
        self.heads = nn.Linear(self.top_arch.out_dim, spec.n_tasks)

    def user_side(self, p: PreparedBatch) -> torch.Tensor:
        """[rows, user_vectors, D] for the batch's user rows (requests or impressions)."""
        cfg = self.config
        x = self.user_feature_vectors(p).flatten(1)
        return self.user_arch(x).view(-1, cfg.user_vectors, cfg.embedding_dim)

    def item_side(self, p: PreparedBatch) -> torch.Tensor:
        cfg = self.config
        x = torch.cat(self.item_inputs(p), 1).flatten(1)
        return self.item_arch(x).view(-1, cfg.item_vectors, cfg.embedding_dim)

    def run(self, p: PreparedBatch) -> dict[str, torch.Tensor]:
        regions = Regions()
        with regions(USER):
            user = self.user_side(p)
        regions.tag(USER, user)
        with regions(ITEM):
            item = self.item_side(p)
        regions.tag(ITEM, item)
        with regions(INTERACTION):
            if p.expand is not None:
                user = user.index_select(0, p.expand)
            z = torch.cat([user, item.to(user.dtype)], 1)
            logits = self.heads(self.top_arch(self.interaction(z)))
        regions.tag(INTERACTION, logits)
        with regions(LOSS):
            loss = bce_loss(logits, p.batch.labels, impression_weights(p.batch))
        regions.tag(LOSS, loss)
        return {"loss": loss, "logits": logits}
