"""Jagged primitives in plain PyTorch, shared by the data layer and the models.

A jagged tensor is `values` [total, *D] plus `lengths` [rows] (values per row), as in torchrec's
KeyedJaggedTensor and fbgemm; `offsets` [rows + 1] are always derived from lengths. A *keyed*
jagged tensor holds F features feature-major: `lengths` [F, rows] and the values of feature 0 for
all rows, then feature 1's, and so on.

These are the only implementations: `roo_ref.jagged` builds the model-side ops on them and
re-exports them, and `roo_ref.jagged_dispatch` routes some to fbgemm when it is importable. Every
op is differentiable in `values` through ordinary autograd.
"""

from __future__ import annotations

import torch


def offsets_from_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Complete cumulative sum [0, l0, l0+l1, ...]: length n+1, int64."""
    out = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths.reshape(-1).to(torch.int64), 0, out=out[1:])
    return out


def lengths_from_offsets(offsets: torch.Tensor) -> torch.Tensor:
    return offsets[1:] - offsets[:-1]


def row_index(lengths: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """For each value, the index of its row: row r repeated lengths[r] times. `total` (the sum of
    lengths, when the caller knows it) spares a device->host sync."""
    rows = torch.arange(lengths.numel(), device=lengths.device)
    return torch.repeat_interleave(rows, lengths, output_size=total)


def segment_ids(offsets: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """row_index from offsets: for each value, the index of its segment (row)."""
    n = int(offsets[-1]) if total is None else total
    return row_index(lengths_from_offsets(offsets), n)


def positions_in_segment(offsets: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """For each value, its position 0..len-1 inside its segment."""
    n = int(offsets[-1]) if total is None else total
    seg = segment_ids(offsets, n)
    return torch.arange(n, device=offsets.device) - offsets[:-1][seg]


def jagged_index_select(
    values: torch.Tensor, lengths: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `index` of a jagged tensor: (values', lengths').

    Vectorized (no Python loop): output position p of segment j reads
    values[offsets[index[j]] + (p - out_offsets[j])]. The backward scatter-adds each output
    segment back to its source row (fbgemm semantics)."""
    offsets = offsets_from_lengths(lengths)
    out_lengths = lengths[index]
    total = int(out_lengths.sum())
    if total == 0:
        return values[:0], out_lengths
    out_offsets = offsets_from_lengths(out_lengths)
    shift = torch.repeat_interleave(offsets[index] - out_offsets[:-1], out_lengths, output_size=total)
    pos = torch.arange(total, device=values.device) + shift
    return values.index_select(0, pos), out_lengths


def keyed_index_select(
    values: torch.Tensor, lengths: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """jagged_index_select for keyed lengths [F, rows]: the same rows of every feature."""
    n_feat, n_rows = lengths.shape
    if n_feat == 0:
        return values[:0], lengths.new_zeros((0, index.numel()))
    flat_index = (torch.arange(n_feat, device=index.device)[:, None] * n_rows + index[None, :]).reshape(-1)
    v, lens = jagged_index_select(values, lengths.reshape(-1), flat_index)
    return v, lens.reshape(n_feat, index.numel())
