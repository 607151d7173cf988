"""The optimizer rows: Adam on the dense parameters, row-wise Adagrad on the embedding rows touched."""

from __future__ import annotations

from roo_ref.cost.components import (
    ADAGRAD_FLOPS,
    ADAM_FLOPS,
    EMBEDDING_ROWS,
    ID_BYTES,
    PARAM_BYTES,
    Component,
    new_component,
)
from roo_ref.cost.stats import StepStats
from roo_ref.model_presets import ModelConfig


def dense_optimizer(comps: list[Component], layout: str) -> Component:
    """Adam on every dense parameter (28 B/param: read p, g, m, v; write p, m, v)."""
    dense_bytes = sum(c.param_bytes for c in comps if c.name not in EMBEDDING_ROWS)
    n = dense_bytes / PARAM_BYTES
    c = new_component("dense optimizer (Adam)", layout, "optimizer")
    c.bytes = 7 * PARAM_BYTES * n
    c.other_flops = ADAM_FLOPS * n
    c.kernels = 12
    return c


def embedding_optimizer(cfg: ModelConfig, stats: StepStats, layout: str, e: int) -> Component:
    """Row-wise Adagrad on the rows the step touched (upper bound: one row per id looked up, no
    dedup): coalesce the sparse gradient, read/write the row and its one-float state."""
    roo = layout == "roo"
    v = stats.of_layout(layout)
    d = cfg.embedding_dim
    user = v.user_ids
    hist = v.hist_capped if cfg.arch == "hstu" else v.hist
    ids = user + 2 * hist + v.item_ids + v.impressions
    c = new_component("embedding optimizer (row-wise Adagrad)", layout, "optimizer")
    per_id = PARAM_BYTES * d * 5 + 2 * ID_BYTES + 8
    c.bytes = per_id * ids
    c.other_flops = ADAGRAD_FLOPS * d * ids
    c.kernels = 12
    c.user_fraction = (user + 2 * hist) / ids if not roo else 0.0
    return c
