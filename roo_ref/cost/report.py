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


def time_model_report(
    spec: WorkloadSpec,
    cfg: ModelConfig,
    tm: Any,
    dtype: str = "bf16",
    requests: float | None = None,
    batch: Any = None,
    peak_flops: float | None = None,
    error: dict | None = None,
) -> dict:
    """Both layouts' steps by the kernel-class time model (`tm`, a roo_ref.cost.time_model
    TimeModel): step, device and host ms, MFU (counted FLOPs / step / `peak_flops`), the
    predicted GPU-busy share, and, with `error` (validate-time's summary: geomean and max
    |error|), the step as an interval. Says which model produced the numbers (`source`)."""
    from roo_ref.cost.stats import batch_stats, expected_stats
    from roo_ref.cost.step import layout_components
    from roo_ref.cost.time_model import predict_layouts

    stats = batch_stats(batch, cfg) if batch is not None else expected_stats(spec, cfg, requests)
    pred = predict_layouts(tm, spec, cfg, stats, dtype, model=spec.name)
    layouts = {}
    for lay, lt in pred.items():
        flops = sum(c.flops for c in layout_components(spec, cfg, stats, lay, dtype))
        d = lt.to_dict()
        d["mfu"] = _num(float(flops) / lt.step_s / peak_flops) if peak_flops and lt.step_s > 0 else None
        if error and error.get("geomean_abs_error") is not None:
            g, mx = float(error["geomean_abs_error"]), float(error.get("max_abs_error") or error["geomean_abs_error"])
            d["step_ms_interval"] = [d["step_ms"] * (1 - g), d["step_ms"] * (1 + g)]
            d["step_ms_interval_max"] = [d["step_ms"] * max(1 - mx, 0.0), d["step_ms"] * (1 + mx)]
        layouts[lay] = d
    return {
        "source": tm.source,
        "validated_error": error,
        "layouts": layouts,
        "predicted_speedup": pred["impression"].step_s / pred["roo"].step_s,
        "requests_per_step": float(stats.requests),
    }
