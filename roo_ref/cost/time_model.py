"""Step time from kernel classes: device work per component, host issue, their critical path.

The cost model's rows (roo_ref.cost.step) count FLOPs, bytes and kernels; this module prices them
with a calibration's kernel classes (roo_ref.cost.kernel_classes) instead of two roofs:

  device(component) = sum over its matmuls of gemm(m, k, n)   (forward and both backward shapes)
                    + sum over its lookups of gather(ids x width x 4 B)  (the forward lookup; the
                      backward's per-id rows are read in the embedding optimizer's grad_reduce)
                    + its kernel-class special: hstu_attention per layer (Triton backend),
                      grad_reduce per embedding table (the embedding optimizer), optimizer (Adam)
                    + (kernels left) x elementwise(bytes left / kernels left)
  host(component)   = aten ops x per-op host cost (the model preset's own where the calibration
                      measured it) + Triton launches x per-launch cost (eager),
                      the ops split over the rows by their kernel counts; the ops are the step's
                      counted aten ops, else OPS_PER_KERNEL x its counted kernel launches (less
                      the Triton ones), else OPS_PER_KERNEL x the rows' kernels; a CUDA-graph
                      step costs one graph replay and its input copy in all
  graph input copy  = (CUDA-graph steps) the batch copied into the graph's static buffers on the
                      device: GRAPH_INPUT_TENSORS copies of graph_input_bytes / that many each
  step (GPU)        = max(host, device) when the step has no device sync of its own: steps are
                      timed back to back, so a host that runs ahead keeps the device fed (device
                      bound) and a slower host starves it (host bound) — over a step either way
                      the slower side sets the pace;
                      with s >= 1 syncs per step the pipeline drains every step: a critical-path
                      walk from an idle device — the rows' forward shares (1/3 of each row's
                      work) in order, backward shares (2/3) in reverse, the optimizers last; each
                      piece starts when the device is free and the host has issued it
                      (h_i = h_{i-1} + host_i, d_i = max(d_{i-1}, h_i) + device_i), plus s x
                      per-sync; 0 < s < 1 blends the two by s
  step (CPU)        = host + device + syncs (one thread does both)

The mapping of rows to classes (COMPONENT_CLASSES) and to the profiler's regions (PROFILE_GROUP)
is documented in docs/cost-model.md. Nothing here is fitted to step times: the classes come from
microbenchmarks only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from roo_ref.cost.components import PARAM_BYTES, Component, dtype_bytes
from roo_ref.cost.kernel_classes import KernelClasses
from roo_ref.cost.stats import StepStats
from roo_ref.model_presets import ModelConfig
from workloads.errors import UserError
from workloads.spec import WorkloadSpec

FWD_SHARE = 1.0 / 3.0  # a training step's backward does about twice its forward's work
# Aten ops per kernel the cost model counts, when no counted op total is at hand (eager steps
# dispatch views, allocations and copies besides the launching ops).
OPS_PER_KERNEL = 1.7
# Triton launches from Python: the HSTU attention per layer (forward; backward dk/dv and dq),
# the embedding optimizer per table (segment sum, its carry pass, the row update)
TRITON_PER_ATTENTION_LAYER = 3
TRITON_PER_TABLE_UPDATE = 3
# host ops of a CUDA-graph step besides its replay: the inputs' copy into the static buffers and
# the loss's detach
GRAPH_HOST_OPS = 2
# a prepared batch's tensors (roo_ref.models.user_features.PreparedBatch: the raw batch's and the
# lookups' per-batch parts): each is copied into its static buffer before a replay
GRAPH_INPUT_TENSORS = 30
# bytes per looked-up id in a prepared batch: its raw id, the hashed id and its bag (int64 each);
# a history event also carries its timestamp; an impression its label, candidate id and, under ROO,
# its request index, in round numbers
INPUT_BYTES_PER_ID, INPUT_BYTES_PER_EVENT, INPUT_BYTES_PER_IMPRESSION = 24, 8, 32

# the classes each row's kernels fall in (docs/cost-model.md, "Kernel classes")
COMPONENT_CLASSES = {
    "user embeddings": ("gather", "elementwise"),
    "history pooling": ("gather", "elementwise"),
    "history embeddings": ("gather", "elementwise"),
    "item embeddings": ("gather", "elementwise"),
    "hstu attention": ("hstu_attention", "gemm", "elementwise"),
    "embedding optimizer (row-wise Adagrad)": ("grad_reduce",),
    "dense optimizer (Adam)": ("optimizer",),
    "*": ("gemm", "elementwise"),  # MLPs, towers, projections, interaction, norms, heads, loss
}

# the profiler region (roo_ref.models.regions) each row's kernels run under
_INTERACTION_ROWS = ("interaction", "top arch", "heads + loss", "head mlp", "request→impression expansion")


def profile_group(c: Component, arch: str) -> str:
    """The `component_ms` key (user/item/interaction/optimizer) a row's time is compared with."""
    if c.side == "optimizer":
        return "optimizer"
    if c.name in _INTERACTION_ROWS or c.side == "expansion":
        return "interaction"
    if c.side == "shared":
        return "user"
    return c.side if c.side in ("user", "item") else "other"


@dataclass
class RowTime:
    """One row's predicted device and host seconds."""

    name: str
    group: str
    device_s: float
    host_s: float
    optimizer: bool
    classes: dict[str, float] = field(default_factory=dict)  # device seconds per kernel class


@dataclass
class LayoutTime:
    """The predicted step of one layout: its rows, device and host sums and the walk's step."""

    layout: str
    rows: list[RowTime] = field(default_factory=list)
    device_s: float = 0.0
    host_s: float = 0.0
    sync_s: float = 0.0
    step_s: float = 0.0
    graph: bool = False
    ops: float = 0.0
    ops_source: str = ""
    triton_launches: float = 0.0
    step_rule: str = ""

    def group_ms(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.rows:
            out[r.group] = out.get(r.group, 0.0) + r.device_s * 1e3
        return out

    def class_ms(self) -> dict[str, float]:
        """Predicted device ms per kernel class, and the host's issue time ("host")."""
        out: dict[str, float] = {}
        for r in self.rows:
            for k, v in r.classes.items():
                out[k] = out.get(k, 0.0) + v * 1e3
        out["host"] = self.host_s * 1e3
        return out

    def to_dict(self) -> dict:
        return {
            "layout": self.layout,
            "step_ms": self.step_s * 1e3,
            "device_ms": self.device_s * 1e3,
            "host_ms": self.host_s * 1e3,
            "sync_ms": self.sync_s * 1e3,
            "graph": self.graph,
            "aten_ops": self.ops,
            "aten_ops_source": self.ops_source,
            "device_busy_share": self.device_s / self.step_s if self.step_s > 0 else None,
            "component_ms": self.group_ms(),
            "class_ms": self.class_ms(),
            "step_rule": self.step_rule,
            "rows_ms": {r.name: r.device_s * 1e3 for r in self.rows},
        }


def _f(x: Any) -> float:
    return float(np.asarray(x, dtype=float))


def _distinct(draws: float, rows: float) -> float:
    """Expected distinct rows among `draws` uniform draws from `rows` rows."""
    if rows <= 0 or draws <= 0:
        return 0.0
    return rows * -math.expm1(-draws / rows)


def embedding_tables(spec: WorkloadSpec, cfg: ModelConfig, stats: StepStats, layout: str) -> list[tuple[float, float]]:
    """(ids, expected distinct rows) of every table the embedding optimizer updates in one step:
    the user and item feature collections, the item-id table, the action table.

    Impression-layout copies of a request's ids add ids but no distinct rows; distinct rows are
    those of the request-level draws under uniform popularity (an upper bound for Zipf ids)."""
    v = stats.of_layout(layout)
    cap = int(cfg.max_table_rows)
    R, N = _f(stats.requests), _f(stats.impressions)
    rep = _f(v.user_ids) / max(_f(stats.user_ids), 1.0)  # k-fold copies in the impression layout
    out = []
    # one fused collection per side (roo_ref.embeddings.EmbeddingBagCollection): one update each,
    # its features' row blocks disjoint, so their distinct rows add up
    user = [(R * g.pooling.mean(), min(g.cardinality, cap)) for _, g in spec.user_features()]
    out.append((sum(d for d, _ in user) * rep, sum(_distinct(d, c) for d, c in user)))
    item = [(N * g.pooling.mean(), min(g.cardinality, cap)) for _, g in spec.item_features()]
    out.append((sum(d for d, _ in item), sum(_distinct(d, c) for d, c in item)))
    hist_roo = _f(stats.hist_capped if cfg.arch == "hstu" else stats.hist)
    hist = _f(v.hist_capped if cfg.arch == "hstu" else v.hist)
    items = min(spec.history.item_cardinality, cap)
    out.append((hist + N, _distinct(hist_roo + N, items)))  # history items share the item table
    out.append((hist, _distinct(hist_roo, min(spec.history.action_types, cap))))
    return [(n, u) for n, u in out if n > 0]


@dataclass(frozen=True)
class TimeModel:
    """Prices cost-model rows with `classes`; `source` says which calibration it is."""

    classes: KernelClasses

    @property
    def source(self) -> str:
        return self.classes.source

    def _gemms_s(self, c: Component, dtype: str) -> tuple[float, float, float]:
        """(seconds, FLOPs, bytes) of the row's recorded matmuls."""
        e = dtype_bytes(dtype)
        t = fl = by = 0.0
        for m, k, n in c.gemms:
            m, k, n = _f(m), _f(k), _f(n)
            if m * k * n <= 0:
                continue
            t += _f(self.classes.gemm_s(m, k, n, dtype))
            fl += 2 * m * k * n
            by += e * (m * k + k * n + m * n)
        return t, fl, by

    def _lookups_s(self, c: Component) -> tuple[float, float]:
        t = by = 0.0
        for ids, width in c.lookups:
            b = _f(ids) * width * PARAM_BYTES
            if b > 0:
                # the forward lookup only: the backward hands the pooled output's gradient to the
                # embedding optimizer, whose grad_reduce class reads the per-id rows
                t += _f(self.classes.gather(b))
                by += b
        return t, by

    def _attention_s(self, c: Component, cfg: ModelConfig, v: Any) -> float | None:
        """The Triton kernel's forward + backward over the mask-aware pairs, one call per layer
        (None: no class, or the torch backend)."""
        if self.classes.hstu_attention is None or cfg.attention_backend == "torch":
            return None
        pad, padlen = _f(v.pad), _f(v.padlen)
        if pad <= 0 or padlen <= 0:
            return 0.0
        nmax = pad / padlen
        seqs = padlen / nmax
        targets = max(_f(v.impressions) / seqs, 1.0)
        calls = max(int(cfg.hstu_layers), 1)
        return _f(self.classes.hstu_attention_s(_f(c.flops_mask_aware), nmax, targets, seqs, calls))

    def row_s(self, c: Component, cfg: ModelConfig, v: Any, dtype: str, tables: list) -> dict[str, float]:
        """Device seconds of one row per kernel class (see the module docstring)."""
        k = self.classes
        if c.name.startswith("embedding optimizer"):
            return {"grad_reduce": sum(_f(k.grad_reduce_s(n, u, cfg.embedding_dim)) for n, u in tables)}
        if c.name.startswith("dense optimizer"):
            return {"optimizer": _f(k.optimizer(_f(c.bytes))) if _f(c.bytes) > 0 else 0.0}
        att = self._attention_s(c, cfg, v) if c.name == "hstu attention" else None
        if att is not None:
            return {"hstu_attention": att}
        tg, fl, gb = self._gemms_s(c, dtype)
        tl, lb = self._lookups_s(c)
        out = {"gemm": tg, "gather": tl}
        left_flops = _f(c.flops) - fl
        if left_flops > 1e-6 * max(fl, 1.0):  # matmul work without a recorded shape: a bmm-like one
            out["gemm"] += _f(k.gemm_s(left_flops / (2 * 64 * 1024), 64, 1024, dtype))
        kernels = max(_f(c.kernels) - len(c.gemms) - len(c.lookups), 1.0)
        left_bytes = max(_f(c.bytes) - gb - lb, 0.0)
        out["elementwise"] = kernels * _f(k.elementwise(left_bytes / kernels)) if left_bytes > 0 else 0.0
        return {n: t for n, t in out.items() if t > 0}

    def _triton_launches(self, c: Component, cfg: ModelConfig, tables: list) -> float:
        """Triton kernels the row launches from Python (the host prices them apart from aten ops)."""
        if self.classes.serial:
            return 0.0
        if c.name == "hstu attention" and cfg.attention_backend != "torch":
            return TRITON_PER_ATTENTION_LAYER * max(int(cfg.hstu_layers), 1)
        if c.name.startswith("embedding optimizer"):
            return TRITON_PER_TABLE_UPDATE * len(tables)
        return 0.0

    def _graph_input_copy(self, nbytes: float) -> RowTime:
        """The device copy of a replay's inputs into the graph's static buffers."""
        n = GRAPH_INPUT_TENSORS
        t = n * _f(self.classes.elementwise(2 * nbytes / n)) if nbytes > 0 else 0.0  # read + write
        return RowTime("graph input copy", "other", t, 0.0, False, {"elementwise": t} if t > 0 else {})

    def layout_time(
        self,
        spec: WorkloadSpec,
        cfg: ModelConfig,
        stats: StepStats,
        comps: list[Component],
        layout: str,
        dtype: str = "bf16",
        graph: bool = False,
        aten_ops: float | None = None,
        syncs: float = 0.0,
        launches: float | None = None,
        model: str | None = None,
    ) -> LayoutTime:
        """Predicted step of one layout's compute rows (`comps`, from roo_ref.cost.step).
        `syncs`: the step's own device syncs (not a profiler's or timer's); `launches`: the
        step's counted kernel launches (eager), used where its aten ops were not counted;
        `model`: the model preset, whose own host cost per op the calibration may hold."""
        for name, x in (("aten_ops", aten_ops), ("launches", launches)):
            if x is not None and not x >= 0:
                raise UserError(f"{name}={x} must be >= 0")
        if not syncs >= 0:
            raise UserError(f"syncs={syncs} must be >= 0")
        v = stats.of_layout(layout)
        tables = embedding_tables(spec, cfg, stats, layout)
        rows = [c for c in comps if c.side not in ("comm", "storage")]
        kernels = [max(_f(c.kernels), 0.0) for c in rows]
        total_k = sum(kernels) or 1.0
        triton = 0.0 if graph else sum(self._triton_launches(c, cfg, tables) for c in rows)
        ops, source = _host_ops(aten_ops, launches, triton, total_k)
        h = self.classes.host
        per_kernel_host = 0.0 if graph else ops * h.per_op(model, layout) / total_k
        out = LayoutTime(layout, graph=graph, ops=ops, ops_source=source)
        for c, kn in zip(rows, kernels, strict=True):
            cls = self.row_s(c, cfg, v, dtype, tables)
            tri = 0.0 if graph else self._triton_launches(c, cfg, tables)
            out.triton_launches += tri
            host = kn * per_kernel_host + tri * h.per_triton_launch_s
            out.rows.append(
                RowTime(c.name, profile_group(c, cfg.arch), sum(cls.values()), host, c.side == "optimizer", cls)
            )
        if graph:
            out.rows.append(self._graph_input_copy(graph_input_bytes(rows, stats, layout, cfg)))
        out.device_s = sum(r.device_s for r in out.rows)
        out.host_s = h.graph_launch_s + GRAPH_HOST_OPS * h.per_op_s if graph else sum(r.host_s for r in out.rows)
        out.sync_s = syncs * h.per_sync_s
        out.step_s, out.step_rule = _step(out, self.classes.serial, syncs)
        return out


def graph_input_bytes(rows: list[Component], stats: StepStats, layout: str, cfg: ModelConfig) -> float:
    """Bytes of a prepared batch (what a replay copies in), from the rows' lookups and the step's
    history events and impressions (round numbers per id, INPUT_BYTES_*)."""
    v = stats.of_layout(layout)
    ids = sum(_f(n) for c in rows for n, _ in c.lookups)
    events = _f(v.hist_capped if cfg.arch == "hstu" else v.hist)
    return INPUT_BYTES_PER_ID * ids + INPUT_BYTES_PER_EVENT * events + INPUT_BYTES_PER_IMPRESSION * _f(v.impressions)


def _host_ops(aten_ops: float | None, launches: float | None, triton: float, kernels: float) -> tuple[float, str]:
    """(aten ops the host issues, where the number came from): counted ops; else the counted
    kernel launches less the Triton ones (priced per launch), OPS_PER_KERNEL ops each; else the
    rows' kernel count, OPS_PER_KERNEL ops each. Why launches before the rows' kernels: they are
    the step's own count (as FLOPs are), the rows' kernels an estimate of it."""
    if aten_ops is not None:
        return float(aten_ops), "counted"
    if launches:
        return OPS_PER_KERNEL * max(float(launches) - triton, 0.0), "counted launches"
    return OPS_PER_KERNEL * kernels, "estimated"


def _step(lt: LayoutTime, serial: bool, syncs: float) -> tuple[float, str]:
    """(step seconds, the rule that gave it): see the module docstring."""
    if serial:  # one thread issues and runs every kernel
        return lt.host_s + lt.device_s + lt.sync_s, "serial: host + device + syncs"
    steady = max(lt.host_s, lt.device_s)
    if lt.graph:
        return steady + lt.sync_s, "graph: max(host, device) + syncs"
    if syncs <= 0:
        return steady, "pipelined: max(host, device)"
    s = min(syncs, 1.0)  # the share of steps that drain: each of them waits for one sync at least
    drained = _walk(lt.rows) + lt.sync_s / s
    return s * drained + (1 - s) * steady, f"{s:g} of the steps drained: walk + syncs, else max(host, device)"


def _walk(rows: list[RowTime]) -> float:
    """The critical path of host issue and device work from an idle device (module docstring)."""
    compute = [r for r in rows if not r.optimizer]
    pieces = [(r.host_s * FWD_SHARE, r.device_s * FWD_SHARE) for r in compute]
    pieces += [(r.host_s * (1 - FWD_SHARE), r.device_s * (1 - FWD_SHARE)) for r in reversed(compute)]
    pieces += [(r.host_s, r.device_s) for r in rows if r.optimizer]
    h = d = 0.0
    for host, dev in pieces:
        h += host
        d = max(d, h) + dev
    return d


def predict_layouts(
    tm: TimeModel,
    spec: WorkloadSpec,
    cfg: ModelConfig,
    stats: StepStats,
    dtype: str = "bf16",
    graph: bool = False,
    aten_ops: dict[str, float] | None = None,
    syncs: dict[str, float] | None = None,
    launches: dict[str, float] | None = None,
    model: str | None = None,
) -> dict[str, LayoutTime]:
    """Both layouts' predicted steps from the step's statistics (exact or expected).
    `aten_ops`/`syncs`/`launches`: counted per layout when known (a count, like FLOPs), else
    estimated / 0 / none; `model`: the model preset (its host cost per op, where calibrated)."""
    from roo_ref.cost.optimizers import embedding_optimizer
    from roo_ref.cost.step import layout_components
    from workloads.layout import LAYOUTS

    out: dict[str, LayoutTime] = {}
    for layout in LAYOUTS:
        comps = layout_components(spec, cfg, stats, layout, dtype)
        comps.insert(len(comps) - 1, embedding_optimizer(cfg, stats, layout, dtype_bytes(dtype)))
        ops, n = (aten_ops or {}).get(layout), (launches or {}).get(layout)
        s = float((syncs or {}).get(layout) or 0.0)
        out[str(layout)] = tm.layout_time(spec, cfg, stats, comps, layout, dtype, graph, ops, s, n, model)
    return out


def from_device_spec(dev: Any) -> TimeModel:
    """The roofline (a roo_ref.hardware.DeviceSpec's two roofs) as a time model."""
    flops = {"bf16": dev.bf16_flops, "fp16": dev.bf16_flops, "fp32": dev.fp32_flops}
    serial = "cpu" in dev.name.lower()
    return TimeModel(
        KernelClasses.from_roofs(flops, dev.bandwidth, dev.launch_overhead_s, f"roofs ({dev.source})", serial)
    )


def from_calibration(obj: dict) -> TimeModel:
    """A time model from a calibration record (enveloped or flat): its kernel classes, or, for a
    record with roofs only, the roofline of its measured matmul rate and copy bandwidth."""
    if not isinstance(obj, dict):
        raise UserError("calibration: expected a JSON object")
    if obj.get("kind") not in (None, "calibration"):
        raise UserError(f"calibration: a record of kind {obj.get('kind')!r}, not 'calibration'")
    m = obj.get("metrics", obj)
    name = m.get("device_name", "?")
    created = (obj.get("provenance") or {}).get("created_utc", "")
    kc = m.get("kernel_classes")
    if kc:
        classes = KernelClasses.from_dict(kc)
        return TimeModel(KernelClasses(**{**classes.__dict__, "source": f"kernel classes of {name} {created}".strip()}))
    spec = m.get("spec")
    if not spec or "bandwidth" not in spec:
        raise UserError("calibration: no kernel_classes and no roofs (spec) in the record")
    from roo_ref.hardware import DeviceSpec

    dev = DeviceSpec(**{k: spec[k] for k in DeviceSpec.__dataclass_fields__ if k in spec})
    tm = from_device_spec(dev)
    return TimeModel(KernelClasses(**{**tm.classes.__dict__, "source": f"roofs of {name} {created}".strip()}))


def load_calibration(path: str) -> TimeModel:
    """`from_calibration` of a JSON file (a record, or a results.jsonl's first calibration line)."""
    import json

    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        raise UserError(f"--calibration {path}: {e.strerror}") from None
    for chunk in [text, *text.splitlines()]:
        try:
            obj = json.loads(chunk)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and obj.get("kind", "calibration") == "calibration":
            return from_calibration(obj)
    raise UserError(f"--calibration {path}: no calibration record in it")
