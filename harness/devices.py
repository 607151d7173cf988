"""On-the-spot calibration of a device (the datasheet table is roo_ref.hardware).

Two parts, both in one calibration record:
- the two roofs: a large matmul and a device-to-device copy, as a DeviceSpec (`spec`), which the
  roofline (roo_ref.cost.roofline) and the report's roofline plot use;
- the kernel classes (`kernel_classes`, harness.calibration): per-class microbenchmarks and host
  terms, which the step-time model (roo_ref.cost.time_model) prices the cost table with.
"""

from __future__ import annotations

import dataclasses

from harness.timers import time_steps
from roo_ref.hardware import DEVICES, guess_device_key
from workloads.errors import UserError

__all__ = ["calibrate"]


def calibrate(
    device: str = "cpu",
    matmul_n: int | None = None,
    copy_bytes: int | None = None,
    repeats: int = 10,
    kernels: bool = False,
    host_models: tuple[str, ...] = (),
) -> dict:
    """Measure the bf16 (GPU) / fp32 (CPU) matmul rate and the copy bandwidth on `device`, and,
    with `kernels`, every kernel class (harness.calibration.calibrate_kernels; `host_models`: the
    model presets whose own steps also price the host).

    Returns a dict with the measured numbers and a DeviceSpec (`spec`) whose roofs are replaced by
    them. Inputs are random (never zeros: zeros run faster on some parts)."""
    import torch

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise UserError("calibrate: cuda requested but no CUDA device is available; use --device cpu")
    n = matmul_n or (8192 if cuda else 1024)
    nbytes = copy_bytes or ((2 << 30) if cuda else (64 << 20))  # far past the caches either way
    dtype = torch.bfloat16 if cuda else torch.float32
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
    src = torch.randn(nbytes // 4, device=dev, dtype=torch.float32, generator=g)
    dst = torch.empty_like(src)

    def timed(fn) -> float:
        """Median seconds of `repeats` runs after three untimed ones (two warm-up, one dropped)."""
        return time_steps(fn, warmup=2, steps=repeats, device=dev).stats.median / 1e3

    t_mm = timed(lambda: torch.matmul(a, b))
    t_cp = timed(lambda: dst.copy_(src))
    flops = 2.0 * n**3 / t_mm
    bw = 2.0 * src.numel() * 4 / t_cp  # bytes read + bytes written
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    base = DEVICES[guess_device_key(name)] if cuda else DEVICES["cpu"]
    spec = dataclasses.replace(
        base,
        name=name,
        bf16_flops=flops if cuda else base.bf16_flops,
        fp32_flops=base.fp32_flops if cuda else flops,
        bandwidth=bw,
        source="calibrated",
    )
    out = {
        "device_name": name,
        "matmul_n": n,
        "matmul_dtype": str(dtype).replace("torch.", ""),
        "matmul_s": t_mm,
        "matmul_flops": flops,
        "copy_bytes": int(src.numel() * 4),
        "copy_s": t_cp,
        "copy_bandwidth": bw,
        "spec": spec.to_dict(),
    }
    if kernels:
        from harness.calibration import calibrate_kernels

        out["kernel_classes"] = calibrate_kernels(device, host_models=tuple(host_models))
    return out
