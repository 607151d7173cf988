"""The `roo-bench model --json` object: every row of both layouts with its roofline time, the
totals per layout and the predicted and ideal speedups."""

from __future__ import annotations

import math
from typing import Any

from roo_ref.cost.roofline import component_time_s
from roo_ref.cost.step import model_cost
from roo_ref.hardware import DeviceSpec
from roo_ref.model_presets import ModelConfig
from workloads.errors import UserError
from workloads.spec import WorkloadSpec


def _num(v: Any) -> Any:
    """NaN and infinities as None (JSON has neither)."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def model_report(
    spec: WorkloadSpec,
    cfg: ModelConfig,
    dev: DeviceSpec,
    dtype: str = "bf16",
    requests: float | None = None,
    batch: Any = None,
    world_size: int = 1,
    bus_bw: float | None = None,
    device_key: str = "h100",
) -> dict:
    """The `roo-bench model --json` object."""
    if world_size < 1:
        raise UserError(f"--world-size {world_size} must be >= 1")
    if requests is not None and not requests > 0:
        raise UserError(f"--requests {requests} must be > 0")
    mc = model_cost(
        spec, cfg, batch=batch, requests=requests, dtype=dtype, device=dev, world_size=world_size, bus_bw=bus_bw
    )
    comps = []
    for lc in mc["layouts"].values():
        for c in lc.components:
            d = c.to_dict()
            d["time_ms"] = float(component_time_s(c, dev, dtype, mc["attention"])) * 1e3
            comps.append({k: _num(v) for k, v in d.items()})
    return {
        "preset": spec.name,
        "device": device_key,
        "device_name": dev.name,
        "device_source": dev.source,
        "dtype": dtype,
        "exact": mc["exact"],
        "attention": mc["attention"],
        "world_size": world_size,
        "components": comps,
        "totals": {lay: lc.totals() for lay, lc in mc["layouts"].items()},
        "predicted_speedup": float(mc["predicted_speedup"]),
        "f_u": float(mc["f_u"]),
        "mean_impressions_per_request": float(mc["mean_impressions_per_request"]),
        "ideal_speedup": float(mc["ideal_speedup"]),
        "model": cfg.to_dict(),
    }
