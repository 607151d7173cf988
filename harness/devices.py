"""Device spec table and on-the-spot calibration of its two roofs.

The analytic time model (roo_ref.cost) prices each component as
    max(FLOPs / peak_flops(dtype), bytes / peak_bandwidth) + kernels * launch_overhead.
Datasheet peaks are leads; `calibrate()` measures a large matmul and a device-to-device copy on
the machine at hand and returns a DeviceSpec with those numbers (what the report quotes).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from workloads.errors import UserError


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    bf16_flops: float  # dense matrix FLOP/s
    fp32_flops: float  # FLOP/s for fp32 matmuls as torch runs them by default (no TF32)
    bandwidth: float  # device-memory bytes/s (read + write counted)
    launch_overhead_s: float  # per kernel, as seen from a PyTorch eager step
    power_w: float  # typical board power under training load (for energy when NVML is absent)
    source: str = "datasheet"

    def peak_flops(self, dtype: str) -> float:
        return self.bf16_flops if dtype in ("bf16", "fp16") else self.fp32_flops

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Datasheet figures (dense, no sparsity); bandwidth as the copy roof seen here where known
# (DESIGN.md: H100 copy ~2.98 TB/s, bf16 8192^3 matmul ~777 TFLOP/s measured).
DEVICES: dict[str, DeviceSpec] = {
    "h100": DeviceSpec("NVIDIA H100 SXM", 989e12, 67e12, 3.35e12, 6e-6, 700.0),
    "h200": DeviceSpec("NVIDIA H200 SXM", 989e12, 67e12, 4.8e12, 6e-6, 700.0),
    "a100": DeviceSpec("NVIDIA A100 SXM 80GB", 312e12, 19.5e12, 2.04e12, 6e-6, 400.0),
    "cpu": DeviceSpec("CPU (2 cores, nominal)", 0.2e12, 0.1e12, 20e9, 5e-6, 65.0),
}


def get_device(name: str) -> DeviceSpec:
    try:
        return DEVICES[name.lower()]
    except KeyError:
        raise UserError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}") from None


def guess_device_key(device_name: str) -> str:
    """Map a torch device name ('NVIDIA H100 80GB HBM3') to a table key (default: cpu)."""
    n = device_name.lower()
    for key in ("h200", "h100", "a100"):
        if key in n:
            return key
    return "cpu"


def calibrate(device: str = "cpu", matmul_n: int | None = None, copy_bytes: int | None = None,
              repeats: int = 10) -> dict:
    """Measure the bf16 (GPU) / fp32 (CPU) matmul rate and the copy bandwidth on `device`.

    Returns a dict with the measured numbers and a DeviceSpec (`spec`) whose roofs are replaced by
    them. Inputs are random (never zeros: zeros run faster on some parts)."""
    import torch

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise UserError("calibrate: cuda requested but no CUDA device is available; use --device cpu")
    n = matmul_n or (8192 if cuda else 1024)
    nbytes = copy_bytes or ((2 << 30) if cuda else (256 << 20))
    dtype = torch.bfloat16 if cuda else torch.float32
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
    src = torch.randn(nbytes // 4, device=dev, dtype=torch.float32, generator=g)
    dst = torch.empty_like(src)

    def timed(fn) -> float:
        for _ in range(3):
            fn()
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times = []
            for _ in range(repeats):
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
        else:
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        times.sort()
        return times[len(times) // 2]

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
    return {
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
