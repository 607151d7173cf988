"""Triton kernels (GPU; also runnable on CPU through TRITON_INTERPRET=1 at small shapes)."""
