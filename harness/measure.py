"""The timed training loop shared by `roo-bench bench`, sweep points (harness.run_point) and the
asv model benchmarks: train steps of each layout on the same impressions and time them.

`measure_layouts(layouts, request_batches, setup, ...)` runs, per layout, what `setup(layout)`
prepares (a trainer and that layout's view of `request_batches`, cycled), warms up and times
the steps with `harness.timers.time_steps` (CUDA events on a GPU, perf_counter on the CPU, the
first timed step dropped). Every layout sees the same request batches in the same order, so the
impressions per step are the same and the ratio of median step times is the ROO speedup; its
confidence interval comes from `harness.timers.ratio_interval`.

`resolve_workload(...)` is what `roo-bench bench` and `profile` run: `--preset NAME` or `--spec
FILE` with `--set` overrides, and the model preset `--model NAME` (default: the workload's own).
`measure_preset(...)` is the whole of `roo-bench bench`'s measurement: that workload, a few seeded
request batches, a freshly built model and Trainer per layout.

CUDA graphs (`graph=True`, `--graph`): the trainer is a roo_ref.graph_step.GraphTrainer. Its
`plan` picks one bucket all the layout's batches fit, `prepare` pads each batch to it and prepares
it, and `capture` records the bucket's graph, all here before the timed steps; a timed step is
then the copy into the bucket's static buffers and one replay, timed by the same CUDA events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.timers import Stats, Timing, ratio_interval, time_steps
from workloads.errors import SpecError, UserError
from workloads.layout import Layout

DTYPES = ("fp32", "bf16")


@dataclass
class LayoutRun:
    """What `setup(layout)` yields: `trainer.step(batch)` is timed over `batches` (this layout's view
    of the request batches, index for index). `region` encloses exactly the kept timed steps (e.g.
    the NVML sampler); `report(timing)` runs before the setup is left and returns extra fields."""

    trainer: Any
    batches: Sequence
    region: Callable[[], contextlib.AbstractContextManager] | None = None
    report: Callable[[Timing], dict] | None = None


@dataclass(frozen=True)
class LayoutMeasurement:
    layout: Layout
    timing: Timing
    impressions_per_step: float  # mean over the kept steps
    requests_per_step: float
    loss: Any  # the last step's loss (a tensor), for a finiteness check
    extra: dict = field(default_factory=dict)

    @property
    def stats(self) -> Stats:
        return self.timing.stats

    def _per_s(self, per_step: float) -> float | None:
        med_s = self.stats.median / 1e3
        return per_step / med_s if med_s > 0 else None

    @property
    def impressions_per_s(self) -> float | None:
        return self._per_s(self.impressions_per_step)

    @property
    def requests_per_s(self) -> float | None:
        return self._per_s(self.requests_per_step)


@dataclass(frozen=True)
class Measurement:
    layouts: dict[Layout, LayoutMeasurement]

    def speedup_interval(self, seed: int = 0, confidence: float = 0.95) -> dict | None:
        """median(impression step) / median(ROO step) with its interval (ratio_interval's dict), or
        None unless both layouts were measured. Same impressions per step in both layouts, so this
        is also the ratio of impressions per second."""
        imp, roo = self.layouts.get(Layout.IMPRESSION), self.layouts.get(Layout.ROO)
        if imp is None or roo is None:
            return None
        return ratio_interval(imp.timing.samples_ms, roo.timing.samples_ms, confidence=confidence, seed=seed)


def _batch_order(warmup: int, steps: int, n: int) -> list[int]:
    """The batch index of every call `time_steps` makes (warmup, the dropped step, the kept steps).
    Kept step i trains on batch (warmup + i) % n; the dropped step repeats the first kept step's."""
    return [k % n for k in range(warmup)] + [warmup % n] + [(warmup + i) % n for i in range(steps)]


def _stepper(trainer, batches: Sequence, order: list[int]) -> tuple[Callable[[], None], dict]:
    last: dict = {"loss": None}
    if len(batches) == 1:  # nothing to cycle: the step is the trainer's step alone
        (batch,) = batches

        def step() -> None:
            last["loss"] = trainer.step(batch)

        return step, last
    calls = iter(order)

    def step() -> None:
        last["loss"] = trainer.step(batches[next(calls)])

    return step, last


def _measure_run(
    run: LayoutRun, layout: Layout, order: list[int], imps: float, reqs: float, **timing_kw
) -> LayoutMeasurement:
    """One layout's timed steps. A function of its own so that nothing of the trainer (its bound
    `prepare`, `plan`, `capture`, the prepared batches, the stepper) outlives it: the next layout's
    setup frees and resets the peak memory with this layout's model gone."""
    # the per-batch bookkeeping (Trainer.prepare) is built here, outside the timed steps
    prepare = getattr(run.trainer, "prepare", None)
    plan = getattr(run.trainer, "plan", None)  # a GraphTrainer: one bucket for all the batches
    if plan is not None:
        plan(run.batches)
    batches = run.batches if prepare is None else [prepare(b) for b in run.batches]
    capture = getattr(run.trainer, "capture", None)  # a GraphTrainer: its graph
    if capture is not None:
        capture(batches)
    step, last = _stepper(run.trainer, batches, order)
    timing = time_steps(step, region=run.region, **timing_kw)
    extra = run.report(timing) if run.report is not None else {}
    return LayoutMeasurement(layout, timing, imps, reqs, last["loss"], extra)


def measure_layouts(
    layouts: Sequence[Layout | str],
    request_batches: Sequence,
    setup: Callable[[Layout], contextlib.AbstractContextManager[LayoutRun]],
    *,
    warmup: int,
    steps: int,
    device,
) -> Measurement:
    """Time `steps` training steps (after `warmup` + 1 dropped) of every layout, in order.

    `request_batches` count the impressions and requests per step (`num_impressions_total`,
    `num_requests`); `setup(layout)` is entered once per layout and left before the next one
    starts, so one layout's model and batches are freed before the next is built."""
    if not request_batches:
        raise ValueError("measure_layouts needs at least one request batch")
    order = _batch_order(warmup, steps, len(request_batches))
    kept = order[warmup + 1 :]
    imps = statistics.fmean(request_batches[i].num_impressions_total for i in kept)
    reqs = statistics.fmean(request_batches[i].num_requests for i in kept)
    out: dict[Layout, LayoutMeasurement] = {}
    for name in layouts:
        layout = Layout.parse(name)
        with setup(layout) as run:
            if len(run.batches) != len(request_batches):
                raise ValueError(f"layout {layout}: {len(run.batches)} batches for {len(request_batches)} requests")
            out[layout] = _measure_run(run, layout, order, imps, reqs, warmup=warmup, steps=steps, device=device)
        del run  # this layout's model and batches go before the next layout's setup starts
    return Measurement(out)


# --- a preset with `--set` overrides (roo-bench bench, roo-bench profile) ----------------------------
def split_overrides(spec_dict: dict, assignments: list[str]) -> tuple[list[str], list[str]]:
    """(model overrides, spec overrides); an unknown top-level key is one clear error."""
    from roo_ref.model_presets import ModelConfig

    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    model, spec = [], []
    for a in assignments:
        if "=" not in a:
            raise SpecError(f"--set {a!r}: expected key=value, e.g. hstu_layers=2 or history.length.max=64")
        key = a.split("=", 1)[0].strip()
        if key in model_keys:
            model.append(a)
        elif key.split(".")[0] in spec_dict:
            spec.append(a)
        else:
            raise SpecError(
                f"--set {key}: unknown key; model keys: {', '.join(sorted(model_keys))}; "
                f"workload keys: {', '.join(sorted(spec_dict))}"
            )
    return model, spec


@dataclass(frozen=True)
class Workload:
    """What a training-step command runs: the workload spec (a preset's or a spec file's, with the
    `--set` spec overrides), the model config of the model preset `model_preset` (with the `--set`
    model overrides), and where each came from."""

    spec: Any  # WorkloadSpec
    model_config: Any  # roo_ref ModelConfig
    model_preset: str
    model_overrides: list[str]
    spec_overrides: list[str]
    preset: str | None = None  # the workload preset, None for a spec file
    spec_file: str | None = None

    @property
    def name(self) -> str:
        """The workload's name as a record shows it: the preset, else the spec file's spec name."""
        return self.preset or self.spec.name


def resolve_workload(
    preset: str | None, sets: list[str], spec_file: str | None = None, model: str | None = None
) -> Workload:
    """The workload of `--preset NAME` or `--spec FILE`, with `--set` overrides, and the model of
    `--model NAME` (default: the model preset named like the workload; a spec that names none needs
    `--model`, never a silent choice); checked compatible before any data is generated."""
    from roo_ref.models import check_compatible, model_config_for
    from workloads.presets import resolve_spec

    base = resolve_spec(preset, spec_file)
    model_sets, spec_sets = split_overrides(base.to_dict(), sets)
    spec = base.with_overrides(spec_sets) if spec_sets else base
    cfg = model_config_for(spec, model, model_sets)
    check_compatible(spec, cfg)
    return Workload(spec, cfg, model or spec.name, model_sets, spec_sets, preset, spec_file)


def resolve_preset(preset: str, sets: list[str]):
    """(spec, model config, model overrides, spec overrides) of a preset with `--set` overrides."""
    w = resolve_workload(preset, sets)
    return w.spec, w.model_config, w.model_overrides, w.spec_overrides


@dataclass(frozen=True)
class PresetMeasurement:
    workload: Workload
    measurement: Measurement

    @property
    def spec(self):
        return self.workload.spec

    @property
    def model_config(self):
        return self.workload.model_config

    @property
    def spec_overrides(self) -> list[str]:
        return self.workload.spec_overrides


def kernel_options_from_env(environ: Mapping[str, str] | None = None):
    """The Triton attention kernel's options from the ROO_HSTU_* variables (HstuKernelOptions).
    The harness reads them here, once per run, and hands the object to the model and to the
    record's provenance; a bad value is one UserError line."""
    import os

    from roo_ref.kernels.options import HstuKernelOptions

    try:
        return HstuKernelOptions.from_env(os.environ if environ is None else environ)
    except ValueError as e:
        raise UserError(str(e)) from None


def check_graph_device(graph: bool, device_type: str) -> None:
    """CUDA graphs need a CUDA device: anything else is one UserError."""
    if graph and device_type != "cuda":
        raise UserError(f"graph mode (--graph) captures CUDA graphs and needs a CUDA device, not {device_type!r}")


def graph_buckets(trainer) -> list[dict]:
    """The buckets a GraphTrainer captured (their capacities), for a record."""
    return [dataclasses.asdict(b) for b in trainer.buckets]


DATA_DEVICES = ("auto", "cpu")


def make_request_batch(spec, n_requests: int, seed: int, device, data_device: str = "auto"):
    """One seeded request batch on `device`.

    data_device="auto": made where it trains. On a CUDA device by workloads.generator_torch, so the
    batch and its to_impressions() are made on the GPU in milliseconds (no CPU expansion, no copy
    of the impression layout); elsewhere by the numpy reference. "cpu": the numpy reference on the
    CPU, then copied (the way to compare). Both draw from the same distributions; the GPU's draws
    are not the CPU's, so the two give different (equally likely) batches for one seed."""
    import torch

    from workloads.generator import generate
    from workloads.generator_torch import generate_on

    if data_device not in DATA_DEVICES:
        raise UserError(f"data_device={data_device!r}; allowed: {', '.join(DATA_DEVICES)}")
    device = torch.device(device)
    if data_device == "auto" and device.type == "cuda":
        return generate_on(spec, n_requests, seed=seed, device=device)
    b = generate(spec, n_requests, seed=seed)
    return b if device.type == "cpu" else b.to(device)


def measure_preset(
    workload: Workload | str,
    layouts: Sequence[Layout | str],
    device,
    steps: int,
    warmup: int,
    dtype: str,
    sets: Sequence[str] = (),
    seed: int = 0,
    data_device: str = "auto",
    graph: bool = False,
) -> PresetMeasurement:
    """Train `workload` (a resolved Workload, or a preset name with `sets` as its `--set`
    overrides) in each layout on the same few seeded request batches, from the same initial weights
    (same seed), with the same optimizer and dtype; time the steps. `dtype="bf16"` is autocast with
    fp32 master weights. The batches are made per `data_device` (make_request_batch). `graph`: the
    steps are CUDA-graph replays (roo_ref.graph_step; a CUDA device only). A non-finite loss is a
    UserError."""
    import torch

    from roo_ref.models import build_model
    from roo_ref.train import Trainer

    device = torch.device(device)
    check_graph_device(graph, device.type)
    w = resolve_workload(workload, list(sets)) if isinstance(workload, str) else workload
    spec, cfg = w.spec, w.model_config
    if cfg.attention_backend == "triton" and cfg.arch == "hstu" and device.type != "cuda":
        import os

        if os.environ.get("TRITON_INTERPRET") != "1":
            raise UserError("attention_backend=triton needs --device cuda (or TRITON_INTERPRET=1 on CPU)")
    # a few distinct request batches, cycled; every layout sees exactly the same ones
    n_batches = min(warmup + steps, 4)
    req = [make_request_batch(spec, spec.requests_per_batch, seed + i, device, data_device) for i in range(n_batches)]

    options = kernel_options_from_env()

    @contextlib.contextmanager
    def setup(layout: Layout) -> Iterator[LayoutRun]:
        batches = req if layout is Layout.ROO else [b.to_impressions() for b in req]
        model = build_model(spec, w.model_preset, w.model_overrides, device=device, seed=seed, kernel_options=options)
        trainer = Trainer(model, layout, amp_bf16=(dtype == "bf16"), seed=seed)
        if not graph:
            yield LayoutRun(trainer, batches)
            return
        from roo_ref.graph_step import GraphTrainer

        with GraphTrainer(trainer) as gt:
            yield LayoutRun(gt, batches, report=lambda _timing: {"graph_buckets": graph_buckets(gt)})

    m = measure_layouts(layouts, req, setup, warmup=warmup, steps=steps, device=device)
    for layout, r in m.layouts.items():
        if not torch.isfinite(r.loss).all():
            raise UserError(f"layout {layout}: the loss is not finite ({float(r.loss)}); check the overrides")
    return PresetMeasurement(w, m)
