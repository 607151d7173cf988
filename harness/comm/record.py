"""The result record of one comm run (kind "comm", one per sharding), built on rank 0 from what the
ranks measured and from the analytic model (roo_ref.cost.comm) of the same global batch."""

from __future__ import annotations

from dataclasses import dataclass

from harness.comm.config import CommConfig
from harness.timers import Stats
from roo_ref.cost import comm as comm_cost
from workloads.layout import Layout

COUNTING = (
    "bytes handed to all_to_all_single (input tensors, self chunk included), summed over ranks; "
    "cross = the part addressed to other ranks"
)


@dataclass
class ShardingRun:
    """What one sharding's steps measured, reduced over the ranks.

    `layouts[layout]`: counted, counted_cross (bytes per component), calls_per_step,
    bytes_same_every_step, step_ms, comm_ms (per-step samples, slowest rank), impressions_per_step,
    requests_per_step. `verify`: the ROO-vs-impression checks of the untimed first step."""

    sharding: str
    tables: tuple
    owners: tuple | None
    layouts: dict
    verify: dict


def _stats(samples: list[float]) -> dict:
    return Stats.from_samples(samples).to_dict()


def _layout_metrics(m: dict, exact, expected, calib: dict, world: int) -> dict:
    counted_total = sum(m["counted"].values())
    cross_total = sum(m["counted_cross"].values())
    step = _stats(m["step_ms"])
    comm = _stats(m["comm_ms"])
    comm_s = comm["median"] / 1e3
    bw = calib.get("bus_bw_gbps")
    predicted_ms = None
    if bw:
        predicted_ms = 1e3 * comm_cost.step_a2a_time_s(exact, world, bw * 1e9, calib["latency_us"] * 1e-6)
    return {
        "counted_bytes_per_step": counted_total,
        "analytic_bytes_per_step": exact.total,
        "expected_bytes_per_step": expected.total,
        "cross_bytes_per_step": cross_total,
        "analytic_cross_bytes_per_step": exact.cross_total,
        "counted": m["counted"],
        "counted_cross": m["counted_cross"],
        "analytic": exact.to_dict(),
        "expected": expected.to_dict(),
        "bytes_match": m["counted"] == exact.handed() and m["counted_cross"] == exact.cross(),
        "bytes_same_every_step": m["bytes_same_every_step"],
        "collective_calls_per_step": m["calls_per_step"],
        "step_ms": step,
        "comm_ms": comm,
        "step_ms_median": step["median"],
        "comm_ms_median": comm["median"],
        # bytes that leave a rank per rank and second of collective time (= nccl-tests busbw for an
        # even all-to-all); algbw counts every byte handed
        "bus_bw_gbps": cross_total / world / comm_s / 1e9 if comm_s > 0 else None,
        "alg_bw_gbps": counted_total / world / comm_s / 1e9 if comm_s > 0 else None,
        "predicted_comm_ms": predicted_ms,
        "comm_error": (comm["median"] / predicted_ms - 1.0) if predicted_ms else None,
        "impressions_per_step": m["impressions_per_step"],
        "requests_per_step": m["requests_per_step"],
        "impressions_per_s": m["impressions_per_step"] / (step["median"] / 1e3),
        "requests_per_s": m["requests_per_step"] / (step["median"] / 1e3),
    }


def _metrics(out_layouts: dict, verify: dict, calib: dict) -> dict:
    imp, roo = out_layouts[Layout.IMPRESSION], out_layouts[Layout.ROO]

    def save(key):
        return 1.0 - roo[key] / imp[key] if imp[key] else None

    return {
        "layouts": out_layouts,
        "saving": save("counted_bytes_per_step"),
        "saving_cross": save("cross_bytes_per_step"),
        "saving_expected": save("expected_bytes_per_step"),
        "saving_step_ms": save("step_ms_median"),
        "saving_comm_ms": save("comm_ms_median"),
        "bytes_match": imp["bytes_match"] and roo["bytes_match"],
        "verify": verify,
        "calibration": calib,
        "counting": COUNTING,
    }


def _config(cfg: CommConfig, spec, run: ShardingRun, world: int) -> dict:
    return {
        "preset": cfg.preset,
        "spec_file": cfg.spec_file,
        "overrides": list(cfg.overrides),
        "spec": spec.to_dict(),
        "model": {
            "embedding_dim": cfg.embedding_dim,
            "row_cap": cfg.row_cap,
            "sharding": run.sharding,
            "assign": cfg.assign,
            "comm_dtype": cfg.comm_dtype,
            "max_history": cfg.max_history,
            "tables": len(run.tables),
            "table_rows": [t.rows for t in run.tables],
            "owners": list(run.owners) if run.owners else None,
        },
        "device": cfg.device,
        "dtype": "fp32",
        "backend": cfg.resolved_backend,
        "warmup": cfg.warmup,
        "steps": cfg.steps,
        "world_size": world,
        "requests_per_rank": cfg.requests(),
        "seed": cfg.seed,
    }


def build_record(cfg: CommConfig, run: ShardingRun, spec, batch, world: int, device, calib: dict) -> dict:
    """The validated result record of `run` (measured bytes next to the exact and expected ones)."""
    from harness.provenance import collect
    from harness.results import make_record

    common = dict(
        world_size=world,
        sharding=run.sharding,
        embedding_dim=cfg.embedding_dim,
        emb_bytes=cfg.torch_comm_dtype().itemsize,
        row_cap=cfg.row_cap,
        assign=cfg.assign,
        history_cap=cfg.max_history,
    )
    out_layouts = {}
    for lay, m in run.layouts.items():
        exact = comm_cost.exact_a2a_bytes(batch, lay, tables=run.tables, **common)
        expected = comm_cost.expected_a2a_bytes(spec, lay, requests_per_rank=cfg.requests(), **common)
        out_layouts[lay] = _layout_metrics(m, exact, expected, calib, world)
    prov = collect(seed=cfg.seed, device=str(device))
    prov["world_size"] = world
    prov["backend"] = cfg.resolved_backend
    return make_record(
        "comm", _config(cfg, spec, run, world), _metrics(out_layouts, run.verify, calib), provenance=prov
    )
