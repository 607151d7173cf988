"""The cost model against independent counts: analytic FLOPs vs roo_ref.flops (FlopCounterMode's
per-op formulas) per component and in total, analytic uncompressed bytes vs the Arrow bytes
workloads.storage measures.

By default the models run at reduced sizes so a CPU forward+backward of every preset takes well
under a second; the formulas do not depend on size, so exactness here is exactness at full size
(`full=True` checks it).
"""

from __future__ import annotations

from typing import Any, cast

from roo_ref.model_presets import ModelConfig
from workloads.errors import UserError
from workloads.layout import LAYOUTS

_REDUCE_COMMON = ("max_table_rows=1000", "embedding_dim=16")
REDUCED_MODEL = {
    "tiny": (),
    "early-ranking": ("dense_arch=[32]", "user_arch=[64,32]", "item_arch=[32]", "top_arch=[32,16]"),
    "late-ranking": (
        "dense_arch=[32,16]",
        "user_arch=[64,32]",
        "item_arch=[32]",
        "dcn_rank=16",
        "top_arch=[64,32,16]",
    ),
    "retrieval": ("dense_arch=[32]", "user_arch=[64,32]", "item_arch=[32]", "tower_dim=16"),
    "hstu-ranking": (
        "qk_dim=32",
        "v_dim=32",
        "max_history_len=16",
        "pos_buckets=32",
        "hstu_layers=2",
        "head_arch=[32,16]",
        "normalizer=32",
    ),
}
REDUCED_SPEC = {"hstu-ranking": ("impressions.value=6",)}
MAX_FLOP_REL_ERROR = 1e-3
MAX_STORAGE_REL_ERROR = 0.05


def validate_preset(name: str, requests: int = 4, full: bool = False, seed: int = 0) -> dict:
    """Count FLOPs of forward+backward with roo_ref.flops on CPU and compare with the analytic ones."""
    from roo_ref.cost.stats import batch_stats
    from roo_ref.cost.step import layout_components
    from roo_ref.flops import count_flops
    from roo_ref.models import build_model
    from workloads.generator import generate
    from workloads.presets import get_preset

    spec = get_preset(name)
    model_over = () if full else (*_REDUCE_COMMON, *REDUCED_MODEL.get(name, ()))
    if not full and name in REDUCED_SPEC:
        spec = spec.with_overrides(list(REDUCED_SPEC[name]))
    model = build_model(spec, preset=name, overrides=model_over, seed=seed)
    batch = generate(spec, requests, seed=seed)
    cfg = cast(ModelConfig, model.config)
    st = batch_stats(batch, cfg)
    records, comps = [], []
    for layout in LAYOUTS:
        b = batch if layout == "roo" else batch.to_impressions()
        model.zero_grad(set_to_none=True)
        counted = count_flops(model, b, layout)
        rows = layout_components(spec, cfg, st, layout, "fp32")
        analytic = sum(c.flops for c in rows)
        total = counted["total"]
        records.append(
            {
                "preset": name,
                "layout": layout,
                "analytic_flops": analytic,
                "counted_flops": total,
                "rel_error": abs(analytic - total) / total if total else float(analytic != 0),
                "analytic_flops_mask_aware": sum(c.flops_mask_aware for c in rows),
                "requests": batch.num_requests,
                "impressions": batch.num_impressions_total,
            }
        )
        for c in rows:
            cnt = sum(counted["by_module"].get(m, 0) for m in c.modules)
            comps.append(
                {
                    "preset": name,
                    "layout": layout,
                    "name": c.name,
                    "analytic_flops": c.flops,
                    "counted_flops": cnt,
                    "modules": list(c.modules),
                }
            )
    return {"records": records, "components": comps, "model_overrides": list(model_over)}


def validate_storage(name: str, requests: int = 64, seed: int = 0) -> list[dict]:
    """Analytic uncompressed bytes (exact from the batch, and expected from the spec) vs the
    in-memory Arrow bytes workloads.storage.measure writes to Parquet (codec none)."""
    from roo_ref.cost.storage import batch_storage_bytes
    from workloads.generator import generate
    from workloads.presets import get_preset
    from workloads.storage import measure, uncompressed_bytes_per_impression

    spec = get_preset(name)
    batch = generate(spec, requests, seed=seed)
    m = measure(batch, spec, codecs=("none",), orders=("grouped",))
    exact = batch_storage_bytes(batch, spec)
    n = batch.num_impressions_total
    parquet = {
        ("roo" if f["layout"] == "request" else "impression"): f["parquet_uncompressed_bytes"] for f in m["formats"]
    }
    out = []
    for layout, key in (("impression", "impression"), ("roo", "request")):
        meas = m["uncompressed_bytes"][key]
        out.append(
            {
                "preset": name,
                "layout": layout,
                "analytic_bytes": exact[layout],
                "measured_bytes": meas,
                "rel_error": abs(exact[layout] - meas) / meas,
                "expected_bytes": uncompressed_bytes_per_impression(spec, key) * n,
                "parquet_encoded_bytes": parquet.get(layout),
            }
        )
    return out


def validate_all(
    preset: str = "all",
    requests: int = 4,
    storage_requests: int = 64,
    full: bool = False,
    storage: bool = True,
    seed: int = 0,
) -> tuple[dict[str, Any], bool]:
    """Every preset named (`all`: every preset): the `roo-bench validate --json` object and whether
    it passes (FLOP rel error <= 1e-3, storage rel error <= 5%)."""
    from workloads.presets import PRESETS

    names = list(PRESETS) if preset == "all" else [preset]
    for n in names:
        if n not in PRESETS:
            raise UserError(f"unknown preset {n!r}; choose one of: {', '.join(PRESETS)} or all")
    if requests < 1 or storage_requests < 1:
        raise UserError("--requests and --storage-requests must be >= 1")
    recs, comps, rows = [], [], []
    for n in names:
        v = validate_preset(n, requests, full, seed)
        recs += v["records"]
        comps += v["components"]
        if storage:
            rows += validate_storage(n, storage_requests, seed)
    max_err = max(r["rel_error"] for r in recs)
    out = {
        "presets": recs,
        "max_rel_error": max_err,
        "components": comps,
        "storage": rows,
        "max_storage_rel_error": max((s["rel_error"] for s in rows), default=None),
        "reduced": not full,
    }
    ok = max_err <= MAX_FLOP_REL_ERROR and (not rows or out["max_storage_rel_error"] <= MAX_STORAGE_REL_ERROR)
    return out, ok
