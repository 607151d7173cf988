"""Rows of jagged tensors gathered by a row index with no device->host sync (to_impressions' core).

`gather_rows(values, lengths, index, total)` returns, for each tensor in `values` (all jagged over the
same `lengths`), the rows `index` of it, and the gathered lengths. `lengths` is [rows] or keyed
[F, rows] (feature-major values: the same rows of every feature). `total`, the number of gathered
values, must be known on the host: the caller keeps it from when the batch was made, so no size is
read back from the device.

Three implementations, identical results (tests/test_workloads_layouts.py):
- "triton" (CUDA, when Triton imports): one kernel reads each output row's source offset and length
  and copies all the value tensors; only the output is written, no position index is built.
- "torch": a position per output value (repeat_interleave with output_size, plus an arange), then
  one index_select per tensor. Any device.
- "numpy" (CPU): the source rows as views, concatenated; one memcpy per row instead of an index per
  value, several times faster on a CPU for long rows (histories), slower for short ones (pooled ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from workloads.jagged import offsets_from_lengths

BACKENDS = ("auto", "triton", "torch", "numpy")
_NUMPY_MIN_MEAN_LENGTH = 16  # below this mean row length, per-row views cost more than an index


def gather_rows(
    values: Sequence[torch.Tensor], lengths: torch.Tensor, index: torch.Tensor, total: int, backend: str = "auto"
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(rows `index` of each of `values`, their lengths) for lengths [rows] or keyed [F, rows]."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; allowed: {', '.join(BACKENDS)}")
    keyed = lengths.dim() == 2
    lens2 = lengths if keyed else lengths.reshape(1, -1)
    out_lengths = lens2[:, index]
    if total == 0 or out_lengths.numel() == 0:
        return [v[:0] for v in values], out_lengths if keyed else out_lengths.reshape(-1)
    if backend == "auto":
        backend = _auto_backend(values[0].device, total, out_lengths.numel())
    if backend == "numpy":
        out = _gather_numpy(values, lens2, index)
    else:
        out_offsets = offsets_from_lengths(out_lengths)
        src_offsets = offsets_from_lengths(lens2)
        if backend == "triton":
            out = _gather_triton(values, src_offsets, out_offsets, out_lengths, index, lens2.shape[1], total)
        else:
            out = _gather_torch(values, src_offsets, out_offsets, out_lengths, index, lens2.shape[1], total)
    return out, out_lengths if keyed else out_lengths.reshape(-1)


def _auto_backend(device: torch.device, total: int, rows: int) -> str:
    if device.type == "cuda":
        return "triton" if _triton_available() else "torch"
    if device.type == "cpu" and total >= _NUMPY_MIN_MEAN_LENGTH * rows:
        return "numpy"
    return "torch"


@lru_cache(maxsize=1)
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _flat_rows(index: torch.Tensor, n_feat: int, n_src: int) -> torch.Tensor:
    """Source row of every output row of a keyed tensor: feature f's copy of index, offset by f*n_src."""
    if n_feat == 1:
        return index
    return (torch.arange(n_feat, device=index.device)[:, None] * n_src + index[None, :]).reshape(-1)


def _gather_torch(values, src_offsets, out_offsets, out_lengths, index, n_src: int, total: int) -> list[torch.Tensor]:
    rows = _flat_rows(index, out_lengths.shape[0], n_src)
    shift = src_offsets[rows] - out_offsets[:-1]
    pos = torch.repeat_interleave(shift, out_lengths.reshape(-1), output_size=total)
    pos += torch.arange(total, device=pos.device)
    return [v.index_select(0, pos) for v in values]


def _gather_numpy(values, lens2: torch.Tensor, index: torch.Tensor) -> list[torch.Tensor]:
    n_feat, n_src = lens2.shape
    offs = np.zeros(lens2.numel() + 1, dtype=np.int64)
    np.cumsum(lens2.reshape(-1).numpy(), out=offs[1:])
    rows = _flat_rows(index, n_feat, n_src).tolist()
    bounds = offs.tolist()
    out = []
    for v in values:
        a = v.numpy()
        segs = [a[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]
        out.append(torch.from_numpy(np.concatenate([segs[r] for r in rows])))
    return out


def _gather_triton(values, src_offsets, out_offsets, out_lengths, index, n_src: int, total: int):
    from workloads import expand_kernel

    return expand_kernel.gather(values, src_offsets, out_offsets, out_lengths, index, n_src, total)


__all__ = ["BACKENDS", "gather_rows"]
