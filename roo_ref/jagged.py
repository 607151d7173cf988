"""Model-side jagged operators in plain PyTorch: (values, offsets) tensors as in fbgemm and GR.

They build on the primitives of workloads.jagged (offsets, segment ids, index select), which are
re-exported here so the models and kernels import one module. These are the reference
implementations; roo_ref.jagged_dispatch routes some of them to fbgemm when it is importable. All
are differentiable through ordinary autograd:
- expand_by_request (request -> impression gather): backward is the segment sum of the k
  impression gradients of a request, which is exactly the ROO gradient.
"""

from __future__ import annotations

import torch

from workloads.jagged import (
    jagged_index_select,
    keyed_index_select,
    lengths_from_offsets,
    offsets_from_lengths,
    positions_in_segment,
    row_index,
    segment_ids,
)

__all__ = [
    "expand_by_request",
    "jagged_concat",
    "jagged_index_select",
    "jagged_tail",
    "jagged_to_padded",
    "keyed_index_select",
    "lengths_from_offsets",
    "offsets_from_lengths",
    "padded_positions",
    "padded_to_jagged",
    "positions_in_segment",
    "row_index",
    "segment_ids",
    "segment_mean",
    "segment_sum",
]


def expand_by_request(x: torch.Tensor, num_impressions: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """Copy row r of x (one row per request) into each of its k_r impression rows."""
    return x.index_select(0, row_index(num_impressions, total))


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


def jagged_concat(
    parts: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Row-wise concatenation of jagged tensors with the same number of rows.

    parts: [(values_i, lengths_i)], values_i [total_i, *D]. Returns (values, lengths, starts) where
    row r is parts[0] row r, then parts[1] row r, ...; starts[i][j] is the output index of value j
    of part i (so callers can read a part back out with index_select). Differentiable."""
    lengths = torch.stack([ln.to(torch.int64) for _, ln in parts]).sum(0)
    offsets = offsets_from_lengths(lengths)
    total = sum(vals.shape[0] for vals, _ in parts)  # = offsets[-1], known without a device sync
    before = torch.zeros_like(lengths)
    pieces, starts = [], []
    for vals, ln in parts:
        ln = ln.to(torch.int64)
        n = vals.shape[0]
        seg = segment_ids(offsets_from_lengths(ln), n)
        dest = offsets[:-1][seg] + before[seg] + positions_in_segment(offsets_from_lengths(ln), n)
        pieces.append(vals)
        starts.append(dest)
        before = before + ln
    values = parts[0][0].new_empty((total, *parts[0][0].shape[1:]))
    # index_put (not in-place on a leaf) keeps autograd to every part
    out = values.index_put((torch.cat(starts),), torch.cat(pieces))
    return out, lengths, starts


def jagged_tail(lengths: torch.Tensor, max_len: int, total: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the last `max_len` values of every row: (index into values, new lengths). `total` (the
    number of values, when the caller knows it) spares one device sync; the index's size is data
    dependent, so this is per-batch bookkeeping (a model's prepare), not a step op."""
    offsets = offsets_from_lengths(lengths)
    total = int(offsets[-1]) if total is None else total
    pos = positions_in_segment(offsets, total)
    seg_len = lengths.to(torch.int64)[segment_ids(offsets, total)]
    keep = pos >= seg_len - max_len
    return keep.nonzero().reshape(-1), lengths.clamp(max=max_len)
