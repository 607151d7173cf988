"""HSTU pointwise attention over jagged sequences, with the target-aware mask. One dispatcher.

Semantics (the generative-recommenders flavour):
    A[i, j] = silu(alpha * <q_i, k_j> + rab(i, j)) / normalizer * mask(i, j)
    out_i   = sum_j A[i, j] v_j
No softmax; `normalizer` is a fixed constant N (e.g. the max sequence length) so that a request
sequence and its impression sequences are scaled identically.

Target-aware mask for a sequence of n tokens whose last `nt` are targets (history length L = n-nt):
    mask(i, j) = (j <= i) and (j < L or j == i)
History is causal; each target sees the whole history and itself, never another target. Hence one
request sequence (history + k targets) gives exactly the outputs of k impression sequences
(history + 1 target) — the ROO identity this project measures.

Relative attention bias (optional), shared across heads:
    rab(i, j) = pos_weights[clamp(pos_i - pos_j, 0, P-1)]
              + time_weights[clamp(floor(log2(1 + max(ts_i - ts_j, 0))), 0, T-1)]
`positions` / `timestamps` are per token and given by the caller, so that all targets of a request
carry the position and time a lone impression target would (keeping the ROO identity exact).

Tensors: q, k [total_tokens, heads, d_qk], v [total_tokens, heads, d_v], seq_offsets [B+1] int64,
num_targets [B] int64 or None (no targets: plain causal).

Backends: "torch" (reference: padded explicit matmuls, counted by FlopCounterMode; default),
"triton" (roo_ref.kernels, GPU or TRITON_INTERPRET=1; imported on first use, so this module needs no
triton). The input checks live in roo_ref.attention_checks, which the kernel imports too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from roo_ref.attention_checks import check_inputs
from roo_ref.jagged import jagged_to_padded, lengths_from_offsets, padded_to_jagged

if TYPE_CHECKING:
    from roo_ref.kernels.options import HstuKernelOptions

BACKENDS = ("torch", "triton")


def time_bucket(dt: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """floor(log2(1 + max(dt, 0))), clamped to [0, num_buckets-1]; dt in seconds (int or float)."""
    x = torch.log2(1.0 + dt.clamp(min=0).to(torch.float32))
    return x.floor().to(torch.int64).clamp(0, num_buckets - 1)


def target_aware_mask(lengths: torch.Tensor, num_targets: torch.Tensor | None, max_len: int) -> torch.Tensor:
    """[B, max_len, max_len] bool mask (False on padding)."""
    dev = lengths.device
    i = torch.arange(max_len, device=dev)[:, None]
    j = torch.arange(max_len, device=dev)[None, :]
    n = lengths[:, None, None]
    hist = n - (num_targets[:, None, None] if num_targets is not None else 0)
    return (j <= i) & ((j < hist) | (j == i)) & (i < n) & (j < n)


def hstu_attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    normalizer: float,
    num_targets: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    timestamps: torch.Tensor | None = None,
    pos_weights: torch.Tensor | None = None,
    time_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference: pad to [B, H, N, D], explicit matmuls, mask, back to jagged."""
    lengths = lengths_from_offsets(seq_offsets)
    n = max_seq_len
    qp = jagged_to_padded(q, seq_offsets, n).transpose(1, 2)  # [B, H, N, D]
    kp = jagged_to_padded(k, seq_offsets, n).transpose(1, 2)
    vp = jagged_to_padded(v, seq_offsets, n).transpose(1, 2)
    s = torch.matmul(qp, kp.transpose(-1, -2)) * alpha  # [B, H, N, N]
    rab = relative_bias(seq_offsets, n, positions, timestamps, pos_weights, time_weights)
    if rab is not None:
        s = s + rab[:, None].to(s.dtype)
    mask = target_aware_mask(lengths, num_targets, n)
    a = F.silu(s) * (mask[:, None].to(s.dtype) / normalizer)
    out = torch.matmul(a, vp)  # [B, H, N, Dv]
    return padded_to_jagged(out.transpose(1, 2), seq_offsets)


def relative_bias(
    seq_offsets: torch.Tensor,
    max_len: int,
    positions: torch.Tensor | None,
    timestamps: torch.Tensor | None,
    pos_weights: torch.Tensor | None,
    time_weights: torch.Tensor | None,
) -> torch.Tensor | None:
    """[B, N, N] bias from per-token positions/timestamps and the two bucket tables (or None)."""
    bias = None
    if pos_weights is not None:
        if positions is None:
            raise ValueError("pos_weights given without positions")
        p = jagged_to_padded(positions, seq_offsets, max_len)
        d = (p[:, :, None] - p[:, None, :]).clamp(0, pos_weights.numel() - 1)
        bias = pos_weights[d]
    if time_weights is not None:
        if timestamps is None:
            raise ValueError("time_weights given without timestamps")
        t = jagged_to_padded(timestamps, seq_offsets, max_len)
        b = time_weights[time_bucket(t[:, :, None] - t[:, None, :], time_weights.numel())]
        bias = b if bias is None else bias + b
    return bias


def hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    normalizer: float,
    num_targets: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    timestamps: torch.Tensor | None = None,
    pos_weights: torch.Tensor | None = None,
    time_weights: torch.Tensor | None = None,
    backend: str = "torch",
    check_values: bool = True,
    kernel_options: HstuKernelOptions | None = None,
) -> torch.Tensor:
    """Dispatch to a backend; all take the same arguments and compute the same function.
    check_values: see check_inputs (False skips the checks that synchronize with the device).
    kernel_options: the Triton kernel's options (None: its defaults); the torch backend ignores them."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    args = (q, k, v, seq_offsets, max_seq_len, alpha, normalizer, num_targets, positions, timestamps)
    args += (pos_weights, time_weights)
    if backend == "triton":
        from roo_ref.kernels.hstu_attention import hstu_attention_triton

        # the kernel's entry runs the same checks (once: a second check would be a second sync)
        return hstu_attention_triton(*args, check_values=check_values, options=kernel_options)
    check_inputs(q, k, v, seq_offsets, num_targets, check_values)
    return hstu_attention_torch(*args)
