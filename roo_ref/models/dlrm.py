"""DLRM-style ranker with a UserArch (early-ranking: dot interaction; late-ranking: DCN-v2).

User side (RO): the user feature vectors of roo_ref.models.user_features (user sparse bags + user
dense MLP + pooled history) -> `user_arch`, an MLP compressing them to `user_vectors` vectors. Item side (NRO): item
sparse bags + candidate item id (the same item table as the history) + item dense MLP -> `item_arch`
(to `item_vectors` vectors). Then `interaction` -> `top_arch` -> `heads` (one logit per task).

Layouts: "impression" runs every module on the impression rows (user features duplicated);
"roo" runs the user side once per request and expands its output to the impressions with
expand_by_request right before the interaction (backward: per-request gradient sum).
"""

from __future__ import annotations

import torch
from torch import nn

from roo_ref.embeddings import EmbeddingBagCollection
from roo_ref.jagged_dispatch import expand_by_request
from roo_ref.model_presets import ModelConfig
from roo_ref.models.common import MLP, bce_loss, check_layout, param_dtype
from roo_ref.models.user_features import UserFeatureModel
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

    def user_side(self, b) -> torch.Tensor:
        """[rows, user_vectors, D] for the batch's user rows (requests or impressions)."""
        cfg = self.config
        x = self.user_feature_vectors(b).flatten(1)
        return self.user_arch(x).view(-1, cfg.user_vectors, cfg.embedding_dim)

    def item_side(self, b) -> torch.Tensor:
        cfg = self.config
        parts = [
            self.item_sparse(b.item_sparse_lengths, b.item_sparse_values),
            self.item_table(b.item_id)[:, None],
        ]
        if self.item_dense_arch is not None:
            parts.append(self.item_dense_arch(b.item_dense.to(param_dtype(self)))[:, None])
        x = torch.cat(parts, 1).flatten(1)
        return self.item_arch(x).view(-1, cfg.item_vectors, cfg.embedding_dim)

    def forward(self, batch, layout: str) -> dict[str, torch.Tensor]:
        roo = check_layout(batch, layout)
        user = self.user_side(batch)
        item = self.item_side(batch)
        if roo:
            user = expand_by_request(user, batch.num_impressions, item.shape[0])
        z = torch.cat([user, item.to(user.dtype)], 1)
        logits = self.heads(self.top_arch(self.interaction(z)))
        return {"loss": bce_loss(logits, batch.labels), "logits": logits}
