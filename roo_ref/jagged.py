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
    rows = torch.arange(lengths.numel(), device=offsets.device)
    return torch.repeat_interleave(rows, lengths, output_size=n)


def expand_by_request(
    x: torch.Tensor, num_impressions: torch.Tensor, total: int | None = None
) -> torch.Tensor:
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


def jagged_to_padded(
    values: torch.Tensor, offsets: torch.Tensor, max_len: int, pad: float = 0.0
) -> torch.Tensor:
    """[total, *D] jagged -> [B, max_len, *D] padded (differentiable)."""
    b = offsets.numel() - 1
    rows, cols = padded_positions(offsets, max_len)
    out = values.new_full((b, max_len, *values.shape[1:]), pad)
    return out.index_put((rows, cols), values)


def padded_to_jagged(padded: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """[B, max_len, *D] padded -> [total, *D] jagged (differentiable)."""
    rows, cols = padded_positions(offsets, padded.shape[1])
    return padded[rows, cols]


def jagged_index_select(
    values: torch.Tensor, lengths: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `index` of a jagged tensor: (values', lengths'). Differentiable in `values`; the
    backward scatters-adds each output segment back to its source row (fbgemm semantics)."""
    offsets = offsets_from_lengths(lengths)
    out_lengths = lengths[index]
    total = int(out_lengths.sum())
    if total == 0:
        return values[:0], out_lengths
    out_offsets = offsets_from_lengths(out_lengths)
    shift = torch.repeat_interleave(offsets[index] - out_offsets[:-1], out_lengths, output_size=total)
    pos = torch.arange(total, device=values.device) + shift
    return values.index_select(0, pos), out_lengths


def positions_in_segment(offsets: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """For each value, its position 0..len-1 inside its segment."""
    n = int(offsets[-1]) if total is None else total
    seg = segment_ids(offsets, n)
    return torch.arange(n, device=offsets.device) - offsets[:-1][seg]


def jagged_concat(
    parts: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Row-wise concatenation of jagged tensors with the same number of rows.

    parts: [(values_i, lengths_i)], values_i [total_i, *D]. Returns (values, lengths, starts) where
    row r is parts[0] row r, then parts[1] row r, ...; starts[i][j] is the output index of value j
    of part i (so callers can read a part back out with index_select). Differentiable."""
    lengths = torch.stack([ln.to(torch.int64) for _, ln in parts]).sum(0)
    offsets = offsets_from_lengths(lengths)
    total = int(offsets[-1])
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


def jagged_tail(lengths: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the last `max_len` values of every row: (index into values, new lengths)."""
    offsets = offsets_from_lengths(lengths)
    total = int(offsets[-1])
    pos = positions_in_segment(offsets, total)
    seg_len = lengths.to(torch.int64)[segment_ids(offsets, total)]
    keep = pos >= seg_len - max_len
    return keep.nonzero().reshape(-1), lengths.clamp(max=max_len)
