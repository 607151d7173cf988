"""Where a training step's time goes: torch.profiler over a few steps of one layout.

`profile_layout(...)` runs warm-up steps, then profiles `steps` steps (CPU + CUDA activities) and
returns a summary per step:
- `wall_ms`: host wall time per step (synchronized at the end of the profiled region);
- `device_busy_ms`: the sum of GPU kernel + memcpy/memset time (what the GPU actually did);
- `launches`, `syncs`: CUDA launch and synchronizing runtime calls (cudaStreamSynchronize,
  cudaDeviceSynchronize, blocking cudaMemcpy) — a host-bound step shows wall >> device_busy;
- `aten_ops`: how many aten operators ran (eager dispatch cost scales with it);
- `busy_ms`, `busy_share`, `busy_source`: what the device did per step and its share of the wall
  time — on a GPU the kernel + memcpy/memset time (= `device_busy_ms`), on the CPU the self time of
  the aten operators (the step's compute; the rest of the wall time is Python and dispatch);
- `components_ms`: that busy time split by the models' profiler ranges (`COMPONENTS`: roo/user,
  roo/item, roo/interaction, roo/loss, roo/optimizer; "other" is what no range covers), forward and
  backward: a backward op is charged to the range of the forward op that created its autograd node
  (the profiler's sequence number). None with `components_reason` when the step has no such ranges;
- `optimizer_sides_ms`: the part of the optimizer's time that is a side's work ({"user", "item"}),
  from the ranges roo/optimizer/<sides> around each embedding table's update (a range's busy time
  times the share it names; roo_ref.models.regions says how shares are set). Still counted as
  optimizer time in `components_ms`; `time_ideal` counts the user part as user-side work;
- `components_top`: per component, its kernels with the most GPU time (GPU profiles only);
- `top_device` / `top_cpu`: the operators and kernels with the most self time (the user ranges'
  GPU-timeline copies left out of `top_device`: they span gaps too).

The numbers come from the profiler, which itself adds overhead per op (a few µs): use it to find
where the time goes, and harness.run_point (CUDA events, no profiler) for the step time itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable

LAUNCH_NAMES = (
    "cudaLaunchKernel",
    "cuLaunchKernel",
    "cudaLaunchKernelExC",
    "cuLaunchKernelEx",
    "cudaLaunchCooperativeKernel",
    "cudaGraphLaunch",  # a CUDA-graph replay (--graph): one launch for the whole step
)
SYNC_NAMES = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
# The models' record_function ranges, one per component (roo_ref.models); the harness splits the
# busy time by them. "other": busy time outside every range (e.g. the autograd engine's own ops).
COMPONENTS = ("user", "item", "interaction", "loss", "optimizer")
RANGE_PREFIX = "roo/"
RANGES = {RANGE_PREFIX + c: c for c in COMPONENTS}
BACKWARD_PREFIX = "autograd::engine::evaluate_function"
# A table update's range inside roo/optimizer: "roo/optimizer/user", "roo/optimizer/item" or
# "roo/optimizer/user=0.9,item=0.1" (roo_ref.models.regions.optimizer_range).
OPTIMIZER_SIDE_PREFIX = RANGE_PREFIX + "optimizer/"
SIDES = ("user", "item")


def side_shares(name: str) -> dict[str, float] | None:
    """{side: share} named by an optimizer side range, None for any other name."""
    if not name.startswith(OPTIMIZER_SIDE_PREFIX):
        return None
    out: dict[str, float] = {}
    for part in name[len(OPTIMIZER_SIDE_PREFIX) :].split(","):
        side, eq, share = part.partition("=")
        try:
            out[side] = float(share) if eq else 1.0
        except ValueError:
            return None
        if side not in SIDES or not 0.0 <= out[side] <= 1.0:
            return None
    return out


def _range_component(name: str) -> str | None:
    if name in RANGES:
        return RANGES[name]
    return "optimizer" if side_shares(name) is not None else None


def self_device_us(evt) -> float:
    """Self GPU time (µs) of a profiler event or key average; 0 where it has none. torch >= 2.4
    names it self_device_time_total, older releases self_cuda_time_total."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        v = getattr(evt, name, None)
        if v is not None:
            return float(v)
    return 0.0


def _is_cpu(evt) -> bool:
    return str(getattr(evt, "device_type", "")).endswith("CPU")


STEP_RANGE = "roo/step"  # profile_steps' range around each step: syncs outside it are the harness's


def _syncs_in_steps(events) -> int:
    """Synchronizing runtime calls inside a step's range (profile_steps marks each step): the
    closing synchronize that ends the profiled region, and the profiler's own, are not the step's.
    Every one when no step range exists (a profile made elsewhere)."""
    syncs = [e for e in events if e.name in SYNC_NAMES]
    if not any(e.name == STEP_RANGE for e in events):
        return len(syncs)
    return sum(1 for e in syncs if any(a.name == STEP_RANGE for a in _ancestors(e.cpu_parent)))


def _ancestors(evt):
    while evt is not None:
        yield evt
        evt = evt.cpu_parent


def _forward_range(evt) -> str | None:
    """The component of the nearest enclosing range, or None; "" inside a backward op."""
    for a in _ancestors(evt):
        comp = _range_component(a.name)
        if comp is not None:
            return comp
        if a.name.startswith(BACKWARD_PREFIX):
            return ""
    return None


def _component(evt, by_seq: dict[int, str]) -> str:
    for a in _ancestors(evt):
        comp = _range_component(a.name)
        if comp is not None:
            return comp
        if a.name.startswith(BACKWARD_PREFIX):
            return by_seq.get(a.sequence_nr, "other")
    return "other"


def _optimizer_shares(evt) -> dict[str, float]:
    """The shares of the innermost optimizer side range around `evt` ({} outside every one)."""
    for a in _ancestors(evt):
        shares = side_shares(a.name)
        if shares is not None:
            return shares
    return {}


def _is_kernel(evt) -> bool:
    """A device activity (kernel, memcpy, memset), not a user range's GPU-timeline copy."""
    return str(getattr(evt, "device_type", "")).endswith("CUDA") and not getattr(evt, "is_user_annotation", False)


COMPONENT_TOP = 8  # kernels kept per component in `components_top`


def _kernels_by_component(cpu: list, by_seq: dict[int, str], steps: int) -> dict[str, list[dict]]:
    """{component: its COMPONENT_TOP kernels by GPU time, ms per step}: the kernels each operator
    launched, charged as `breakdown` charges the operator (a range's GPU-timeline copy left out)."""
    acc: dict[str, dict[str, float]] = {}
    for e in cpu:
        ks = [k for k in e.kernels if e.is_legacy or k.name != e.name]
        if ks:
            per = acc.setdefault(_component(e, by_seq), {})
            for k in ks:
                per[k.name] = per.get(k.name, 0.0) + float(k.duration)
    return {
        comp: [
            {"name": n, "ms": us / steps / 1e3} for n, us in sorted(per.items(), key=lambda x: -x[1])[:COMPONENT_TOP]
        ]
        for comp, per in acc.items()
    }


def breakdown(events, steps: int, cuda: bool) -> dict:
    """Busy time per step (ms: `busy_ms`) and its split by component (`components_ms`, or None
    and `components_reason`), from the profiler's events.

    The busy time of a CPU-side event is what ran on the device for it alone: on a GPU the kernels
    it launched, on the CPU its self time when it is an aten operator. The profiler also hangs a
    range's GPU-timeline copy (same name, spanning the range's kernels and the gaps between them)
    on the range as if it were a kernel: that one is not busy time. A kernel must be launched under
    an operator to be charged (roo_ref.kernels.profiling wraps the Triton launches in one); one that
    is not lands in "other" (`summarize`)."""
    cpu = [e for e in events if _is_cpu(e)]

    def busy_us(e) -> float:
        if cuda:
            return float(sum(k.duration for k in e.kernels if e.is_legacy or k.name != e.name))
        return float(e.self_cpu_time_total) if e.name.startswith("aten::") else 0.0

    by_seq: dict[int, str] = {}
    for e in cpu:
        comp = _forward_range(e)
        if comp and e.sequence_nr >= 0:
            by_seq.setdefault(e.sequence_nr, comp)
    has_ranges = any(_range_component(e.name) is not None for e in cpu)
    totals = dict.fromkeys((*COMPONENTS, "other"), 0.0)
    sides = dict.fromkeys(SIDES, 0.0)
    for e in cpu:
        us = busy_us(e)
        if us and has_ranges:
            comp = _component(e, by_seq)
            totals[comp] += us
            if comp == "optimizer":
                for side, share in _optimizer_shares(e).items():
                    sides[side] += us * share
        elif us:
            totals["other"] += us
    out: dict = {"components_ms": None, "components_reason": None, "optimizer_sides_ms": None, "components_top": None}
    if has_ranges:
        out["components_ms"] = {k: v / steps / 1e3 for k, v in totals.items()}
        out["optimizer_sides_ms"] = {k: v / steps / 1e3 for k, v in sides.items()}
        out["components_top"] = _kernels_by_component(cpu, by_seq, steps) if cuda else None
    else:
        out["components_reason"] = (
            f"no {RANGE_PREFIX}* profiler ranges in the step (the model labels none of "
            f"{', '.join(RANGE_PREFIX + c for c in COMPONENTS)})"
        )
    out["busy_ms"] = sum(totals.values()) / steps / 1e3
    return out


def summarize(prof, steps: int, wall_s: float, top: int = 25, cuda: bool | None = None) -> dict:
    """A per-step summary of a finished torch.profiler.profile (`cuda`: whether the GPU was
    profiled; None: whether the profile holds any GPU event)."""
    avgs = prof.key_averages()
    events = prof.events()
    launches = sum(e.count for e in avgs if e.key in LAUNCH_NAMES)
    syncs = _syncs_in_steps(prof.events())
    aten = sum(e.count for e in avgs if e.key.startswith("aten::"))
    # device-side events: kernels, memcpy, memset — but not the GPU-timeline copies of user
    # annotations (e.g. "Optimizer.step#...", which span their kernels and would count them twice)
    device_us = sum(float(e.device_time_total or 0.0) for e in events if _is_kernel(e))
    if cuda is None:
        cuda = device_us > 0
    parts = breakdown(events, steps, cuda)
    attributed_ms = parts.pop("busy_ms")
    busy_ms = device_us / steps / 1e3 if cuda else attributed_ms
    comps = parts["components_ms"]
    if comps is not None and cuda:  # GPU time neither an operator nor a range claims: other
        comps["other"] += max(0.0, busy_ms - attributed_ms)
    wall_ms = wall_s / steps * 1e3
    # a user range's GPU-timeline copy spans its kernels and the gaps between them: not a kernel
    spans = {e.name for e in events if getattr(e, "is_user_annotation", False)}
    rows_dev = sorted((e for e in avgs if e.key not in spans), key=self_device_us, reverse=True)[:top]
    rows_cpu = sorted(avgs, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]

    def row(e) -> dict:
        return {
            "name": e.key,
            "calls_per_step": e.count / steps,
            "self_device_ms_per_step": self_device_us(e) / steps / 1e3,
            "self_cpu_ms_per_step": e.self_cpu_time_total / steps / 1e3,
        }

    return {
        "steps": steps,
        "wall_ms": wall_ms,
        "device_busy_ms": device_us / steps / 1e3,
        "busy_ms": busy_ms,
        "busy_share": busy_ms / wall_ms if wall_ms > 0 else None,
        "busy_source": "cuda" if cuda else "cpu",
        **parts,
        "launches": launches / steps,
        "syncs": syncs / steps,
        "aten_ops": aten / steps,
        "top_device": [row(e) for e in rows_dev if self_device_us(e) > 0],
        "top_cpu": [row(e) for e in rows_cpu],
    }


def profile_steps(
    step: Callable[[], object], *, warmup: int, steps: int, cuda: bool, trace_path: str | None = None, top: int = 25
) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts, record_shapes=False) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            with record_function(STEP_RANGE):
                step()
        sync()
        wall = time.perf_counter() - t0
    if trace_path:
        prof.export_chrome_trace(trace_path)
    return summarize(prof, steps, wall, top, cuda=cuda)


def format_summary(layout: str, s: dict, top: int = 12) -> str:
    lines = [
        f"== {layout}: wall {s['wall_ms']:.2f} ms/step, GPU busy {s['device_busy_ms']:.2f} ms/step, "
        f"{s['launches']:.0f} launches, {s['syncs']:.0f} syncs, {s['aten_ops']:.0f} aten ops per step"
    ]
    if s.get("components_ms"):
        split = ", ".join(f"{k} {v:.2f}" for k, v in s["components_ms"].items())
        lines.append(f"   {s['busy_source']} busy {s['busy_ms']:.2f} ms/step by component (ms): {split}")
        sides = s.get("optimizer_sides_ms") or {}
        if any(sides.values()):
            lines.append("   of the optimizer, side work (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in sides.items()))
    if s["top_device"]:
        lines.append("   top self GPU time (ms/step, calls/step):")
        lines += [
            f"   {r['self_device_ms_per_step']:9.3f} {r['calls_per_step']:7.1f}  {r['name'][:100]}"
            for r in s["top_device"][:top]
        ]
    lines.append("   top self CPU time (ms/step, calls/step):")
    lines += [
        f"   {r['self_cpu_ms_per_step']:9.3f} {r['calls_per_step']:7.1f}  {r['name'][:100]}" for r in s["top_cpu"][:top]
    ]
    return "\n".join(lines)


def count_flops_and_ops(step: Callable[[], object]) -> tuple[float | None, int | None]:
    """(FLOPs, aten ops) of one training step (forward + backward + optimizer), in one pass.

    FLOPs by torch's FlopCounterMode: what the torch ops do; the reference attention's padded
    matmuls are counted dense (masked work included); a Triton kernel is invisible to it.
    Aten ops: every op that reaches the dispatcher below autograd, on the point's device (a CPU
    step decomposes differently: ~73k ops for an early-ranking step vs ~1.3k on an H100). Each costs
    host time whether its kernel is big or tiny: an eager step with many small ops is bound by the
    host (docs/performance.md), which a FLOP/byte roofline does not price."""
    try:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None, None

    class OpCounter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            return func(*args, **(kwargs or {}))

    counter = OpCounter()
    with FlopCounterMode(display=False) as fc, counter:
        step()
    return float(fc.get_total_flops()), counter.ops


# --- the point record's fields (harness.run_point) ---------------------------------------------------
PROFILE_TOP = 20  # kernels / operators kept per layout in a point record


def layout_fields(summary: dict | None, reason: str | None) -> dict:
    """A point record's per-layout profile fields from a `profile_steps` summary (None: not
    profiled, `reason` says why)."""
    s = summary or {}
    comps = s.get("components_ms")
    return {
        "profile_steps": s.get("steps"),
        "profile_reason": None if summary is not None else reason,
        "host_wall_ms": s.get("wall_ms"),
        "busy_ms": s.get("busy_ms"),
        "busy_share": s.get("busy_share"),
        "busy_source": s.get("busy_source"),
        "launches_per_step": s.get("launches"),
        "syncs_per_step": s.get("syncs"),
        "component_ms": comps,
        "component_reason": s.get("components_reason") if summary is not None else reason,
        "optimizer_side_ms": s.get("optimizer_sides_ms"),
        "component_top": s.get("components_top"),
        "profile_top": {"device": s.get("top_device", [])[:PROFILE_TOP], "cpu": s.get("top_cpu", [])[:PROFILE_TOP]}
        if summary is not None
        else None,
    }


def mfu(flops_per_step: float | None, step_ms: float, matmul_flops: float | None) -> tuple[float | None, str | None]:
    """(model FLOPs utilization, None) or (None, why not): FLOPs per step / (step time x the matmul
    rate measured in the same run)."""
    if not matmul_flops:
        return None, "no matmul rate (profile off or calibration failed)"
    if not flops_per_step:
        return None, "no FLOP count for this step (cost model unavailable and count_flops = false)"
    if not step_ms > 0:
        return None, "step time is 0"
    return flops_per_step / (step_ms / 1e3 * matmul_flops), None


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


def time_ideal(imp: dict, k: float) -> tuple[float | None, float | None, str | None]:
    """(s_u, time-ideal speedup, reason): s_u = the user side's share of the impression layout's
    busy time (profiled per component; the user side's work includes the optimizer's updates of
    the rows user-side lookups touched, `optimizer_side_ms`), time-ideal = 1 / (s_u / k + 1 - s_u)."""
    comps, busy = imp.get("component_ms"), imp.get("busy_ms")
    if comps is None:
        return None, None, imp.get("component_reason") or imp.get("profile_reason") or "not profiled"
    if not busy:
        return None, None, "the impression layout's profile shows no busy time"
    user = comps["user"] + (imp.get("optimizer_side_ms") or {}).get("user", 0.0)
    # over the larger of the busy time and the components' sum: the profiler can link a kernel to
    # more than one operator, and then the components add up to more than the device was busy
    s_u = min(1.0, user / max(busy, sum(comps.values())))
    return s_u, 1.0 / (s_u / k + 1.0 - s_u), None


def point_fields(layouts: dict, k: float, speedup: float | None) -> dict:
    """The point's ideals beside its measured speedup: FLOP-ideal (ratio of FLOPs per step, the
    analytic ones else the counted ones), byte-ideal (ratio of the cost model's bytes per step) and
    time-ideal (from the profiled user-side share s_u), and measured / time-ideal."""
    imp, roo = layouts.get("impression"), layouts.get("roo")
    out: dict = {
        "impressions_per_request": k,
        "s_u": None,
        "s_u_reason": "needs both layouts",
        "time_ideal_speedup": None,
        "flop_ideal_speedup": None,
        "byte_ideal_speedup": None,
        "speedup_vs_time_ideal": None,
    }
    if imp is None or roo is None:
        return out
    out["s_u"], out["time_ideal_speedup"], out["s_u_reason"] = time_ideal(imp, k)
    flops = "flops_per_step" if imp.get("flops_per_step") and roo.get("flops_per_step") else "flops_counted_per_step"
    out["flop_ideal_speedup"] = _ratio(imp.get(flops), roo.get(flops))
    out["byte_ideal_speedup"] = _ratio(
        (imp.get("cost") or {}).get("bytes_per_step"), (roo.get("cost") or {}).get("bytes_per_step")
    )
    out["speedup_vs_time_ideal"] = _ratio(speedup, out["time_ideal_speedup"])
    return out
