"""Jagged operators in plain PyTorch: (values, offsets) tensors as in fbgemm and GR.

These are the reference implementations; roo_ref.jagged_dispatch (if present) may route them to
fbgemm when it is importable. All are differentiable through ordinary autograd:
- expand_by_request (request -> impression gather): backward is the segment sum of the k
  impression gradients of a request, which is exactly the ROO gradient.
"""

from __future__ import annotations

import torch


def offsets_from_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """[0, l0, l0+l1, ...]: length n+1, int64."""
    out = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths.reshape(-1).to(torch.int64), 0, out=out[1:])
    return out


def lengths_from_offsets(offsets: torch.Tensor) -> torch.Tensor:
    return offsets[1:] - offsets[:-1]


def segment_ids(offsets: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """For each value, the index of its segment (row)."""
    lengths = lengths_from_offsets(offsets)
    n = int(offsets[-1]) if total is None else total
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=offsets.device), lengths, output_size=n)


def expand_by_request(x: torch.Tensor, num_impressions: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """Copy row r of x (one row per request) into each of its k_r impression rows."""
    idx = torch.repeat_interleave(
        torch.arange(num_impressions.numel(), device=x.device), num_impressions, output_size=total
    )
    return x.index_select(0, idx)


def segment_sum(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Sum of each segment's rows: [num_segments, ...]."""
    n_seg = offsets.numel() - 1
    out = values.new_zeros((n_seg, *values.shape[1:]))
    return out.index_add(0, segment_ids(offsets, values.shape[0]), values)


def segment_mean(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Mean of each segment's rows (0 for an empty segment)."""
    lengths = lengths_from_offsets(offsets).clamp(min=1).to(values.dtype)
    return segment_sum(values, offsets) / lengths.reshape(-1, *([1] * (values.dim() - 1)))


def padded_positions(offsets: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of every jagged value inside a [B, max_len] padded layout."""
    total = int(offsets[-1])
    rows = segment_ids(offsets, total)
    cols = torch.arange(total, device=offsets.device) - offsets[:-1][rows]
    if total and int(cols.max()) >= max_len:
        raise ValueError(f"a segment is longer than max_len={max_len}")
    return rows, cols


def jagged_to_padded(values: torch.Tensor, offsets: torch.Tensor, max_len: int, pad: float = 0.0) -> torch.Tensor:
    """[total, *D] jagged -> [B, max_len, *D] padded (differentiable)."""
    b = offsets.numel() - 1
    rows, cols = padded_positions(offsets, max_len)
    out = values.new_full((b, max_len, *values.shape[1:]), pad)
    return out.index_put((rows, cols), values)


def padded_to_jagged(padded: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """[B, max_len, *D] padded -> [total, *D] jagged (differentiable)."""
    rows, cols = padded_positions(offsets, padded.shape[1])
    return padded[rows, cols]
