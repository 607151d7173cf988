"""run_point: measure one workload × model point in both layouts and return one result record.

One request batch is generated (seeded) and the impression batch is derived from it, so both
layouts train on exactly the same impressions per step. Each layout gets a freshly built model
(same seed, same initial weights), its own Trainer, and its own batch moved to the device; the
other layout's tensors are freed first, so peak memory (torch.cuda.max_memory_allocated, reset
between layouts) is that layout's alone.

Timing: the training loop of harness.measure (the one `roo-bench bench` uses), i.e.
harness.timers.time_steps: warm-up steps, one dropped step, `steps` timed steps; the NVML sampler
(harness.nvml) encloses exactly the timed steps. FLOPs: from the analytic cost model
(roo_ref.cost) when it is importable — else None with the reason — and, independently, counted
by torch's FlopCounterMode over one extra warm-up step (`flops_counted_per_step`), which also
counts the step's aten ops (`aten_ops_per_step`: the host-side work of an eager step).

Where the time goes (`profile = true`, the default): once every layout's timed steps are done,
each layout is built again and `profile_steps` steps of it (after `warmup` + 2 unprofiled ones) run
under torch.profiler (harness.profile_step); a profiler's leftovers (on a GPU, CUPTI subscribed to
launches) must not slow the layouts timed after it. Recorded: host wall and device-busy
ms per step, their ratio, launches and syncs per step, and the busy time split by the models'
`roo/*` profiler ranges. From those, per point: s_u (the user side's share of the impression
layout's busy time) and the time-ideal speedup 1 / (s_u / k + 1 - s_u), beside the FLOP-ideal
(ratio of FLOPs per step) and the byte-ideal (ratio of the cost model's bytes per step); MFU per
layout = FLOPs per step / (median step time x this point's matmul rate), measured once per point
by harness.devices.calibrate (bf16 on a GPU, fp32 on the CPU). The profiled steps are not timed
steps, so `profile` and `profile_steps` are not part of the point's identity (its hash).

CUDA graphs (`graph = true`, a CUDA device only): the trainer is roo_ref.graph_step's GraphTrainer.
The batch is padded to its bucket and prepared before anything is measured, FLOPs and ops are
counted over one eager step of the padded batch (a replay is invisible to FlopCounterMode), then
the bucket's graph is captured; timed and profiled steps are replays. A replay runs no Python, so
its profile has no roo/* ranges: busy time and launches stand, the component split (and s_u) is
None with the reason. The record's `graph_buckets` per layout lists the captured buckets.

The record's `config_hash` is the hash of the *input* config (PointConfig.hash_dict: preset,
overrides, device, dtype, timing settings, ...), which a sweep can compute before running the
point; the record's `config` adds the resolved `spec` and `model` dicts and the sweep `axes`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.measure import DTYPES, check_graph_device, graph_buckets, kernel_options_from_env
from harness.profile_step import count_flops_and_ops
from workloads.errors import UserError
from workloads.layout import LAYOUTS

BACKENDS = ("torch", "triton")
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class PointConfig:
    """The input of one point. `workload` (a full spec dict) replaces the preset's spec; the preset
    still names the model shape. `axes` labels the sweep coordinates (not part of the hash)."""

    preset: str | None = "tiny"
    workload: dict | None = None
    spec_overrides: tuple[str, ...] = ()
    model_overrides: tuple[str, ...] = ()
    device: str = "cpu"
    dtype: str = "fp32"
    backend: str = "torch"
    warmup: int = 3
    steps: int = 20
    seed: int = 0
    requests_per_batch: int | None = None
    nvml: bool = True
    nvml_interval_ms: float = 20.0
    count_flops: bool = True
    threads: int | None = None  # CPU intra-op threads (torch.set_num_threads); None: torch's default
    layouts: tuple[str, ...] = LAYOUTS
    profile: bool = True  # after the timed steps: profile, calibrate the matmul rate (MFU)
    profile_steps: int = 3
    # where the batch is made: "auto" on the training device (the torch generator on CUDA), "cpu"
    # the numpy reference then copied; a seed's GPU and CPU batches differ (harness.measure)
    data_device: str = "auto"
    graph: bool = False  # CUDA-graph steps: padded to a bucket, captured once, replayed (roo_ref.graph_step)
    axes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset is None and self.workload is None:
            raise UserError("point config: give a preset or a workload (a full spec table)")
        if self.preset is not None:
            from workloads.presets import get_preset

            get_preset(self.preset)  # unknown preset: one line naming the allowed ones
        if not _DEVICE_RE.match(self.device):
            raise UserError(f"device={self.device!r}; allowed: cpu, cuda, cuda:N")
        if self.dtype not in DTYPES:
            raise UserError(f"dtype={self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if self.backend not in BACKENDS:
            raise UserError(f"backend={self.backend!r}; allowed: {', '.join(BACKENDS)}")
        if self.warmup < 0:
            raise UserError(f"warmup={self.warmup} must be >= 0")
        if self.steps < 1:
            raise UserError(f"steps={self.steps} must be >= 1 (>= 5 for a bootstrap speedup interval)")
        if self.seed < 0:
            raise UserError(f"seed={self.seed} must be >= 0")
        if self.requests_per_batch is not None and self.requests_per_batch < 1:
            raise UserError(f"requests_per_batch={self.requests_per_batch} must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads={self.threads} must be >= 1")
        if not self.nvml_interval_ms > 0:
            raise UserError(f"nvml_interval_ms={self.nvml_interval_ms} must be > 0")
        if self.data_device not in ("auto", "cpu"):
            raise UserError(f"data_device={self.data_device!r}; allowed: auto, cpu")
        if self.profile_steps < 1:
            raise UserError(f"profile_steps={self.profile_steps} must be >= 1 (profile = false skips the profile)")
        if (
            not self.layouts
            or any(x not in LAYOUTS for x in self.layouts)
            or len(set(self.layouts)) != len(self.layouts)
        ):
            raise UserError(f"layouts={list(self.layouts)}; allowed: distinct values of {', '.join(LAYOUTS)}")

    # --- dict round trip -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict, where: str = "point config") -> PointConfig:
        if not isinstance(d, dict):
            raise UserError(f"{where} must be a table/object, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise UserError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
        kw = {}
        for k, v in d.items():
            kw[k] = _coerce(k, v, where)
        return cls(**kw)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("spec_overrides", "model_overrides", "layouts"):
            d[k] = [str(x) for x in d[k]]  # layouts as their plain names
        return d

    def hash_dict(self) -> dict:
        """What identifies the measurement (the sweep's resume key): everything but the labels and
        the profile settings (the profiled steps come after the timed ones and change none of them)."""
        d = self.to_dict()
        for k in _NOT_IDENTITY:
            d.pop(k)
        if d["data_device"] == "auto":  # the default keeps the hashes points had before the setting
            d.pop("data_device")
        if not d["graph"]:  # likewise: eager points keep their hashes
            d.pop("graph")
        return d

    def config_hash(self) -> str:
        from harness.results import config_hash

        return config_hash(self.hash_dict())

    # --- resolution ----------------------------------------------------------------------------
    def resolve_spec(self):
        """The WorkloadSpec this point runs (preset or workload, then overrides, batch size, seed)."""
        from workloads.presets import get_preset
        from workloads.spec import WorkloadSpec

        spec = WorkloadSpec.from_dict(self.workload) if self.workload is not None else get_preset(self.preset)
        extra = list(self.spec_overrides)
        if self.requests_per_batch is not None:
            extra.append(f"requests_per_batch={self.requests_per_batch}")
        extra.append(f"seed={self.seed}")
        return spec.with_overrides(extra)


def workload_files(cfg: dict, base_dir: Path, where: str) -> dict:
    """A sweep's point dict with `spec_file` (a sweep's `spec = FILE`, relative to `base_dir`, the
    sweep file's folder) read into its `workload`, and `model_preset` (`model = NAME`) as its
    `preset`, which names the model shape when a workload is given. A spec file without a model
    leaves the model to the spec's name (checked, never guessed)."""
    spec_file, model = cfg.pop("spec_file", None), cfg.pop("model_preset", None)
    if spec_file is None and model is None:
        return cfg
    if model is not None:
        _check_model_preset(model, where)
    if spec_file is not None:
        if "preset" in cfg or "workload" in cfg:
            raise UserError(
                f"{where}: give either preset or spec = {spec_file!r}, not both "
                '(name the model family with model = "NAME")'
            )
        from workloads.spec import WorkloadSpec

        f = Path(spec_file).expanduser()
        cfg["workload"] = WorkloadSpec.from_file(f if f.is_absolute() else base_dir / f).to_dict()
        if model is None:
            _check_spec_names_model(cfg["workload"]["name"], spec_file, where)
    elif "workload" not in cfg:
        from workloads.presets import get_preset

        cfg["workload"] = get_preset(cfg.get("preset", "tiny")).to_dict()  # the preset's workload, another model
    cfg["preset"] = model
    return cfg


def _model_presets() -> tuple[str, ...] | None:
    try:
        from roo_ref.model_presets import MODEL_PRESETS
    except ImportError:  # no reference models in this checkout: the child reports it per point
        return None
    return tuple(MODEL_PRESETS)


def _check_model_preset(model: str, where: str) -> None:
    names = _model_presets()
    if names is not None and model.split("@", 1)[0] not in names:
        raise UserError(f"{where}: unknown model preset {model!r}; choose one of: {', '.join(names)}")


def _check_spec_names_model(name: str, spec_file: str, where: str) -> None:
    names = _model_presets()
    if names is not None and name not in names:
        raise UserError(
            f"{where}: spec {spec_file!r} (workload {name!r}) names no model preset; add "
            f'model = "NAME", one of: {", ".join(names)}'
        )


GRAPH_COMPONENTS_REASON = (
    "CUDA-graph replay: no Python runs in a replay, so the roo/* ranges are absent; "
    "an eager point (graph = false) has the split by component"
)
_INT = ("warmup", "steps", "seed", "profile_steps")
_NOT_IDENTITY = ("axes", "profile", "profile_steps")


def _coerce(k: str, v, where: str):
    def bad(want: str):
        return UserError(f"{where}: {k}={v!r} must be {want}")

    if k in _INT or (k in ("requests_per_batch", "threads") and v is not None):
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad("an integer")
        return v
    if k in ("nvml", "count_flops", "profile", "graph"):
        if not isinstance(v, bool):
            raise bad("true or false")
        return v
    if k == "nvml_interval_ms":
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise bad("a number")
        return float(v)
    if k in ("spec_overrides", "model_overrides", "layouts"):
        if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
            raise bad("a list of strings")
        return tuple(v)
    if k in ("device", "dtype", "backend", "data_device") or (k == "preset" and v is not None):
        if not isinstance(v, str):
            raise bad("a string")
        return v
    if k in ("workload", "axes") and v is not None:
        if not isinstance(v, dict):
            raise bad("a table/object")
        return dict(v)
    return v


def check_device(device: str) -> None:
    """A device that is not there: one line (the sweep and the CLI exit 2 on it)."""
    if not _DEVICE_RE.match(device):
        raise UserError(f"--device {device!r}; allowed: cpu, cuda, cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} is not available here (torch.cuda.is_available() is False); use cpu")
        idx = torch.device(device).index
        if idx is not None and idx >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise UserError(f"device {device!r} is not available here: {n} CUDA device(s)")


# --- model construction ------------------------------------------------------------------------
# A builder makes (model, trainer) for one layout: model has `.config.to_dict()`, trainer has
# `.step(batch)`. The default builds roo_ref models; tests inject a stand-in.
Builder = Callable[["object", PointConfig, str], tuple]


def default_builder(spec, pc: PointConfig, layout: str):
    import torch

    from roo_ref.models import build_model
    from roo_ref.train import Trainer

    # The point's backend selects the model's attention kernel; explicit model overrides win.
    overrides = [f"attention_backend={pc.backend}", *pc.model_overrides]
    # fp32 master weights in both dtypes; bf16 = autocast (roo_ref.train), as mixed-precision training runs.
    model = build_model(
        spec,
        preset=pc.preset,
        overrides=overrides,
        device=pc.device,
        dtype=torch.float32,
        seed=pc.seed,
        kernel_options=kernel_options_from_env(),
    )
    trainer = Trainer(model, layout, amp_bf16=pc.dtype == "bf16", seed=pc.seed)
    if pc.graph:
        from roo_ref.graph_step import GraphTrainer

        trainer = GraphTrainer(trainer)
    return model, trainer


# --- cost model --------------------------------------------------------------------------------
def cost_of(spec, model, request_batch, layout: str, pc: PointConfig, device_name: str | None) -> dict:
    """The analytic cost model's numbers for one layout, or None values and the reason.

    Expected API (roo_ref.cost): `point_cost(spec, model_config, request_batch, layout, dtype,
    device_name) -> {"flops_per_step", "flops_masked_counted", "predicted_step_ms", "ideal_speedup"?}`."""
    out = {
        "flops_per_step": None,
        "flops_masked_counted": None,
        "predicted_step_ms": None,
        "ideal_speedup": None,
        "cost_reason": None,
        "cost_extra": {},
    }
    try:
        from roo_ref import cost
    except Exception as e:  # noqa: BLE001 — not written yet / broken: record why
        out["cost_reason"] = f"roo_ref.cost not importable: {type(e).__name__}: {e}"
        return out
    fn = getattr(cost, "point_cost", None)
    if fn is None:
        out["cost_reason"] = "roo_ref.cost has no point_cost()"
        return out
    try:
        res = fn(spec, getattr(model, "config", None), request_batch, layout, pc.dtype, device_name)
    except Exception as e:  # noqa: BLE001
        out["cost_reason"] = f"roo_ref.cost.point_cost failed: {type(e).__name__}: {e}"
        return out
    for k in ("flops_per_step", "flops_masked_counted", "predicted_step_ms", "ideal_speedup"):
        if k in res:
            out[k] = res[k]
    # everything else the model reports (padded / mask-aware FLOPs, bytes, f_u, device key) rides along
    out["cost_extra"] = {k: v for k, v in res.items() if k not in out}
    return out


def _model_config(model) -> dict:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return {}
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return dict(cfg) if isinstance(cfg, dict) else {"repr": repr(cfg)}


# --- the point ---------------------------------------------------------------------------------
def _layout_fields(
    timing, n_imp: int, n_req: int, peak, cost: dict, energy: dict, profile=None, profile_reason=None, **extra
) -> dict:
    """One layout's entry of the record's `layouts` (docs/contracts.md); `extra`: e.g. graph_buckets."""
    from harness.profile_step import layout_fields

    med_s = timing.stats.median / 1e3
    flops, flops_counted = cost["flops_per_step"], cost["flops_counted_per_step"]
    pred = cost["predicted_step_ms"]
    prof = layout_fields(profile, profile_reason)
    busy = prof["busy_ms"] if prof["busy_source"] == "cuda" else None
    return {
        "step_ms": timing.stats.to_dict(),
        "dropped_ms": timing.dropped_ms,
        "timer": timing.method,
        "impressions_per_s": n_imp / med_s if med_s > 0 else None,
        "requests_per_s": n_req / med_s if med_s > 0 else None,
        "impressions_per_step": n_imp,
        "requests_per_step": n_req,
        "peak_mem_bytes": peak,
        "flops_per_step": flops,
        "flops_masked_counted": cost["flops_masked_counted"],
        "achieved_tflops": flops / med_s / 1e12 if flops and med_s > 0 else None,
        "flops_counted_per_step": flops_counted,
        "aten_ops_per_step": cost["aten_ops_per_step"],
        "achieved_tflops_counted": flops_counted / med_s / 1e12 if flops_counted and med_s > 0 else None,
        "predicted_step_ms": pred,
        "step_error": timing.stats.median / pred - 1 if pred else None,
        "cost_reason": cost["cost_reason"],
        "cost": cost["cost_extra"],
        "ideal_speedup": cost["ideal_speedup"],
        "energy": energy,
        **extra,
        **prof,
        # the busy time over the timed step: the profiler slows the host's issue, not the kernels,
        # so `busy_share` (over the profiled wall time) understates what an unprofiled step keeps
        # the GPU busy
        "busy_share_of_step": busy / timing.stats.median if busy and timing.stats.median > 0 else None,
    }


def _speedup_metrics(layouts: dict, ci: dict | None) -> dict:
    """The record's point-level metrics: measured speedup with its interval, and the model's."""
    metrics: dict = {
        "layouts": layouts,
        "speedup": None,
        "speedup_ci": None,
        "speedup_ci_method": None,
        "predicted_speedup": None,
        "speedup_error": None,
        "ideal_speedup": None,
    }
    if ci is None:
        return metrics
    imp, roo = layouts["impression"], layouts["roo"]
    metrics["speedup"] = ci["ratio"]
    metrics["speedup_ci"] = [ci["lo"], ci["hi"]]
    metrics["speedup_ci_method"] = ci["method"]
    if imp["predicted_step_ms"] and roo["predicted_step_ms"]:
        metrics["predicted_speedup"] = imp["predicted_step_ms"] / roo["predicted_step_ms"]
        metrics["speedup_error"] = ci["ratio"] / metrics["predicted_speedup"] - 1
    ideal = roo["ideal_speedup"] or imp["ideal_speedup"]
    if ideal is None and imp["flops_per_step"] and roo["flops_per_step"]:
        ideal = imp["flops_per_step"] / roo["flops_per_step"]  # the FLOP ratio is the ideal
    metrics["ideal_speedup"] = ideal
    return metrics


def _profile(pc: PointConfig, step: Callable[[], object], cuda: bool) -> tuple[dict | None, str | None]:
    """(the profile_steps summary, None) or (None, why not). A profiler failure is recorded, not
    raised: the timed steps are the point's measurement."""
    if not pc.profile:
        return None, "profile = false"
    from harness.profile_step import PROFILE_TOP, profile_steps

    try:
        return profile_steps(step, warmup=0, steps=pc.profile_steps, cuda=cuda, top=PROFILE_TOP), None
    except Exception as e:  # noqa: BLE001
        return None, f"torch.profiler failed: {type(e).__name__}: {e}"[:300]


def _calibration(pc: PointConfig) -> dict:
    """This run's matmul rate for MFU (harness.devices.calibrate: bf16 on a GPU, fp32 on the
    CPU, small sizes on the CPU), or a reason; the buffers are freed before the layouts run."""
    if not pc.profile:
        return {"matmul_flops": None, "reason": "profile = false"}
    import torch

    from harness.devices import calibrate

    cpu = pc.device == "cpu"
    try:
        c = calibrate(pc.device, matmul_n=512 if cpu else None, copy_bytes=(16 if cpu else 256) << 20)
    except Exception as e:  # noqa: BLE001
        return {"matmul_flops": None, "reason": f"calibration failed: {type(e).__name__}: {e}"[:300]}
    finally:
        gc.collect()
        if not cpu:
            torch.cuda.empty_cache()
    keep = ("device_name", "matmul_n", "matmul_dtype", "matmul_flops", "copy_bandwidth")
    return {**{k: c[k] for k in keep}, "reason": None}


def _time_metrics(layouts: dict, n_imp: int, n_req: int, speedup, calib: dict) -> dict:
    """MFU per layout (in place) and the point's ideals (harness.profile_step.point_fields)."""
    from harness.profile_step import mfu, point_fields

    for L in layouts.values():
        analytic = bool(L["flops_per_step"])
        flops = L["flops_per_step"] if analytic else L["flops_counted_per_step"]
        L["mfu"], L["mfu_reason"] = mfu(flops, L["step_ms"]["median"], calib["matmul_flops"])
        L["mfu_reason"] = calib["reason"] if calib["matmul_flops"] is None else L["mfu_reason"]
        L["mfu_flops"] = "analytic" if analytic else "counted" if flops else None
    return {**point_fields(layouts, n_imp / n_req, speedup), "calibration": calib}


def _point_setup(
    pc: PointConfig, spec, rb, rb_cpu, builder: Builder, device_name: str | None, model_cfgs: list, profiling: bool
):
    """harness.measure's per-layout setup for a point: frees the previous layout first (so the
    peak memory is this layout's alone) and builds the model from the point's seed. The timed pass
    (`profiling` False) counts FLOPs and ops over one extra warm-up step and encloses the timed
    steps in the NVML sampler; the profile pass profiles `profile_steps` steps after its own."""
    import torch

    from harness.measure import LayoutRun
    from harness.nvml import NvmlSampler

    dev = torch.device(pc.device)
    cuda = dev.type == "cuda"
    n_imp = rb_cpu.num_impressions_total

    @contextlib.contextmanager
    def setup(layout):
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        batch = (rb if layout == "roo" else rb.to_impressions()).to(dev)
        torch.manual_seed(pc.seed)
        model, trainer = builder(spec, pc, str(layout))
        model_cfgs.append(_model_config(model))
        # the per-batch bookkeeping once, outside every measured step (counting, timing, profiling)
        prepare = getattr(trainer, "prepare", None)
        batch = batch if prepare is None else prepare(batch)
        # a GraphTrainer counts an eager step of the padded batch, before its graph is captured
        counted_step = getattr(trainer, "eager_step", trainer.step)
        count = pc.count_flops and not profiling
        counted = count_flops_and_ops(lambda: counted_step(batch)) if count else (None, None)
        sampler = NvmlSampler(pc.device, pc.nvml_interval_ms, enabled=pc.nvml and not profiling)

        def report(timing) -> dict:
            if profiling:
                prof, why = _profile(pc, lambda: trainer.step(batch), cuda)
                if pc.graph and prof is not None:
                    prof["components_reason"] = GRAPH_COMPONENTS_REASON
                return {"profile": prof, "profile_reason": why}
            peak = int(torch.cuda.max_memory_allocated(dev)) if cuda else None
            cost = cost_of(spec, model, rb_cpu, str(layout), pc, device_name)
            cost["flops_counted_per_step"], cost["aten_ops_per_step"] = counted
            out = {"cost": cost, "peak": peak, "energy": sampler.summary(pc.steps, n_imp)}
            if pc.graph:
                out["graph_buckets"] = graph_buckets(trainer)
            return out

        try:
            yield LayoutRun(trainer, [batch], region=lambda: sampler, report=report)
        finally:
            sampler.close()
            close = getattr(trainer, "close", None)  # a GraphTrainer frees its graphs
            if close is not None:
                close()

    return setup


def run_point(config: PointConfig | dict, *, builder: Builder | None = None) -> dict:
    """Measure both layouts of one point; return a `kind="point"` record (docs/contracts.md).
    The point's `data_device` says where the batch is made (harness.measure.make_request_batch);
    the record's `data_made_by` names the generator that made it."""
    import torch

    from harness import provenance
    from harness.measure import make_request_batch, measure_layouts
    from harness.results import make_record

    pc = config if isinstance(config, PointConfig) else PointConfig.from_dict(config)
    check_device(pc.device)
    check_graph_device(pc.graph, torch.device(pc.device).type)  # here, not in PointConfig: a sweep may move to cpu
    spec = pc.resolve_spec()
    if pc.threads is not None:
        # On a shared CPU, OpenMP threads spin-waiting for a busy core make steps several times
        # slower and far noisier; CPU sweeps pin this (ci-tiny uses 1).
        torch.set_num_threads(pc.threads)
    prov = provenance.collect(pc.seed, pc.device, kernel_options=kernel_options_from_env())
    prov["cuda_graph"] = pc.graph
    calib = _calibration(pc)
    rb = make_request_batch(spec, spec.requests_per_batch, pc.seed, pc.device, pc.data_device)
    rb_cpu = rb.to("cpu") if rb.request_id.is_cuda else rb  # what the cost model reads, on the host
    model_cfgs: list[dict] = []
    args = (pc, spec, rb, rb_cpu, builder or default_builder, prov.get("device_name"), model_cfgs)
    timed = dict(warmup=pc.warmup, device=torch.device(pc.device))
    m = measure_layouts(pc.layouts, [rb_cpu], _point_setup(*args, profiling=False), steps=pc.steps, **timed)
    # Every layout's timed steps run before any profiled step: a profiler can leave work behind in
    # the process (on a GPU, Kineto keeps CUPTI subscribed to launches unless TEARDOWN_CUPTI=1),
    # which would slow only the layouts timed after it. Each layout's model is rebuilt for its profile.
    off = {"profile": None, "profile_reason": "profile = false"}
    if pc.profile:
        p = measure_layouts(pc.layouts, [rb_cpu], _point_setup(*args, profiling=True), steps=1, **timed)
    n_imp, n_req = rb_cpu.num_impressions_total, rb_cpu.num_requests
    extra = {k: {**r.extra, **(p.layouts[k].extra if pc.profile else off)} for k, r in m.layouts.items()}
    layouts = {str(k): _layout_fields(r.timing, n_imp, n_req, **extra[k]) for k, r in m.layouts.items()}
    metrics = _speedup_metrics(layouts, m.speedup_interval(seed=pc.seed))
    metrics.update(_time_metrics(layouts, n_imp, n_req, metrics["speedup"], calib))
    on_gpu = pc.data_device == "auto" and torch.device(pc.device).type == "cuda"
    metrics["data_made_by"] = "workloads.generator_torch on the GPU" if on_gpu else "workloads.generator (numpy)"
    model_cfg: dict = {}
    for cfg in model_cfgs:  # the last layout's model config that has one
        model_cfg = cfg or model_cfg
    rec_config = pc.to_dict()
    rec_config["spec"] = spec.to_dict()
    rec_config["model"] = model_cfg
    return make_record("point", rec_config, metrics, provenance=prov, hash_config=pc.hash_dict())
