"""benchmarks.hstu_kernel: the Triton HSTU attention benchmark's variants (named options), command
line and summary table; all without a GPU (the timed parts need CUDA and run on the GPU machine)."""

from __future__ import annotations

import pytest

from benchmarks import hstu_kernel
from benchmarks.hstu_kernel import cli, inputs, providers, variants
from benchmarks.hstu_kernel.providers import print_table
from benchmarks.hstu_kernel.variants import VARIANTS, parse_variant
from roo_ref.kernels.options import HstuKernelOptions


def test_benchmark_sweep_variants_parse():
    name, options = parse_variant("small-bwd:bwd=64,64,4,2;dq_mode=kernel;silu=exact;time_grad=atomic;autotune=1")
    assert name == "small-bwd"
    assert options == HstuKernelOptions(
        dq_mode="kernel", silu="exact", time_grad="atomic", autotune=True, bwd_config=(64, 64, 4, 2)
    )
    assert parse_variant("default:") == ("default", HstuKernelOptions())
    # a variant changes only what it names: the rest comes from the base options (the environment's)
    base = HstuKernelOptions(time_grad="atomic")
    assert parse_variant("dq-kernel", base) == ("dq-kernel", HstuKernelOptions(dq_mode="kernel", time_grad="atomic"))
    assert parse_variant("fwd-64x32x4w3")[1].fwd_config == (64, 32, 4, 3)
    assert all(parse_variant(v)[0] == v for v in VARIANTS)
    with pytest.raises(ValueError, match="bad item 'tma=1'; keys: dq_mode, time_grad, silu, autotune, fwd"):
        parse_variant("x:tma=1")
    with pytest.raises(ValueError, match="fwd='64,64': want BLOCK_M"):
        parse_variant("x:fwd=64,64")
    with pytest.raises(ValueError, match="variant 'x:silu=sigmoid': HstuKernelOptions.silu='sigmoid'; allowed"):
        parse_variant("x:silu=sigmoid")
    with pytest.raises(ValueError, match="unknown variant 'loop-per-range'; registered: default, dq-atomic"):
        parse_variant("loop-per-range")


def test_benchmark_cli_checks_names_before_any_gpu_work(capsys, monkeypatch):
    monkeypatch.delenv("ROO_HSTU_DQ", raising=False)
    assert cli.main(["--providers", "triton,cutlass"]) == 2
    assert "unknown provider 'cutlass'; known: torch_ref" in capsys.readouterr().err
    assert cli.main(["--sweep", "--variant", "x:one_loop=0"]) == 2
    assert "bad item 'one_loop=0'" in capsys.readouterr().err
    monkeypatch.setenv("ROO_HSTU_DQ", "sometimes")
    assert cli.main(["--once", "1"]) == 2
    assert "ROO_HSTU_DQ='sometimes'; allowed: auto, kernel, atomic" in capsys.readouterr().err
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "providers: torch_ref, sdpa_cudnn, sdpa_flash, triton, triton_atomic, triton_nocheck" in out
    assert "variant dq-kernel: {'dq_mode': 'kernel'}" in out


def test_benchmark_modules_are_no_asv_suite():
    """asv imports every module under benchmarks/: these must import without a GPU (and without
    running the command) and define no name asv would time."""
    import benchmarks.hstu_kernel.__main__  # noqa: F401 - importing it must not run main

    prefixes = ("time_", "timeraw_", "track_", "mem_", "peakmem_")
    for mod in (hstu_kernel, inputs, providers, variants, cli):
        assert [n for n in vars(mod) if n.startswith(prefixes)] == [], mod.__name__


def test_benchmark_table_prints_the_gpu_time_rate(capsys):
    """print_table: Triton's fwd+bwd as a percentage of the same-run matmul, from the event time and
    from the GPU time (the forward's and the backward's GPU time summed): 3.5 x 1e9 FLOP over
    1.0 + 2.5 ms is 1 TFLOP/s, 50% of a 2 TFLOP/s matmul; the event rate 0.5 TFLOP/s is 25%."""
    row = dict(
        L=512, dist="jagged", targets=32, provider="triton_nocheck", fwd_flops=1e9, fwd_tflops=1.0,
        bwd_tflops=1.0, fwdbwd_tflops=0.5, fwd_gpu_ms=1.0, bwd_gpu_ms=2.5,
    )  # fmt: skip
    sdpa = dict(L=512, dist="jagged", targets=32, provider="sdpa_cudnn", fwd_tflops=3.0, bwd_tflops=2.0,
                fwdbwd_tflops=2.2)  # fmt: skip
    print_table(dict(rows=[sdpa, row], matmul_bf16_8192_tflops=2.0, device="GPU"))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("512   jagged   32 |") and line.endswith("| 25% / 50%"), line
    assert "3/2/2" in line  # the SDPA cell, before Triton's
    del row["bwd_gpu_ms"]  # no GPU time recorded (e.g. a provider run without the profiler pass)
    print_table(dict(rows=[row], matmul_bf16_8192_tflops=2.0, device="GPU"))
    assert capsys.readouterr().out.strip().endswith("| 25% / -")


def test_mask_pairs_counts_the_allowed_pairs():
    """h(h+1)/2 + nt*h + nt per sequence of n tokens, nt targets, h = n - nt: a causal history, each
    target seeing it and itself."""
    import torch

    lengths, targets = torch.tensor([4, 3]), torch.tensor([1, 0])
    assert inputs.mask_pairs(lengths, targets) == (3 * 4 // 2 + 1 * 3 + 1) + 3 * 4 // 2
