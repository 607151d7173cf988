"""ROO's request -> impression expansion inside a training step: `Expansion(index, offsets)`.

Impressions are request-major, so each request's k_r impressions are one contiguous run of rows:
`index` [N] is the request of each impression and `offsets` [R + 1] the runs' bounds, both built
once per batch by the models' `prepare`. Calling an Expansion on x [R, *] gives x.index_select(0,
index) [N, *]; its backward sums each request's run of impression gradients.

Why not index_select's own backward: it is an index_add_, one float atomic per impression row and
column onto its request's row, so the k_r rows of a request collide on the same addresses (bf16
atomics serialize worst). The backward here pools each run with embedding_bag (mode sum over the
positions of the run), which reads the gradient once, accumulates in fp32 for half types and
writes each request's row once, without atomics and without a host sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F


def run_sums(grad: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """[R, *grad.shape[1:]]: the sum of grad's rows offsets[r]..offsets[r+1] (0 for an empty run)."""
    n, rows = grad.shape[0], offsets.numel() - 1
    flat = grad.reshape(n, math.prod(grad.shape[1:]))
    positions = torch.arange(n, device=grad.device)
    pooled = F.embedding_bag(positions, flat, offsets, mode="sum", include_last_offset=True)
    return pooled.view(rows, *grad.shape[1:])


class _Expand(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index, offsets):
        ctx.save_for_backward(offsets)
        return x.index_select(0, index)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (offsets,) = ctx.saved_tensors
        return run_sums(grad.contiguous(), offsets), None, None


@dataclass(frozen=True)
class Expansion:
    """index [N]: each impression's request (non-decreasing); offsets [R + 1]: complete cumsum of
    the requests' impression counts."""

    index: torch.Tensor
    offsets: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [R, *] -> [N, *], row n = x[index[n]]."""
        if x.shape[0] != self.offsets.numel() - 1:
            raise ValueError(f"expanding {x.shape[0]} rows, but the batch has {self.offsets.numel() - 1} requests")
        return _Expand.apply(x, self.index, self.offsets)
