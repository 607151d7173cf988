"""Triton kernels (GPU; also runnable on CPU through TRITON_INTERPRET=1 at small shapes)."""

import os


def interpreting() -> bool:
    """Whether Triton runs its interpreter (TRITON_INTERPRET=1): kernels then run on CPU tensors,
    and a few numerics differ from the GPU's (its bf16 casts truncate instead of rounding)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
