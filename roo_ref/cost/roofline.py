"""Time and energy of the cost table's rows on a roo_ref.hardware.DeviceSpec.

Per component: max(FLOPs / peak(dtype), bytes / bandwidth) + kernels x launch overhead. The compute
roof uses the matmul FLOPs (padded or mask-aware attention); elementwise work is priced by its bytes
(it is bandwidth-bound). The step is the sum over components (no overlap).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from roo_ref.cost.components import Component
from roo_ref.cost.stats import Num
from roo_ref.hardware import DeviceSpec, get_device
from roo_ref.model_presets import ModelConfig
from workloads.errors import UserError

ATTENTION_COUNTS = ("padded", "mask_aware")


def resolve_device(device: Any) -> DeviceSpec:
    """A DeviceSpec as it is, or the datasheet entry of a table key (`h100`, `cpu`, ...)."""
    if isinstance(device, DeviceSpec):
        return device
    return get_device(str(device))


def component_time_s(c: Component, device: Any, dtype: str, attention: str = "padded") -> Num:
    """max(FLOPs / peak(dtype), bytes / bandwidth) + kernels * launch overhead.

    The compute roof uses the matmul FLOPs (padded or mask-aware attention); elementwise work is
    priced by its bytes (it is bandwidth-bound)."""
    if attention not in ATTENTION_COUNTS:
        raise UserError(f"attention={attention!r}; allowed: {', '.join(ATTENTION_COUNTS)}")
    dev = resolve_device(device)
    flops = c.flops if attention == "padded" else c.flops_mask_aware
    return np.maximum(flops / dev.peak_flops(dtype), c.bytes / dev.bandwidth) + c.kernels * dev.launch_overhead_s


def attention_mode(cfg: ModelConfig) -> str:
    """What the model actually runs: the torch reference does the padded work, a fused kernel
    skips masked blocks (priced mask-aware)."""
    return "padded" if cfg.attention_backend == "torch" else "mask_aware"


def energy_kwh(gpu_hours: Num, power_w: Num) -> Num:
    """Energy of `gpu_hours` at a board power of `power_w` watts."""
    return gpu_hours * power_w / 1e3
