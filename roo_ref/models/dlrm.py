"""DLRM-style ranker with a UserArch (early-ranking: dot interaction; late-ranking: DCN-v2).

User side (RO): the user feature vectors of roo_ref.models.user_features (user sparse bags + user
dense MLP + pooled history) -> `user_arch`, an MLP compressing them to `user_vectors` vectors. Item side (NRO): item
sparse bags + candidate item id (the same item table as the history) + item dense MLP -> `item_arch`
(to `item_vectors` vectors). Then `interaction` -> `top_arch` -> `heads` (one logit per task).

Layouts: "impression" runs every module on the impression rows (user features duplicated);
"roo" runs the user side once per request and expands its output to the impressions right before
the interaction (roo_ref.expansion; backward: the per-request gradient sum). The interaction takes
the user vectors per request and expands them itself: DCN-v2's first cross layer projects the user
columns of x0 once per request (a Linear is a sum over its input columns, so V x0 = V_user x_user +
V_item x_item) and expands the rank-wide product, not the full width.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from roo_ref.embeddings import EmbeddingBagCollection
from roo_ref.expansion import Expansion
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

    def forward(self, user: torch.Tensor, item: torch.Tensor, expand: Expansion | None = None) -> torch.Tensor:
        """user [rows, Vu, D] (per request when `expand` is given), item [N, Vi, D] -> [N, out_dim]."""
        z = torch.cat([user if expand is None else expand(user), item], 1)  # [N, V, D]
        dots = torch.bmm(z, z.transpose(1, 2))[:, self.iu[0], self.iu[1]]
        return torch.cat([dots, z.flatten(1)], 1)


class CrossLayer(nn.Module):
    """DCN-v2 low-rank cross: x_{l+1} = x0 * (U (V x_l) + b) + x_l."""

    def __init__(self, width: int, rank: int):
        super().__init__()
        self.v = nn.Linear(width, rank, bias=False)
        self.u = nn.Linear(rank, width)

    def forward(self, x0: torch.Tensor, x: torch.Tensor, vx: torch.Tensor | None = None) -> torch.Tensor:
        """`vx`: V x, when the caller has computed it (DCNInteraction under ROO)."""
        return x0 * self.u(self.v(x) if vx is None else vx) + x


class DCNInteraction(nn.Module):
    def __init__(self, n_vectors: int, dim: int, layers: int, rank: int):
        super().__init__()
        width = n_vectors * dim
        self.cross = nn.ModuleList(CrossLayer(width, rank) for _ in range(layers))
        self.out_dim = width

    def forward(self, user: torch.Tensor, item: torch.Tensor, expand: Expansion | None = None) -> torch.Tensor:
        """user [rows, Vu, D] (per request when `expand` is given), item [N, Vi, D] -> [N, width].
        Under ROO the first layer's V meets the user columns once per request:
        V x0 = expand(V_user user) + V_item item."""
        x0 = torch.cat([user if expand is None else expand(user), item], 1).flatten(1)
        x, layers = x0, list(self.cross)
        if expand is not None and layers:
            first, wu = layers.pop(0), user.shape[1] * user.shape[2]
            # V [rank, width], x0's first wu columns being the user vectors: cast once and split
            # (one cast and one concatenation in the backward, not a cast and a zero-filled copy
            # per slice); the item product's addmm adds the expanded user product in place
            v = first.v.weight.to(item.dtype)
            v_user, v_item = v.split([wu, v.shape[1] - wu], 1)
            vx = torch.addmm(expand(F.linear(user.flatten(1), v_user)), item.flatten(1), v_item.t())
            x = first(x0, x0, vx)
        for layer in layers:
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
            x = self.interaction(user, item.to(user.dtype), p.expand)
            logits = self.heads(self.top_arch(x))
        regions.tag(INTERACTION, logits)
        with regions(LOSS):
            loss = bce_loss(logits, p.batch.labels, impression_weights(p.batch))
        regions.tag(LOSS, loss)
        return {"loss": loss, "logits": logits}
