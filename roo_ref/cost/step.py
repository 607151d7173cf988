"""One training step, both layouts: every row of the cost table (compute, optimizers, comm,
storage), the predicted step time, the user-side share f_u and the ideal and predicted speedups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from roo_ref.cost import comm
from roo_ref.cost.components import EMBEDDING_ROWS, Component, check_layout, dtype_bytes, new_component, to_py
from roo_ref.cost.dlrm import dlrm_components
from roo_ref.cost.hstu import hstu_components
from roo_ref.cost.optimizers import dense_optimizer, embedding_optimizer
from roo_ref.cost.roofline import attention_mode, component_time_s, resolve_device
from roo_ref.cost.stats import Num, Shape, StepStats, batch_stats, expected_stats
from roo_ref.model_presets import ModelConfig
from workloads.errors import SpecError
from workloads.layout import LAYOUTS
from workloads.spec import WorkloadSpec


def check_priceable(spec: WorkloadSpec, cfg: ModelConfig) -> None:
    """Spec/model combinations the model (and so this cost model) cannot run: one SpecError."""
    from roo_ref.models import check_compatible

    if not isinstance(cfg, ModelConfig):
        raise SpecError(f"model config must be a ModelConfig, got {type(cfg).__name__}")
    check_compatible(spec, cfg)


def layout_components(
    spec_or_shape: WorkloadSpec | Shape, cfg: ModelConfig, stats: StepStats, layout: str, dtype: str = "bf16"
) -> list[Component]:
    """The component rows of one layout (no comm/storage rows; see `model_cost`)."""
    check_layout(layout)
    sh = spec_or_shape if isinstance(spec_or_shape, Shape) else Shape.of(spec_or_shape, cfg)
    e = dtype_bytes(dtype)
    v = stats.of_layout(layout)
    if cfg.arch == "hstu":
        comps = hstu_components(sh, cfg, v, layout, e)
    else:
        comps = dlrm_components(sh, cfg, v, layout, e)
    comps.append(dense_optimizer(comps, layout))
    return comps


@dataclass
class LayoutCost:
    layout: str
    components: list[Component]
    step_s: Num
    requests: Num
    impressions: Num
    storage_bytes_per_impression: float | None = None
    extra: dict = field(default_factory=dict)

    def total(self, attr: str) -> Num:
        return sum(getattr(c, attr) for c in self.components)

    def totals(self) -> dict:
        comps = self.components
        t = {
            "fwd_flops": sum(c.fwd_flops for c in comps),
            "bwd_flops": sum(c.bwd_flops for c in comps),
            "flops": sum(c.flops for c in comps),
            "flops_mask_aware": sum(c.flops_mask_aware for c in comps),
            "other_flops": sum(c.other_flops for c in comps),
            "bytes": sum(c.bytes for c in comps),
            "kernels": sum(c.kernels for c in comps),
            "param_bytes": sum(c.param_bytes for c in comps),
            "alltoall_bytes": sum(c.comm_bytes for c in comps if c.name.startswith("all-to-all")),
            "allreduce_bytes": sum(c.comm_bytes for c in comps if c.name.startswith("all-reduce")),
            "storage_bytes": sum(c.storage_bytes for c in comps),
            "storage_bytes_per_impression": self.storage_bytes_per_impression,
            "predicted_step_ms": self.step_s * 1e3,
            "requests_per_step": self.requests,
            "impressions_per_step": self.impressions,
        }
        t.update(self.extra)
        return {k: to_py(v) for k, v in t.items()}


def layout_cost(
    spec: WorkloadSpec,
    cfg: ModelConfig,
    stats: StepStats,
    layout: str,
    dtype: str = "bf16",
    device: Any = "h100",
    world_size: int = 1,
    bus_bw: float | None = None,
    a2a: comm.A2ABytes | None = None,
    attention: str | None = None,
) -> LayoutCost:
    """All rows of one layout (compute, optimizers, comm, storage) and the predicted step time.

    `a2a`: a comm.A2ABytes for this layout (else the expected one for `world_size`);
    comm time is added only when `bus_bw` (bytes/s, nccl-tests busbw) is given."""
    from workloads.storage import uncompressed_bytes_per_impression

    e = dtype_bytes(dtype)
    attention = attention or attention_mode(cfg)
    comps = layout_components(spec, cfg, stats, layout, dtype)
    comps.insert(len(comps) - 1, embedding_optimizer(cfg, stats, layout, e))
    step = sum(component_time_s(c, device, dtype, attention) for c in comps)
    if a2a is None:
        a2a = _expected_a2a(spec, cfg, stats, layout, world_size, e)
    cross = a2a.cross_total
    dense_param_bytes = sum(c.param_bytes for c in comps if c.name not in EMBEDDING_ROWS)
    c_a2a = new_component(
        "all-to-all (sparse features)",
        layout,
        "comm",
        comm_bytes=a2a.total,
        note=f"handed bytes, all {world_size} ranks; {cross:.6g} cross ranks",
    )
    c_ar = new_component(
        "all-reduce (dense grads)",
        layout,
        "comm",
        comm_bytes=world_size * comm.allreduce_bytes(dense_param_bytes, world_size),
        note="ring all-reduce, all ranks",
    )
    if bus_bw is not None and world_size > 1:
        step = (
            step
            + comm.step_a2a_time_s(a2a, world_size, bus_bw)
            + comm.allreduce_time_s(dense_param_bytes, world_size, bus_bw)
        )
    per_imp = uncompressed_bytes_per_impression(spec, "request" if layout == "roo" else "impression")
    c_st = new_component(
        "storage (uncompressed)",
        layout,
        "storage",
        storage_bytes=per_imp * stats.impressions,
        note="Arrow/Parquet uncompressed bytes of the step's samples (workloads.storage)",
    )
    comps += [c_a2a, c_ar, c_st]
    return LayoutCost(
        layout, comps, step, stats.requests, stats.impressions, per_imp, extra={"alltoall_cross_bytes": cross}
    )


def _expected_a2a(
    spec: WorkloadSpec, cfg: ModelConfig, stats: StepStats, layout: str, world_size: int, e: int
) -> comm.A2ABytes:
    return comm.expected_a2a_bytes(
        spec,
        layout,
        world_size,
        requests_per_rank=float(stats.requests) / world_size,
        embedding_dim=cfg.embedding_dim,
        emb_bytes=e,
        row_cap=cfg.max_table_rows,
    )


def f_user(imp: LayoutCost, device: Any, dtype: str, attention: str = "padded") -> Num:
    """User-side share of the impression layout's step time: the work ROO does once per request."""
    num = sum(component_time_s(c, device, dtype, attention) * c.user_fraction for c in imp.components)
    return num / imp.step_s


def ideal_speedup(f_u: Num, k: Num) -> Num:
    """1 / (f_u / k + 1 - f_u)."""
    return 1.0 / (f_u / k + 1.0 - f_u)


def model_cost(
    spec: WorkloadSpec,
    cfg: ModelConfig,
    batch: Any = None,
    requests: float | None = None,
    dtype: str = "bf16",
    device: Any = "h100",
    world_size: int = 1,
    bus_bw: float | None = None,
) -> dict:
    """Both layouts: exact from `batch` (a RequestBatch) or expected from the spec (`requests`
    per step, default spec.requests_per_batch). Returns {"layouts": {layout: LayoutCost}, "f_u",
    "ideal_speedup", "predicted_speedup", "stats", "exact"}."""
    check_priceable(spec, cfg)
    dev = resolve_device(device)
    e = dtype_bytes(dtype)
    stats = batch_stats(batch, cfg) if batch is not None else expected_stats(spec, cfg, requests)
    att = attention_mode(cfg)
    out: dict[str, LayoutCost] = {}
    for layout in LAYOUTS:
        if batch is not None:
            a2a = comm.exact_a2a_bytes(
                batch,
                layout,
                world_size,
                embedding_dim=cfg.embedding_dim,
                emb_bytes=e,
                row_cap=cfg.max_table_rows,
                spec=spec,
            )
        else:
            a2a = comm.expected_a2a_bytes(
                spec,
                layout,
                world_size,
                requests_per_rank=stats.requests / world_size,
                embedding_dim=cfg.embedding_dim,
                emb_bytes=e,
                row_cap=cfg.max_table_rows,
            )
        out[layout] = layout_cost(spec, cfg, stats, layout, dtype, dev, world_size, bus_bw, a2a, att)
    fu = f_user(out["impression"], dev, dtype, att)
    k = stats.impressions / stats.requests
    return {
        "layouts": out,
        "f_u": fu,
        "mean_impressions_per_request": k,
        "ideal_speedup": ideal_speedup(fu, k),
        "predicted_speedup": out["impression"].step_s / out["roo"].step_s,
        "stats": stats,
        "exact": batch is not None,
        "attention": att,
        "device": dev,
        "dtype": dtype,
    }


def point_cost(
    spec: WorkloadSpec,
    model_config: ModelConfig,
    request_batch: Any,
    layout: str,
    dtype: str = "bf16",
    device_name: str | None = None,
) -> dict:
    """What harness.run_point records for one measured point (exact, from its batch).

    flops_per_step: what FlopCounterMode counts (padded attention for the torch backend, the
    mask-aware count for a fused kernel it cannot see); both counts are returned as well."""
    from roo_ref.hardware import guess_device_key

    check_layout(layout)
    key = guess_device_key(device_name or "cpu")
    mc = model_cost(spec, model_config, batch=request_batch, dtype=dtype, device=key)
    lc = mc["layouts"][layout]
    padded, masked = lc.total("flops"), lc.total("flops_mask_aware")
    torch_attention = model_config.attention_backend == "torch"
    return {
        "flops_per_step": padded if torch_attention else masked,
        "flops_masked_counted": torch_attention and model_config.arch == "hstu",
        "flops_padded": padded,
        "flops_mask_aware": masked,
        "bytes_per_step": lc.total("bytes"),
        "predicted_step_ms": lc.step_s * 1e3,
        "predicted_speedup": mc["predicted_speedup"],
        "ideal_speedup": mc["ideal_speedup"],
        "f_u": mc["f_u"],
        "device_key": key,
    }
