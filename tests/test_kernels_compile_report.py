"""roo_ref.kernels.compile_report: the HSTU kernels compiled for sm_90 on a machine without a GPU
(registers, spills, shared memory from ptxas -v)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Each case compiles a Triton kernel for sm_90 (seconds each).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("triton")


def _cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a real compile
    env["PYTHONPATH"] = str(ROOT)
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    return subprocess.run(
        [sys.executable, "-m", "roo_ref.kernels.compile_report", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _have_ptxas() -> bool:
    r = subprocess.run(
        [sys.executable, "-c", "from roo_ref.kernels.compile_report import _ptxas; print(_ptxas())"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    return r.returncode == 0 and r.stdout.strip() not in ("", "None")


@pytest.mark.skipif(not _have_ptxas(), reason="this Triton has no nvidia backend / ptxas")
def test_forward_default_config_report():
    r = _cli("--kind", "fwd", "--head-dim", "64", "--json")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert row["kind"] == "fwd" and row["config"] == [64, 64, 4, 3]
    assert 0 < row["regs"] <= 255  # the sm_90 limit per thread
    assert row["spill_store_bytes"] >= 0 and row["shared_bytes"] > 0 and isinstance(row["fits_smem"], bool)


def test_bad_config_is_exit_2_with_the_format():
    r = _cli("--kind", "fwd", "--config", "64,64")
    assert r.returncode == 2 and "want BLOCK_M,BLOCK_N,num_warps,num_stages" in r.stderr


def test_options_are_arguments_and_validated():
    """The silu form is an option (HstuKernelOptions.silu), not an environment variable: an unknown
    form is a usage error (exit 2) naming the allowed ones."""
    r = _cli("--kind", "fwd", "--silu", "sigmoid")
    assert r.returncode == 2 and "invalid choice: 'sigmoid'" in r.stderr and "'fast', 'exact', 'tanh_exact'" in r.stderr
