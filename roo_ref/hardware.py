"""The datasheet table: each device's two roofs (matmul FLOP/s per dtype, memory bandwidth), its
per-kernel launch overhead and typical board power, keyed by a short name (`h100`, `cpu`, ...).

The cost layer prices components on a DeviceSpec; harness.devices.calibrate measures the roofs of
the machine at hand and returns a DeviceSpec with those numbers in place of the datasheet's.
"""

from __future__ import annotations

import dataclasses
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


# Datasheet figures (dense, no sparsity). Measured roofs come from `roo-bench calibrate`.
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
