"""One dispatcher for the jagged ops the models use (GR `ops/` style): fbgemm when importable,
plain PyTorch (roo_ref.jagged, on workloads.jagged) otherwise. Both compute the same function, forward and backward.

Choosing:
- `ROO_JAGGED_BACKEND=torch` in the environment (read at import) or `set_backend("torch")` forces
  the PyTorch path; "auto" (default) uses fbgemm where it can; "fbgemm" requires it.
- Per call, fbgemm is only used for dtypes and devices its kernels exist for (fbgemm-gpu-cpu has
  no float64 kernels and no CUDA ones), probed once per (op, device type) — otherwise the call
  falls back to torch, so float64 equivalence tests and the GPU machine (no fbgemm) just work.
"""

from __future__ import annotations

import math
import os

import torch

from roo_ref import jagged as J

BACKENDS = ("auto", "torch", "fbgemm")

try:  # fbgemm registers torch.ops.fbgemm.* on import
    import fbgemm_gpu  # noqa: F401

    HAVE_FBGEMM = hasattr(torch.ops.fbgemm, "jagged_index_select")
except Exception:  # ImportError, or an ABI mismatch raising OSError/RuntimeError at load
    HAVE_FBGEMM = False

_backend = os.environ.get("ROO_JAGGED_BACKEND", "auto").strip().lower() or "auto"
if _backend not in BACKENDS:
    raise ValueError(f"ROO_JAGGED_BACKEND={_backend!r}; allowed: {', '.join(BACKENDS)}")

_FLOAT_OK = (torch.float32, torch.bfloat16, torch.float16)
_device_ok: dict[tuple[str, str], bool] = {}


def set_backend(name: str) -> None:
    """ "auto" | "torch" | "fbgemm" (process-wide)."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"jagged backend {name!r}; allowed: {', '.join(BACKENDS)}")
    if name == "fbgemm" and not HAVE_FBGEMM:
        raise ValueError("jagged backend 'fbgemm' requested but fbgemm_gpu is not importable")
    _backend = name


def get_backend() -> str:
    return _backend


def _probe(op: str, device: torch.device) -> bool:
    key = (op, device.type)
    if key not in _device_ok:
        try:
            lens = torch.ones(1, dtype=torch.int64, device=device)
            v = torch.zeros(1, 1, device=device)
            if op == "cumsum":
                torch.ops.fbgemm.asynchronous_complete_cumsum(lens)
            elif op == "index_select":
                torch.ops.fbgemm.jagged_index_select(v, lens, lens - 1)
            elif op == "to_padded":
                torch.ops.fbgemm.jagged_to_padded_dense(v, [torch.tensor([0, 1], device=device)], [1], 0.0)
            else:
                torch.ops.fbgemm.dense_to_jagged(v.reshape(1, 1, 1), [torch.tensor([0, 1], device=device)])
            _device_ok[key] = True
        except (RuntimeError, NotImplementedError):
            _device_ok[key] = False
    return _device_ok[key]


def use_fbgemm(op: str, t: torch.Tensor, float_values: bool = True) -> bool:
    if _backend == "torch" or not HAVE_FBGEMM:
        return False
    if float_values and t.dtype not in _FLOAT_OK:
        return False
    return _probe(op, t.device)


def _flat(t: torch.Tensor) -> torch.Tensor:
    # explicit width (not -1) so empty tensors reshape too
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


def complete_cumsum(lengths: torch.Tensor) -> torch.Tensor:
    """Offsets [0, l0, l0+l1, ...] (int64)."""
    lengths = lengths.reshape(-1).to(torch.int64)
    if use_fbgemm("cumsum", lengths, float_values=False):
        return torch.ops.fbgemm.asynchronous_complete_cumsum(lengths)
    return J.offsets_from_lengths(lengths)


def jagged_index_select(
    values: torch.Tensor, lengths: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `index` of the jagged (values [total, *D], lengths [rows]); backward = scatter-add."""
    lengths = lengths.to(torch.int64)
    if values.dim() >= 2 and use_fbgemm("index_select", values):
        flat = _flat(values)
        out, out_lengths = torch.ops.fbgemm.jagged_index_select(flat, lengths, index.to(torch.int64))
        return out.reshape(-1, *values.shape[1:]), out_lengths
    return J.jagged_index_select(values, lengths, index)


def expand_by_request(x: torch.Tensor, num_impressions: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """Row r of x (one row per request) copied to each of its k_r impressions; backward is the
    per-request sum of the k_r impression gradients (the ROO gradient)."""
    if x.dim() >= 2 and use_fbgemm("index_select", x):
        idx = J.row_index(num_impressions, total)
        # each request row is a length-1 segment: jagged_index_select is then exactly the expansion
        ones = torch.ones(x.shape[0], dtype=torch.int64, device=x.device)
        out, _ = torch.ops.fbgemm.jagged_index_select(_flat(x), ones, idx)
        return out.reshape(-1, *x.shape[1:])
    return J.expand_by_request(x, num_impressions, total)


def jagged_to_padded_dense(values: torch.Tensor, offsets: torch.Tensor, max_len: int, pad: float = 0.0) -> torch.Tensor:
    """[total, *D] -> [B, max_len, *D]. Raises if a segment is longer than max_len (fbgemm would
    silently truncate; we keep the reference's stricter contract)."""
    lengths = J.lengths_from_offsets(offsets)
    if lengths.numel() and int(lengths.max()) > max_len:
        raise ValueError(f"a segment is longer than max_len={max_len}")
    if use_fbgemm("to_padded", values):
        flat = _flat(values)
        out = torch.ops.fbgemm.jagged_to_padded_dense(flat, [offsets.to(torch.int64)], [max_len], pad)
        return out.reshape(offsets.numel() - 1, max_len, *values.shape[1:])
    return J.jagged_to_padded(values, offsets, max_len, pad)


def dense_to_jagged(padded: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """[B, max_len, *D] -> [total, *D]."""
    if use_fbgemm("to_jagged", padded):
        b, n = padded.shape[:2]
        flat = padded.reshape(b, n, math.prod(padded.shape[2:]))
        out, _ = torch.ops.fbgemm.dense_to_jagged(flat, [offsets.to(torch.int64)], int(offsets[-1]))
        return out.reshape(-1, *padded.shape[2:])
    return J.padded_to_jagged(padded, offsets)


# pure-torch ops with no fbgemm counterpart used here, re-exported so models import one module
segment_sum = J.segment_sum
segment_mean = J.segment_mean
jagged_concat = J.jagged_concat
jagged_tail = J.jagged_tail
positions_in_segment = J.positions_in_segment
