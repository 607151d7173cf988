"""Shared pytest fixtures (kept minimal and generic)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Without a GPU the Triton kernels run through Triton's interpreter. TRITON_INTERPRET must be set
# before *anything* imports triton (and jit-decorates a kernel): a test module collected earlier
# may import the kernels indirectly, so it is set here, when pytest starts, not in the kernel tests.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need a CUDA device: skipped (with the reason) where there is none, so the
    GPU machine runs them all with `pytest -m gpu`."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def run_cli():
    """Run `python -m harness ARGS...` in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    def run(*args, cwd=None):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "harness", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True
        )

    return run


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch intra-op thread (small tensors on a shared 2-core box otherwise
    spend milliseconds per op in thread hand-off); restores the previous setting."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
