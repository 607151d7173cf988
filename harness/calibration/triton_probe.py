"""A trivial Triton kernel whose only use is timing a launch from Python (harness.calibration.host).
Importing this module raises ImportError where Triton is missing."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _add_one(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=mask) + 1.0, mask=mask)


def launch_add_one(x) -> None:
    """x += 1 in place, by one Triton launch."""
    n = x.numel()
    _add_one[(triton.cdiv(n, 256),)](x, n, BLOCK=256)
