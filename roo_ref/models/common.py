"""Pieces shared by the models: MLPs, the layout check, the per-impression BCE loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from workloads.batch import ImpressionBatch, RequestBatch
from workloads.errors import UserError
from workloads.layout import LAYOUTS, Layout


class MLP(nn.Sequential):
    """Linear(+ReLU) layers; the last layer's ReLU only with final_act (children named 0, 1, ...)."""

    def __init__(self, in_dim: int, sizes: tuple[int, ...] | list[int], final_act: bool = True):
        layers: list[nn.Module] = []
        d = in_dim
        for i, s in enumerate(sizes):
            layers.append(nn.Linear(d, s))
            if final_act or i < len(sizes) - 1:
                layers.append(nn.ReLU())
            d = s
        super().__init__(*layers)
        self.out_dim = d


def model_layout(layout: str | Layout) -> Layout:
    """The Layout a model step runs in; models take exactly `impression` or `roo` (the data
    layer's name `request` is not a model layout), anything else is one clear error."""
    if layout not in LAYOUTS:
        raise UserError(f"layout={str(layout)!r}; allowed: {', '.join(LAYOUTS)}")
    return Layout(layout)


def check_layout(batch, layout: str | Layout) -> bool:
    """True for the ROO layout; a clear error for a wrong layout or batch type."""
    roo = model_layout(layout) is Layout.ROO
    want = RequestBatch if roo else ImpressionBatch
    if not isinstance(batch, want):
        raise UserError(f"layout={str(layout)!r} needs a {want.__name__}, got {type(batch).__name__}")
    return roo


Weights = tuple[torch.Tensor, torch.Tensor]


def impression_weights(batch) -> Weights | None:
    """(weight [N], real count) of a batch padded to a CUDA-graph bucket (roo_ref.pad: 1 on real
    impressions, 0 on padding ones; the count a 0-d device tensor, so no sync); None for a plain batch."""
    w = getattr(batch, "impression_weight", None)
    return None if w is None else (w, batch.real_impressions)


def weighted_mean(x: torch.Tensor, weights: Weights | None) -> torch.Tensor:
    """Mean over the leading (impression) dim, and over any others; with `weights`, padding rows
    count 0 and the sum is divided by the real count (so it equals the unpadded batch's mean)."""
    if weights is None:
        return x.mean()
    w, count = weights
    w = w.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    per_row = x[0].numel() if x.dim() > 1 else 1
    return (x * w).sum() / (count.to(x.dtype) * per_row)


def bce_loss(logits: torch.Tensor, labels: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
    """BCE per task, mean over impressions (and tasks); computed in fp32 under autocast.
    `weights` (impression_weights): a padded batch's mean over its real impressions."""
    x = at_least_fp32(logits)
    if weights is None:
        return F.binary_cross_entropy_with_logits(x, labels.to(x.dtype))
    return weighted_mean(F.binary_cross_entropy_with_logits(x, labels.to(x.dtype), reduction="none"), weights)


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """Upcast half types for reductions/losses; keep float64 (the tight equivalence tests)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype
