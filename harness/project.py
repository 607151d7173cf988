"""Cluster-scale projection: requests/day -> GPU-hours, storage, all-to-all and energy per day.

Vectorized: `Plan.of(spec, cfg, ...)` computes the expected step statistics once (roo_ref.cost
`expected_stats`, R = spec.requests_per_batch requests per GPU per step); `Plan.evaluate(...)`
takes numpy arrays (or scalars) of requests/day, GPUs, and optionally mean impressions per request
and mean history length, and evaluates the cost formulas of roo_ref.cost once on whole arrays —
100,000 configs in well under a second (benchmarks/cost.py).

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

from dataclasses import dataclass

import numpy as np

from harness.devices import DeviceSpec, get_device
from roo_ref import cost
from roo_ref.cost import ID_BYTES, LAYOUTS
from roo_ref.model_presets import ModelConfig
from workloads.errors import UserError
from workloads.spec import WorkloadSpec
from workloads.storage import row_bytes

TB = 1e12
METRICS = ("gpu_hours_per_day", "storage_tb_per_day", "alltoall_tb_per_day", "energy_kwh_per_day")
# Compressed size as a fraction of each layout's uncompressed bytes, when no measured storage file
# is given. Request level zstd: an assumed 2.5x; impression level relative to the request-level
# file, from the Parquet facts measured here (DESIGN.md): grouped rows 1.1x, shuffled rows 7.7x
# (never above the uncompressed impression bytes).
ZSTD_REQUEST_RATIO = 2.5
ZSTD_IMPRESSION_VS_REQUEST = {"grouped": 1.1, "shuffled": 7.7}


def _positive(name: str, v) -> np.ndarray:
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
    base: dict  # expected stats for R requests (floats)
    shape: cost.Shape
    power_w: float
    bus_bw: float | None
    row: dict  # workloads.storage.row_bytes

    @classmethod
    def of(cls, spec: WorkloadSpec, cfg: ModelConfig, device="h100", dtype: str = "bf16",
           power_w: float | None = None, bus_bw: float | None = None, requests_per_step: float | None = None) -> Plan:
        cost.check_priceable(spec, cfg)
        dev = device if isinstance(device, DeviceSpec) else get_device(str(device))
        cost.dtype_bytes(dtype)
        if power_w is not None:
            _positive("power_w", power_w)
        if bus_bw is not None:
            _positive("bus_bw", bus_bw)
        base = cost.expected_stats(spec, cfg, requests_per_step)
        return cls(spec, cfg, dev, dtype, base, cost.Shape.of(spec, cfg),
                   float(power_w if power_w is not None else dev.power_w), bus_bw, row_bytes(spec))

    # --- statistics for arrays of (k, L) ---------------------------------------------------------
    def stats(self, k=None, hist=None) -> dict:
        """Expected stats with mean impressions/request `k` and mean history length `hist` (arrays)."""
        b = self.base
        R = b["R"]
        k0 = b["N"] / R
        k = np.asarray(k0 if k is None else k, dtype=float)
        L0 = b["hist"] / R
        sL = np.asarray(1.0 if hist is None or L0 == 0 else np.asarray(hist, dtype=float) / L0)
        sk = k / k0
        ht0 = b["ht"] / R
        cap = self.cfg.max_history_len if self.cfg.arch == "hstu" and self.cfg.max_history_len else None
        ht = ht0 * sL if cap is None else np.minimum(ht0 * sL, cap)
        st = dict(b)
        st["N"] = R * k
        st["user_ids_k"] = b["user_ids_k"] * sk
        st["hist"] = b["hist"] * sL
        st["hist_k"] = b["hist_k"] * sk * sL
        st["item_ids"] = b["item_ids"] * sk
        st["ht"] = R * ht
        st["ht_k"] = R * k * ht
        # second moment of h = 1 + L' at constant coefficient of variation of L'
        h0 = 1 + ht0
        Eh2_0 = 2 * b["pairs_user_roo"] / R - h0
        var_ratio = (Eh2_0 - h0**2) / ht0**2 if ht0 > 0 else 0.0
        h = 1 + ht
        Eh2 = h**2 + var_ratio * ht**2
        tri = (Eh2 + h) / 2
        st["pairs_user_roo"] = R * tri
        st["pairs_user_imp"] = R * k * tri
        st["pairs_roo"] = R * (tri + k * (h + 1))
        st["pairs_imp"] = R * k * (tri + h + 1)
        n_roo = (h + k) / (h0 + k0)
        n_imp = (h + 1) / (h0 + 1)
        st["pad_roo"] = b["pad_roo"] * n_roo**2
        st["padlen_roo"] = b["padlen_roo"] * n_roo
        st["pad_imp"] = b["pad_imp"] * sk * n_imp**2
        st["padlen_imp"] = b["padlen_imp"] * sk * n_imp
        return st

    def a2a_bytes_per_rank(self, st: dict, layout: str) -> object:
        """Bytes one rank hands to the four all-to-alls per step, table-wise (roo_ref.comm_cost's
        definition: lengths 8/bag, ids 8/id, pooled rows e*D/bag forward and again backward)."""
        sh, d, e = self.shape, self.cfg.embedding_dim, cost.dtype_bytes(self.dtype)
        roo = layout == "roo"
        bags = sh.n_user_sparse * (st["R"] if roo else st["N"]) + sh.n_item_sparse * st["N"]
        ids = (st["user_ids"] if roo else st["user_ids_k"]) + st["item_ids"]
        return ID_BYTES * bags + ID_BYTES * ids + 2 * e * d * bags

    # --- evaluation -----------------------------------------------------------------------------------
    def evaluate(self, requests_per_day, gpus, k=None, hist=None, power_w=None) -> dict:
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
        R = st["R"]
        kk = st["N"] / R
        att = cost.attention_mode(self.cfg)
        e = cost.dtype_bytes(self.dtype)
        row = self.row
        out: dict = {}
        for layout in LAYOUTS:
            comps = cost.layout_components(self.shape, self.cfg, st, layout, self.dtype)
            comps.append(cost.embedding_optimizer(self.cfg, st, layout, e))
            step = sum(cost.component_time_s(c, self.device, self.dtype, att) for c in comps)
            a2a1 = self.a2a_bytes_per_rank(st, layout)
            cross = a2a1 * (g - 1)  # all ranks: W * per-rank * (W-1)/W
            if self.bus_bw is not None:
                dense = sum(c.param_bytes for c in comps if c.name not in cost.EMBEDDING_ROWS)
                step = step + np.where(g > 1, a2a1 * (g - 1) / g / self.bus_bw
                                       + 2 * (g - 1) / g * dense / self.bus_bw, 0.0)
            if layout == "roo":
                per_imp = (row["user"] + row["request_overhead"]) / kk + row["item"]
            else:
                per_imp = row["user"] + row["item"]
            gpu_h = rpd / R * step / 3600.0
            imp_day = rpd * kk
            out[layout] = {
                "step_ms": step * 1e3,
                "gpu_hours_per_day": gpu_h,
                "wall_hours_per_day": gpu_h / g,
                "storage_tb_per_day": imp_day * per_imp / TB,
                "alltoall_tb_per_day": rpd / (R * g) * cross / TB,
                "alltoall_handed_tb_per_day": rpd / R * a2a1 / TB,
                "energy_kwh_per_day": gpu_h * pw / 1e3,
                "bytes_per_impression": per_imp,
                "impressions_per_day": imp_day,
            }
        out["savings"] = {m: _saving(out["impression"][m], out["roo"][m]) for m in METRICS}
        return out


def _saving(imp, roo):
    imp = np.asarray(imp, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(imp > 0, 1.0 - np.asarray(roo, dtype=float) / np.where(imp > 0, imp, 1.0), 0.0)


def storage_by_codec(per_imp: dict, measured: dict | None = None) -> dict:
    """Bytes per impression per codec assumption, both layouts: {codec: {layout: bytes}}.

    `measured`: a `roo-bench storage --json` object; its per-format bytes_per_impression are used
    as they are (with the layouts named request/impression there)."""
    if measured is not None:
        out: dict = {}
        for f in measured.get("formats", []):
            key = f"{f['codec']} ({f['order']} rows)"
            lay = "roo" if f["layout"] == "request" else "impression"
            out.setdefault(key, {})[lay] = float(f["bytes_per_impression"])
        for key, v in list(out.items()):
            if "roo" not in v:  # shuffled impression rows compare with the (grouped) request file
                codec = key.split(" ")[0]
                v["roo"] = out.get(f"{codec} (grouped rows)", {}).get("roo")
        return out
    roo_z = per_imp["roo"] / ZSTD_REQUEST_RATIO
    out = {"none": dict(per_imp)}
    for order, f in ZSTD_IMPRESSION_VS_REQUEST.items():
        out[f"zstd ({order} rows, assumed)"] = {"impression": min(per_imp["impression"], roo_z * f), "roo": roo_z}
    return out


def project(spec: WorkloadSpec, cfg: ModelConfig, requests_per_day: float, gpus: int, device="h100",
            dtype: str = "bf16", power_w: float | None = None, bus_bw: float | None = None,
            storage: dict | None = None) -> dict:
    """One projection as a JSON-ready dict (`roo-bench project --json`)."""
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise UserError(f"gpus={gpus!r} must be an integer >= 1")
    plan = Plan.of(spec, cfg, device, dtype, power_w, bus_bw)
    res = plan.evaluate(requests_per_day, gpus)
    layouts = {lay: {k: float(v) for k, v in res[lay].items()} for lay in LAYOUTS}
    per_imp = {lay: layouts[lay]["bytes_per_impression"] for lay in LAYOUTS}
    codecs = storage_by_codec(per_imp, storage)
    imp_day = layouts["impression"]["impressions_per_day"]
    for lay in LAYOUTS:
        layouts[lay]["storage_tb_per_day_by_codec"] = {
            c: (v[lay] * imp_day / TB if v.get(lay) is not None else None) for c, v in codecs.items()}
    return {
        "preset": spec.name,
        "device": plan.device.name,
        "device_source": plan.device.source,
        "dtype": dtype,
        "gpus": gpus,
        "requests_per_day": float(requests_per_day),
        "requests_per_gpu_step": plan.base["R"],
        "impressions_per_request": plan.base["N"] / plan.base["R"],
        "power_w": plan.power_w,
        "bus_bw": bus_bw,
        "attention": cost.attention_mode(cfg),
        "layouts": layouts,
        "savings": {m: float(v) for m, v in res["savings"].items()},
        "storage_codecs": {c: {"impression": v.get("impression"), "roo": v.get("roo")} for c, v in codecs.items()},
        "storage_source": "measured (--storage)" if storage is not None else "assumed compression ratios",
        "fits_in_day": {lay: layouts[lay]["wall_hours_per_day"] <= 24.0 for lay in LAYOUTS},
    }


__all__ = ["METRICS", "Plan", "project", "storage_by_codec"]
