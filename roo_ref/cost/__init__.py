"""Analytic cost model of one training step, per model component, both layouts.

What it prices (docs/cost-model.md has every formula and assumption):
- FLOPs, forward and backward, *exactly as torch's FlopCounterMode counts them*: the matmul-family
  ops (mm, addmm, bmm) of every Linear, interaction, in-batch logits matrix and the HSTU attention's
  padded explicit matmuls, following autograd (a Linear whose input does not require grad runs no
  grad-input matmul). Elementwise work (activations, layer norms, losses, optimizers) is outside the
  counter's accounting; it is estimated separately in `other_flops` and never mixed into `fwd_flops`.
- HSTU attention both ways: `fwd_flops`/`bwd_flops` = the padded dense count the torch reference
  runs ([B, H, N_max, N_max] scores), `*_mask_aware` = the pairs the target-aware mask keeps
  (history causal h(h+1)/2 with h = 1 + L context+history tokens, plus t(h+1) for t targets).
- Bytes moved through device memory (operands read and results written once per kernel; weights,
  activations, embedding rows, optimizer state), parameter bytes, kernel counts.
- Time: roofline per component, max(FLOPs / peak(dtype), bytes / bandwidth) + kernels x launch
  overhead, on a roo_ref.hardware.DeviceSpec; the user-side share f_u and the ideal speedup.
- Communication (`comm`) and storage (`storage`, workloads.storage) rows in the same table.

One job per module:
  stats       Shape (what the formulas need from the spec) and StepStats (the step's statistics,
              exact from a batch or expected from the spec)
  components  the table's row (Component) and the pieces the formulas add into it
  dlrm, hstu  the formulas of each architecture; optimizers: the Adam and Adagrad rows
  roofline    time and energy on a DeviceSpec
  step        all rows of a step, both layouts: model_cost, point_cost
  comm        all-to-all and all-reduce bytes and times of model-parallel embeddings
  storage     uncompressed bytes of a batch, per-codec assumptions of the projection
  projection  requests/day -> GPU-hours, TB and kWh per day (vectorized Plan)
  report      the `roo-bench model --json` object
  validate    analytic vs FlopCounterMode FLOPs and vs measured storage bytes

Importing this package imports numpy, never torch (the batch-based functions import it when
called), so the report layer can use it.
"""

from __future__ import annotations

from roo_ref.cost import comm
from roo_ref.cost.components import (
    DTYPE_BYTES,
    EMBEDDING_ROWS,
    ID_BYTES,
    PARAM_BYTES,
    Component,
    dtype_bytes,
)
from roo_ref.cost.optimizers import dense_optimizer, embedding_optimizer
from roo_ref.cost.projection import METRICS, Plan, project
from roo_ref.cost.report import model_report
from roo_ref.cost.roofline import ATTENTION_COUNTS, attention_mode, component_time_s, energy_kwh
from roo_ref.cost.stats import STAT_KEYS, LayoutStats, Shape, StepStats, batch_stats, expected_stats
from roo_ref.cost.step import (
    LayoutCost,
    check_priceable,
    f_user,
    ideal_speedup,
    layout_components,
    layout_cost,
    model_cost,
    point_cost,
)
from roo_ref.cost.storage import batch_storage_bytes, storage_by_codec
from roo_ref.cost.validate import validate_all, validate_preset, validate_storage
from roo_ref.hardware import DEVICES, DeviceSpec, get_device, guess_device_key
from workloads.layout import LAYOUTS

__all__ = [
    "ATTENTION_COUNTS",
    "DEVICES",
    "DTYPE_BYTES",
    "EMBEDDING_ROWS",
    "ID_BYTES",
    "LAYOUTS",
    "METRICS",
    "PARAM_BYTES",
    "STAT_KEYS",
    "Component",
    "DeviceSpec",
    "LayoutCost",
    "LayoutStats",
    "Plan",
    "Shape",
    "StepStats",
    "attention_mode",
    "batch_stats",
    "batch_storage_bytes",
    "check_priceable",
    "comm",
    "component_time_s",
    "dense_optimizer",
    "dtype_bytes",
    "embedding_optimizer",
    "energy_kwh",
    "expected_stats",
    "f_user",
    "get_device",
    "guess_device_key",
    "ideal_speedup",
    "layout_components",
    "layout_cost",
    "model_cost",
    "model_report",
    "point_cost",
    "project",
    "storage_by_codec",
    "validate_all",
    "validate_preset",
    "validate_storage",
]
