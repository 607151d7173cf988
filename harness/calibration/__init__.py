"""Kernel-class calibration: the microbenchmarks behind roo_ref.cost.kernel_classes.

`calibrate_kernels(device)` runs every class's microbenchmark on `device` (small grids on the CPU,
seconds; wide ones on a GPU, about a minute) and returns the `kernel_classes` object a calibration
record carries (KernelClasses.from_dict reads it). Nothing here sees a training step's time: the
step-time predictions (roo-bench validate-time) are checked against steps that never fit anything.

  timing   kernel time of one call (CUDA graphs for short calls, events for long ones)
  kernels  gemm, elementwise / reduction / gather / optimizer bandwidth curves, grad_reduce
  hstu     the Triton HSTU attention, forward + backward
  host     per-op, per-launch, graph-replay and sync costs
"""

from __future__ import annotations

import time

__all__ = ["calibrate_kernels"]


def _hstu_shape() -> dict:
    """The hstu-ranking preset's attention call (heads, dims per head, relative bias), the shape
    the class is used at (its rate is per FLOP, so other dims scale by their FLOPs)."""
    from roo_ref.model_presets import get_model_config

    cfg = get_model_config("hstu-ranking")
    return {
        "heads": cfg.num_heads,
        "d_qk": cfg.d_qk,
        "d_v": cfg.d_v,
        "rab": bool(cfg.rab),
        "pos_buckets": cfg.pos_buckets,
        "time_buckets": cfg.time_buckets,
    }


def calibrate_kernels(device: str = "cpu", seed: int = 0, host_models: tuple[str, ...] = ()) -> dict:
    """The `kernel_classes` object of a calibration record, measured on `device`; `host_models`:
    model presets whose own steps also price the host (harness.calibration.host)."""
    import torch

    from harness.calibration import hstu, kernels
    from harness.calibration.host import host_terms
    from harness.calibration.timing import TIMING
    from roo_ref.cost.kernel_classes import RateGrid

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    grids = kernels.CUDA if cuda else kernels.CPU
    g = torch.Generator(device=dev).manual_seed(seed)
    took: dict[str, float] = {}

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        out = fn(*a)
        took[name] = round(time.perf_counter() - t0, 3)
        return out

    def rates(t: dict | None, what: str) -> dict | None:
        if t is None:
            return None
        return RateGrid.from_times(t["axes"], t["values"], t["work"], what, t.get("measured")).to_dict()

    # the host terms first: the kernel classes time some short calls through the profiler, and
    # after a profiler session CUPTI may stay hooked to every launch (pytorch/pytorch#144455), a
    # host cost the host terms must not include
    host = timed("host", host_terms, torch, dev, g, tuple(host_models))
    gemm = {
        "bf16" if cuda else "fp32": timed(
            "gemm", kernels.gemm_table, torch, dev, torch.bfloat16 if cuda else torch.float32, grids.gemm, grids, g
        )
    }
    if cuda:
        gemm["fp32"] = timed("gemm_fp32", kernels.gemm_table, torch, dev, torch.float32, grids.gemm_fp32, grids, g)
    curves = timed("bandwidth", kernels.bandwidth_curves, torch, dev, grids, g)
    red = timed("grad_reduce", kernels.grad_reduce_table, torch, dev, grids, g)
    shape = _hstu_shape()
    att = timed("hstu_attention", hstu.hstu_table, torch, dev, grids, g, shape)
    tiny_ops = host.pop("tiny_step_ops")
    return {
        "gemm": {k: rates(v, f"gemm {k}") for k, v in gemm.items()},
        **curves,
        "grad_reduce": {**rates(red, "grad_reduce"), "dim": red["dim"]},
        "hstu_attention": rates(att, "hstu_attention"),
        "hstu_shape": None if att is None else shape,
        "host": host,
        "serial": not cuda,
        "source": "calibration",
        "timing": TIMING,
        "benchmark": {"seconds": took, "tiny_step_ops": tiny_ops, "grid": "cuda" if cuda else "cpu"},
    }
