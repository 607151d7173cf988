"""A profiler range around a Triton launch, so the profiler links its kernels to an operator.

Why: the profiler links a kernel to the innermost *operator* (a FUNCTION-scope record) open when it
was launched, not to user ranges (record_function). A Triton kernel launched from Python outside
any operator (the fused optimizer's segment sum and row update, which run inside
`Optimizer.step`'s user range only) would be linked to nothing, and the harness could not charge
it to the optimizer's side ranges (harness.profile_step). `_RecordFunctionFast` opens a
FUNCTION-scope record, as torch's own compiled Triton kernels do; it costs well under a
microsecond and nothing while no profiler is running.
"""

from __future__ import annotations

import contextlib

import torch

_FAST = getattr(getattr(torch._C, "_profiler", None), "_RecordFunctionFast", None)


def kernel_range(name: str) -> contextlib.AbstractContextManager:
    """A context whose launches the profiler shows under the operator `name`."""
    return _FAST(name) if _FAST is not None else contextlib.nullcontext()
