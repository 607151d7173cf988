"""Input checks shared by the HSTU attention dispatcher (roo_ref.attention) and the Triton kernel
(roo_ref.kernels.hstu_attention): a leaf module both import, so neither imports the other."""

from __future__ import annotations

import torch


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    num_targets: torch.Tensor | None,
    check_values: bool = True,
) -> None:
    """Clear ValueErrors before any compute or launch. check_values=False keeps the shape and dtype
    checks and skips the value checks (offsets start at 0, end at the token count, never decrease;
    targets within each length), which cost a device->host copy, i.e. a sync, per call: for callers
    whose offsets hold these by construction (roo_ref.models.hstu builds them from lengths)."""
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(
            f"q, k, v must be [tokens, heads, dim]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape; got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:2] != q.shape[:2]:
        raise ValueError(f"v must match q in tokens and heads; got {tuple(v.shape)} vs {tuple(q.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if seq_offsets.dim() != 1 or seq_offsets.numel() < 1 or seq_offsets.dtype not in (torch.int32, torch.int64):
        raise ValueError("seq_offsets must be a 1-D integer tensor of length B+1")
    if num_targets is not None and num_targets.shape != (seq_offsets.numel() - 1,):
        raise ValueError(
            f"num_targets must have one entry per sequence ({seq_offsets.numel() - 1}); got {tuple(num_targets.shape)}"
        )
    if not check_values:
        return
    # One device->host copy for every value check (each .any()/int() on a GPU tensor is a sync).
    host = seq_offsets.to(torch.int64)
    if num_targets is not None:
        host = torch.cat([host, num_targets.to(device=host.device, dtype=torch.int64)])
    host = host.cpu()
    offsets = host[: seq_offsets.numel()]
    if int(offsets[0]) != 0 or int(offsets[-1]) != q.shape[0]:
        raise ValueError(
            f"seq_offsets must start at 0 and end at the token count {q.shape[0]}; "
            f"got {int(offsets[0])}..{int(offsets[-1])}"
        )
    lengths = offsets[1:] - offsets[:-1]
    if (lengths < 0).any():
        raise ValueError("seq_offsets must be non-decreasing")
    if num_targets is not None:
        nt = host[seq_offsets.numel() :]
        if (nt < 0).any() or (nt > lengths).any():
            raise ValueError("num_targets must be in [0, sequence length] for every sequence")
