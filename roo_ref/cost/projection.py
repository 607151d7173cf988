"""Cluster-scale projection: requests/day -> GPU-hours, storage, all-to-all and energy per day.

Vectorized: `Plan.of(spec, cfg, ...)` computes the expected step statistics once
(`expected_stats`, R = spec.requests_per_batch requests per GPU per step); `Plan.evaluate(...)`
takes numpy arrays (or scalars) of requests/day, GPUs, and optionally mean impressions per request
and mean history length, and evaluates the cost formulas once on whole arrays — 100,000 configs
in well under a second (benchmarks/cost.py).

Per layout and config (docs/cost-model.md "Projection"):
    steps/day          = requests_per_day / (R * gpus)            (R requests per GPU per step)
    gpu_hours_per_day  = requests_per_day / R * step_s / 3600     (step_s: roofline, + comm if bus_bw)
    storage_tb_per_day = requests_per_day * E[k] * bytes_per_impression / 1e12   (per codec assumption)
    alltoall_tb_per_day= steps/day * a2a_cross_bytes(gpus) / 1e12  (bytes that cross ranks)
    energy_kwh_per_day = gpu_hours_per_day * power_w / 1000
    savings[m]         = 1 - roo[m] / impression[m]
Scaling k or L away from the spec's means keeps each distribution's shape (its coefficient of
variation); the padded attention length scales with the mean sequence length. Those are planning
approximations; with the spec's own means the expectations are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from roo_ref.cost.components import EMBEDDING_ROWS, ID_BYTES, dtype_bytes
from roo_ref.cost.optimizers import embedding_optimizer
from roo_ref.cost.roofline import attention_mode, component_time_s, energy_kwh, resolve_device
from roo_ref.cost.stats import Num, Shape, StepStats, expected_stats
from roo_ref.cost.step import check_priceable, layout_components
from roo_ref.cost.storage import bytes_per_impression, storage_by_codec
from roo_ref.hardware import DeviceSpec
from roo_ref.model_presets import ModelConfig
from workloads.errors import UserError
from workloads.layout import LAYOUTS
from workloads.spec import WorkloadSpec

TB = 1e12
METRICS = ("gpu_hours_per_day", "storage_tb_per_day", "alltoall_tb_per_day", "energy_kwh_per_day")


def _positive(name: str, v: Num) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    if a.size == 0 or not np.all(np.isfinite(a)) or not np.all(a > 0):
        raise UserError(f"{name}={v!r} must be > 0")
    return a


@dataclass(frozen=True)
class Plan:
    spec: WorkloadSpec
    cfg: ModelConfig
    device: DeviceSpec
    dtype: str
    base: StepStats  # expected stats for R requests (floats)
    shape: Shape
    power_w: float
    bus_bw: float | None
    row: dict  # workloads.storage.row_bytes

    @classmethod
    def of(
        cls,
        spec: WorkloadSpec,
        cfg: ModelConfig,
        device: object = "h100",
        dtype: str = "bf16",
        power_w: float | None = None,
        bus_bw: float | None = None,
        requests_per_step: float | None = None,
    ) -> Plan:
        from workloads.storage import row_bytes

        check_priceable(spec, cfg)
        dev = resolve_device(device)
        dtype_bytes(dtype)
        if power_w is not None:
            _positive("power_w", power_w)
        if bus_bw is not None:
            _positive("bus_bw", bus_bw)
        base = expected_stats(spec, cfg, requests_per_step)
        power = float(power_w if power_w is not None else dev.power_w)
        return cls(spec, cfg, dev, dtype, base, Shape.of(spec, cfg), power, bus_bw, row_bytes(spec))

    # --- statistics for arrays of (k, L) ---------------------------------------------------------
    def stats(self, k: Num = None, hist: Num = None) -> StepStats:
        """Expected stats with mean impressions/request `k` and mean history length `hist` (arrays)."""
        b = self.base
        R = b.requests
        k0 = b.impressions / R
        k = np.asarray(k0 if k is None else k, dtype=float)
        L0 = b.hist / R
        sL = np.asarray(1.0 if hist is None or L0 == 0 else np.asarray(hist, dtype=float) / L0)
        sk = k / k0
        ht0 = b.hist_capped / R
        cap = self.cfg.max_history_len if self.cfg.arch == "hstu" and self.cfg.max_history_len else None
        ht = ht0 * sL if cap is None else np.minimum(ht0 * sL, cap)
        # second moment of h = 1 + L' at constant coefficient of variation of L'
        h0 = 1 + ht0
        Eh2_0 = 2 * b.pairs_user_roo / R - h0
        var_ratio = (Eh2_0 - h0**2) / ht0**2 if ht0 > 0 else 0.0
        h = 1 + ht
        Eh2 = h**2 + var_ratio * ht**2
        tri = (Eh2 + h) / 2
        n_roo = (h + k) / (h0 + k0)
        n_imp = (h + 1) / (h0 + 1)
        return replace(
            b,
            impressions=R * k,
            user_ids_k=b.user_ids_k * sk,
            hist=b.hist * sL,
            hist_k=b.hist_k * sk * sL,
            item_ids=b.item_ids * sk,
            hist_capped=R * ht,
            hist_capped_k=R * k * ht,
            pairs_user_roo=R * tri,
            pairs_user_imp=R * k * tri,
            pairs_roo=R * (tri + k * (h + 1)),
            pairs_imp=R * k * (tri + h + 1),
            pad_roo=b.pad_roo * n_roo**2,
            padlen_roo=b.padlen_roo * n_roo,
            pad_imp=b.pad_imp * sk * n_imp**2,
            padlen_imp=b.padlen_imp * sk * n_imp,
        )

    def a2a_bytes_per_rank(self, st: StepStats, layout: str) -> Num:
        """Bytes one rank hands to the four all-to-alls per step, table-wise (roo_ref.cost.comm's
        definition: lengths 8/bag, ids 8/id, pooled rows e*D/bag forward and again backward)."""
        sh, d, e = self.shape, self.cfg.embedding_dim, dtype_bytes(self.dtype)
        v = st.of_layout(layout)
        bags = sh.n_user_sparse * v.user_rows + sh.n_item_sparse * v.impressions
        ids = v.user_ids + v.item_ids
        return ID_BYTES * bags + ID_BYTES * ids + 2 * e * d * bags

    # --- evaluation -----------------------------------------------------------------------------------
    def evaluate(self, requests_per_day: Num, gpus: Num, k: Num = None, hist: Num = None, power_w: Num = None) -> dict:
        rpd = _positive("requests_per_day", requests_per_day)
        g = _positive("gpus", gpus)
        if np.any(g != np.floor(g)):
            raise UserError(f"gpus={gpus!r} must be whole numbers")
        if k is not None:
            k = _positive("impressions_per_request", k)
            if np.any(k < 1):
                raise UserError(f"impressions_per_request={k!r} must be >= 1")
        if hist is not None:
            hist = np.asarray(hist, dtype=float)
            if np.any(hist < 0):
                raise UserError(f"history_length={hist!r} must be >= 0")
        pw = self.power_w if power_w is None else _positive("power_w", power_w)
        st = self.stats(k, hist)
        out: dict = {layout: self._evaluate_layout(st, layout, rpd, g, pw) for layout in LAYOUTS}
        out["savings"] = {m: _saving(out["impression"][m], out["roo"][m]) for m in METRICS}
        return out

    def step_s(self, st: StepStats, layout: str, gpus: Num) -> Num:
        """Roofline step time of one layout, plus the comm time at `bus_bw` when it is given."""
        e = dtype_bytes(self.dtype)
        att = attention_mode(self.cfg)
        comps = layout_components(self.shape, self.cfg, st, layout, self.dtype)
        comps.append(embedding_optimizer(self.cfg, st, layout, e))
        step = sum(component_time_s(c, self.device, self.dtype, att) for c in comps)
        if self.bus_bw is not None:
            g = gpus
            a2a1 = self.a2a_bytes_per_rank(st, layout)
            dense = sum(c.param_bytes for c in comps if c.name not in EMBEDDING_ROWS)
            step = step + np.where(g > 1, a2a1 * (g - 1) / g / self.bus_bw + 2 * (g - 1) / g * dense / self.bus_bw, 0.0)
        return step

    def _evaluate_layout(self, st: StepStats, layout: str, rpd: np.ndarray, g: np.ndarray, pw: Num) -> dict:
        R = st.requests
        kk = st.impressions / R
        step = self.step_s(st, layout, g)
        a2a1 = self.a2a_bytes_per_rank(st, layout)
        cross = a2a1 * (g - 1)  # all ranks: W * per-rank * (W-1)/W
        per_imp = bytes_per_impression(self.row, layout, kk)
        gpu_h = rpd / R * step / 3600.0
        imp_day = rpd * kk
        return {
            "step_ms": step * 1e3,
            "gpu_hours_per_day": gpu_h,
            "wall_hours_per_day": gpu_h / g,
            "storage_tb_per_day": imp_day * per_imp / TB,
            "alltoall_tb_per_day": rpd / (R * g) * cross / TB,
            "alltoall_handed_tb_per_day": rpd / R * a2a1 / TB,
            "energy_kwh_per_day": energy_kwh(gpu_h, pw),
            "bytes_per_impression": per_imp,
            "impressions_per_day": imp_day,
        }


def _saving(imp: Num, roo: Num) -> np.ndarray:
    imp = np.asarray(imp, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(imp > 0, 1.0 - np.asarray(roo, dtype=float) / np.where(imp > 0, imp, 1.0), 0.0)


def project(
    spec: WorkloadSpec,
    cfg: ModelConfig,
    requests_per_day: float,
    gpus: int,
    device: object = "h100",
    dtype: str = "bf16",
    power_w: float | None = None,
    bus_bw: float | None = None,
    storage: dict | None = None,
) -> dict:
    """One projection as a JSON-ready dict (`roo-bench project --json`)."""
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise UserError(f"gpus={gpus!r} must be an integer >= 1")
    plan = Plan.of(spec, cfg, device, dtype, power_w, bus_bw)
    res = plan.evaluate(requests_per_day, gpus)
    layouts: dict[str, dict[str, Any]] = {lay: {k: float(v) for k, v in res[lay].items()} for lay in LAYOUTS}
    per_imp = {lay: layouts[lay]["bytes_per_impression"] for lay in LAYOUTS}
    codecs = storage_by_codec(per_imp, storage)
    imp_day = layouts["impression"]["impressions_per_day"]
    for lay in LAYOUTS:
        layouts[lay]["storage_tb_per_day_by_codec"] = {
            c: (v[lay] * imp_day / TB if v.get(lay) is not None else None) for c, v in codecs.items()
        }
    return {
        "preset": spec.name,
        "device": plan.device.name,
        "device_source": plan.device.source,
        "dtype": dtype,
        "gpus": gpus,
        "requests_per_day": float(requests_per_day),
        "requests_per_gpu_step": plan.base.requests,
        "impressions_per_request": plan.base.impressions / plan.base.requests,
        "power_w": plan.power_w,
        "bus_bw": bus_bw,
        "attention": attention_mode(cfg),
        "layouts": layouts,
        "savings": {m: float(v) for m, v in res["savings"].items()},
        "storage_codecs": {c: {"impression": v.get("impression"), "roo": v.get("roo")} for c, v in codecs.items()},
        "storage_source": "measured (--storage)" if storage is not None else "assumed compression ratios",
        "fits_in_day": {lay: layouts[lay]["wall_hours_per_day"] <= 24.0 for lay in LAYOUTS},
    }


__all__ = ["METRICS", "TB", "Plan", "project", "storage_by_codec"]
