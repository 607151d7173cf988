"""asv: GPU benchmarks — skipped without CUDA (NotImplementedError in setup, asv's convention).

Every number comes from the harness, not from asv's wall clock (asv only records what a `track_`
returns):

GpuTraining.track_roo_speedup      impression / ROO median step time of harness.run_point (CUDA
                                   events, warm-up, first step dropped, median of `STEPS`) on the
                                   same impressions = the ROO impressions/s gain, bf16 autocast.
GpuTrainingLayout.track_step_ms    that median step time per layout (ms).
GpuTrainingLayout.track_impressions_per_s   impressions per second per layout.
GpuTrainingLayout.track_peak_mem_gib        torch.cuda.max_memory_allocated per layout.
GpuEnergy.track_j_per_1m_impressions        board energy (NVML total-energy counter over exactly
                                   the timed steps, harness.nvml) per million impressions.
HstuAttention.track_fwd_tflops / track_fwdbwd_tflops
                                   jagged HSTU attention TFLOP/s, mask-aware FLOPs (benchmarks.hstu_kernel's
                                   rule: per head and allowed (i, j) pair 2*d_qk + 2*d_v forward,
                                   backward 2.5x), CUDA-event median of harness.timers.time_steps;
                                   provider `triton` (roo_ref.kernels.hstu_attention) or `torch`
                                   (roo_ref.attention.hstu_attention_torch, padded explicit matmuls).

A broken build raises: the training points first check, in float64 on the GPU, that both layouts
give the same loss and gradients (benchmarks.models.check_equivalence); the Triton attention is
compared against the fp32 reference (GR's rule: its error <= 2x that of the bf16 torch
reference) before it is timed.

asv is not installed on the GPU machine; run the same methods directly:

    PYTHONPATH=. python -m benchmarks.gpu --json > gpu.json     # progress on stderr

ROO_BENCH_GPU_DEVICE=cpu runs a tiny smoke version on the CPU (tests only; no numbers to keep).
"""

from __future__ import annotations

import itertools
import os
import sys
import time
import traceback

from benchmarks.common import SEED, has_cuda, require

try:
    from workloads.layout import LAYOUTS
except ImportError:  # asv runs this suite on older commits too, from before workloads.layout
    LAYOUTS = ("impression", "roo")

DEVICE = os.environ.get("ROO_BENCH_GPU_DEVICE", "cuda")
SMOKE = DEVICE == "cpu"  # tests/test_benchmarks_ci.py exercises every code path on the CPU this way

# (name, preset, model overrides); hstu-ranking runs the Triton attention where it imports
TRAIN_POINTS = (
    [("tiny", "tiny", ("arch=hstu",))]
    if SMOKE
    else [
        ("early-ranking", "early-ranking", ()),
        ("hstu-ranking", "hstu-ranking", ()),
    ]
)
TRAIN_NAMES = [p[0] for p in TRAIN_POINTS]
LAYOUT_NAMES = [str(layout) for layout in LAYOUTS]  # asv parameters: plain strings
DTYPE = "fp32" if SMOKE else "bf16"
WARMUP, STEPS = (1, 3) if SMOKE else (5, 30)

# HSTU attention: H heads of dim D, ~TOKENS tokens per batch, sequences of length L with
# NUM_TARGETS candidates each (benchmarks.hstu_kernel's `uniform` inputs; tritonbench's anchors are at L <= 1024).
ATTN_PROVIDERS = ["triton", "torch"]
ATTN_LENGTHS = [32] if SMOKE else [512, 2048]
ATTN_HEADS, ATTN_DIM, ATTN_TOKENS, NUM_TARGETS = (2, 16, 256, 4) if SMOKE else (4, 128, 131072, 32)


def _progress(msg: str) -> None:
    print(f"[benchmarks.gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _no_device() -> str | None:
    """Why the GPU suite cannot run here, or None."""
    if SMOKE:
        return None
    if not has_cuda():
        return "needs a CUDA device"
    return None


def _triton_attention():
    """roo_ref.kernels.hstu_attention.hstu_attention_triton, or None where it cannot run."""
    if SMOKE and os.environ.get("TRITON_INTERPRET") != "1":
        return None  # on the CPU only through the Triton interpreter (smoke test of this code path)
    try:
        from roo_ref.kernels.hstu_attention import hstu_attention_triton
    except Exception:  # noqa: BLE001 — no triton / kernel not there: the torch provider still runs
        return None
    return hstu_attention_triton


# --- training points (one run_point per preset, shared by the classes below) --------------------
def training_points():
    """The classes' setup_cache: {"skip": reason} without a GPU, else {name: summary of run_point}."""
    reason = _no_device()
    if reason:
        return {"skip": reason}
    import torch

    from benchmarks.models import check_equivalence
    from harness.run_point import PointConfig, run_point

    backend = "triton" if not SMOKE and _triton_attention() is not None else "torch"
    out = {}
    for name, preset, overrides in TRAIN_POINTS:
        t0 = time.time()
        _progress(f"{name}: float64 equivalence check of both layouts on {DEVICE}")
        # small tables and batch: the check is of the computation, the timing below is full size
        check_equivalence(
            preset,
            (*overrides, "max_table_rows=4096", "attention_backend=torch"),
            device=DEVICE,
            dtype=torch.float64,
            requests=2,
            rtol=1e-8,
            atol=1e-10,
        )
        torch.cuda.empty_cache() if DEVICE.startswith("cuda") else None
        _progress(f"{name}: run_point {DTYPE} backend={backend} warmup={WARMUP} steps={STEPS}")
        pc = PointConfig(
            preset=preset,
            model_overrides=tuple(overrides),
            device=DEVICE,
            dtype=DTYPE,
            backend=backend,
            warmup=WARMUP,
            steps=STEPS,
            seed=SEED,
            nvml=True,
            count_flops=False,
        )
        rec = run_point(pc)
        m = rec["metrics"]
        require(rec["status"] == "ok", f"{name}: run_point status {rec['status']}: {rec.get('error')}")
        for layout in LAYOUTS:
            lay = m["layouts"][layout]
            require(SMOKE or lay["timer"] == "cuda_events", f"{name}/{layout}: timer {lay['timer']}")
            require(lay["step_ms"]["median"] > 0 and lay["impressions_per_s"] > 0, f"{name}/{layout}: no time")
        require(m["speedup"] is not None and m["speedup"] > 0, f"{name}: no speedup")
        out[name] = {"backend": backend, "metrics": m, "provenance": rec["provenance"], "config": rec["config"]}
        _progress(
            f"{name}: speedup {m['speedup']:.3f}x  impression {m['layouts']['impression']['step_ms']['median']:.3f} ms"
            f"  roo {m['layouts']['roo']['step_ms']['median']:.3f} ms  ({time.time() - t0:.0f} s)"
        )
    return out


class _TrainingBase:
    timeout = 1800

    # One method of the base class: asv keys setup_cache by module and line, so the subclasses
    # share one run of the training points.
    def setup_cache(self):
        return training_points()

    setup_cache.timeout = 1800  # asv reads the setup_cache timeout from the function

    def _point(self, cache, point):
        if "skip" in cache:
            raise NotImplementedError(cache["skip"])
        return cache[point]


class GpuTraining(_TrainingBase):
    params = [TRAIN_NAMES]
    param_names = ["point"]

    def setup(self, cache, point):
        self.p = self._point(cache, point)

    def track_roo_speedup(self, cache, point):
        return self.p["metrics"]["speedup"]

    track_roo_speedup.unit = "x"


class GpuTrainingLayout(_TrainingBase):
    params = [TRAIN_NAMES, LAYOUT_NAMES]
    param_names = ["point", "layout"]

    def setup(self, cache, point, layout):
        self.lay = self._point(cache, point)["metrics"]["layouts"][layout]

    def track_step_ms(self, cache, point, layout):
        return self.lay["step_ms"]["median"]

    track_step_ms.unit = "ms"

    def track_impressions_per_s(self, cache, point, layout):
        return self.lay["impressions_per_s"]

    track_impressions_per_s.unit = "impressions/s"

    def track_peak_mem_gib(self, cache, point, layout):
        if self.lay["peak_mem_bytes"] is None:  # run_point records it on every CUDA device: smoke mode only
            raise NotImplementedError("no CUDA memory statistics on this device")
        return self.lay["peak_mem_bytes"] / 2**30

    track_peak_mem_gib.unit = "GiB"


class GpuEnergy(_TrainingBase):
    params = [TRAIN_NAMES, LAYOUT_NAMES]
    param_names = ["point", "layout"]

    def setup(self, cache, point, layout):
        energy = self._point(cache, point)["metrics"]["layouts"][layout]["energy"]
        if not energy.get("available"):
            raise NotImplementedError(f"NVML energy not available: {energy.get('reason')}")
        self.energy = energy

    def track_j_per_1m_impressions(self, cache, point, layout):
        v = self.energy.get("j_per_1m_impressions")
        require(v is not None and v > 0, f"NVML available but no energy reading: {self.energy}")
        return v

    track_j_per_1m_impressions.unit = "J/1M impressions"


# --- HSTU attention -----------------------------------------------------------------------------
def _flop_rule():
    """(lengths(L, tokens), mask_pairs(lengths, num_targets)) — benchmarks.hstu_kernel's where it exists, so the
    two report the same FLOPs."""
    try:
        from benchmarks.hstu_kernel.inputs import mask_pairs
    except Exception:  # noqa: BLE001 — the kernel benchmark is absent: the same rule, inline

        def mask_pairs(lengths, num_targets) -> int:
            h = lengths - num_targets
            return int((h * (h + 1) // 2 + num_targets * h + num_targets).sum())

    return mask_pairs


class HstuAttention:
    params = [ATTN_PROVIDERS, ATTN_LENGTHS]
    param_names = ["provider", "L"]
    timeout = 600

    def setup(self, provider, L):
        reason = _no_device()
        if reason:
            raise NotImplementedError(reason)
        import torch

        from roo_ref.attention import hstu_attention_torch

        if provider == "triton":
            fn = _triton_attention()
            if fn is None:
                raise NotImplementedError("roo_ref.kernels.hstu_attention (Triton) not importable here")
        else:
            fn = hstu_attention_torch
        dtype = torch.float32 if SMOKE else torch.bfloat16
        dev = torch.device(DEVICE)
        B = max(1, ATTN_TOKENS // L)
        lengths = torch.full((B,), L, dtype=torch.int64)
        nt = lengths.clamp(max=NUM_TARGETS)
        offsets = torch.zeros(B + 1, dtype=torch.int64)
        offsets[1:] = lengths.cumsum(0)
        T, H, D = int(offsets[-1]), ATTN_HEADS, ATTN_DIM
        g = torch.Generator(device="cpu").manual_seed(SEED)
        q, k, v, dout = (torch.randn(T, H, D, generator=g).to(dev, dtype) for _ in range(4))
        for t in (q, k, v):
            t.requires_grad_(True)
        self.args = (offsets.to(dev), L, 1.0 / D**0.5, float(L), nt.to(dev))
        self.fwd_flops = _flop_rule()(lengths, nt) * H * (2 * D + 2 * D)
        self.q, self.k, self.v, self.dout, self.fn, self.dev = q, k, v, dout, fn, dev
        if provider == "triton":
            self._check_against_reference(hstu_attention_torch)

    def _check_against_reference(self, ref):
        """Forward on the first (up to) 4 sequences: error vs the fp32 reference <= 2x (+ a few ulp)
        that of the same-precision torch reference (GR's rule for low-precision fast paths)."""
        import torch

        offsets, L, alpha, norm, nt = self.args
        nseq = min(4, nt.numel())
        n = int(offsets[nseq])
        sub = (offsets[: nseq + 1], L, alpha, norm, nt[:nseq])
        q, k, v = (t.detach()[:n] for t in (self.q, self.k, self.v))
        with torch.no_grad():
            exact = ref(q.float(), k.float(), v.float(), *sub)
            err_fast = (self.fn(q, k, v, *sub).float() - exact).abs().max().item()
            err_ref = (ref(q, k, v, *sub).float() - exact).abs().max().item()
        scale = exact.abs().max().item()
        require(
            err_fast <= 2 * err_ref + 1e-6 * scale,
            f"triton attention error {err_fast:.3g} > 2 x torch bf16 reference error {err_ref:.3g}",
        )

    def _tflops(self, mode: str) -> float:
        import torch

        from harness.timers import time_steps

        q, k, v, dout = self.q, self.k, self.v, self.dout

        if mode == "fwd":

            def step():
                with torch.no_grad():
                    return self.fn(q, k, v, *self.args)

            mult = 1.0
        else:

            def step():
                for t in (q, k, v):
                    t.grad = None
                self.fn(q, k, v, *self.args).backward(dout)

            mult = 3.5  # backward = 2.5x forward (benchmarks.hstu_kernel's rule)
        t = time_steps(step, warmup=3, steps=5 if SMOKE else 30, device=self.dev)
        require(SMOKE or t.method == "cuda_events", f"timer {t.method}")
        ms = t.stats.median
        require(ms > 0, "zero attention time")
        return self.fwd_flops * mult / (ms * 1e-3) / 1e12

    def track_fwd_tflops(self, provider, L):
        return self._tflops("fwd")

    track_fwd_tflops.unit = "TFLOP/s"

    def track_fwdbwd_tflops(self, provider, L):
        return self._tflops("fwdbwd")

    track_fwdbwd_tflops.unit = "TFLOP/s"

    def teardown(self, provider, L):
        import torch

        for name in ("q", "k", "v", "dout"):  # asv also tears down after a skipped setup
            self.__dict__.pop(name, None)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# --- direct runner (no asv) ---------------------------------------------------------------------
def _benchmark_classes():
    mod = sys.modules[__name__]
    return [
        obj
        for name, obj in vars(mod).items()
        if isinstance(obj, type)
        and not name.startswith("_")
        and obj.__module__ == mod.__name__
        and any(m.startswith("track_") for m in dir(obj))
    ]


def _cached(cls, caches: dict):
    """("ok", value) or ("error", text) of the class's setup_cache, run once per cache function
    (the inherited function is the key: every class that shares it shares one run), or None."""
    cache_fn = getattr(cls, "setup_cache", None)
    if cache_fn is None:
        return None
    if cache_fn not in caches:
        try:
            caches[cache_fn] = ("ok", cache_fn(cls()))
        except Exception as e:  # noqa: BLE001 — every benchmark that needs it fails
            caches[cache_fn] = ("error", f"setup_cache: {type(e).__name__}: {e}\n{traceback.format_exc()}")
    return caches[cache_fn]


def _track(obj, cls, m: str, lead: tuple, combo: tuple, params: dict) -> dict:
    """One track_ method's result row: its value, or why it was skipped or failed."""
    fn = getattr(obj, m)
    row = {"benchmark": f"{cls.__name__}.{m}", "params": params, "unit": getattr(fn, "unit", "")}
    t0 = time.time()
    try:
        row["value"] = float(fn(*lead, *combo))
        _progress(f"{row['benchmark']} {params}: {row['value']:.6g} {row['unit']} ({time.time() - t0:.1f} s)")
    except NotImplementedError as e:
        row["skipped"] = str(e)
        _progress(f"{row['benchmark']} {params}: skipped ({e})")
    except Exception as e:  # noqa: BLE001
        row["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        _progress(f"{row['benchmark']} {params}: FAILED: {type(e).__name__}: {e}")
    return row


def _run_combo(cls, methods: list[str], lead: tuple, combo: tuple, params: dict) -> list[dict]:
    """setup, every method, teardown of one parameter combination, as asv does it."""
    obj = cls()
    try:
        if hasattr(obj, "setup"):
            obj.setup(*lead, *combo)
    except NotImplementedError as e:
        _progress(f"{cls.__name__} {params}: skipped ({e})")
        return [{"benchmark": f"{cls.__name__}.{m}", "params": params, "skipped": str(e)} for m in methods]
    except Exception as e:  # noqa: BLE001
        _progress(f"{cls.__name__} {params}: setup FAILED: {type(e).__name__}: {e}")
        err = f"setup: {type(e).__name__}: {e}\n{traceback.format_exc()}"
        return [{"benchmark": f"{cls.__name__}.{m}", "params": params, "error": err} for m in methods]
    try:
        return [_track(obj, cls, m, lead, combo, params) for m in methods]
    finally:
        if hasattr(obj, "teardown"):
            try:
                obj.teardown(*lead, *combo)
            except Exception:  # noqa: BLE001 — a teardown problem must not hide the numbers
                pass


def run_all(only: list[str] | None = None) -> dict:
    """Every track_ method of this module, the way asv would call it (setup_cache once per cache
    function, setup per parameter combination, NotImplementedError in setup = skipped)."""
    caches: dict = {}
    results = []
    for cls in _benchmark_classes():
        methods = sorted(m for m in dir(cls) if m.startswith("track_"))
        methods = [m for m in methods if not only or any(o in f"{cls.__name__}.{m}" for o in only)]
        if not methods:
            continue
        names = getattr(cls, "param_names", [])
        combos = list(itertools.product(*cls.params)) if getattr(cls, "params", None) else [()]
        cached = _cached(cls, caches)
        if cached is not None and cached[0] == "error":
            for combo in combos:
                params = dict(zip(names, combo, strict=True))
                results += [{"benchmark": f"{cls.__name__}.{m}", "params": params, "error": cached[1]} for m in methods]
            continue
        lead = (cached[1],) if cached is not None else ()
        for combo in combos:
            results += _run_combo(cls, methods, lead, combo, dict(zip(names, combo, strict=True)))
    points = {}
    for _status, val in caches.values():
        if isinstance(val, dict) and "skip" not in val:
            points.update(val)
    return {"results": results, "training_points": points}


def _environment() -> dict:
    import platform

    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": DEVICE, "smoke": SMOKE}
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        env["triton"] = None
    if torch.cuda.is_available() and not SMOKE:
        env["device_name"] = torch.cuda.get_device_name()
    try:
        from harness.provenance import git_state

        env["git_sha"], env["git_dirty"] = git_state()
    except Exception:  # noqa: BLE001
        pass
    return env


def main(argv=None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description="run the GPU track_ benchmarks without asv"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress goes to stderr)")
    ap.add_argument("--only", action="append", default=[], help="Class.method substring (repeatable)")
    args = ap.parse_args(argv)
    t0 = time.time()
    env = _environment()
    _progress(f"start: {env}")
    out = run_all(args.only)
    out["environment"] = env
    out["wall_s"] = time.time() - t0
    errors = [r for r in out["results"] if "error" in r]
    out["errors"] = len(errors)
    out["measured"] = sum("value" in r for r in out["results"])
    out["skipped"] = sum("skipped" in r for r in out["results"])
    if args.json:
        print(json.dumps(out, default=str))
    else:
        for r in out["results"]:
            val = (
                f"{r['value']:.6g} {r['unit']}"
                if "value" in r
                else (f"skipped: {r['skipped']}" if "skipped" in r else "FAILED: " + r["error"].splitlines()[0])
            )
            print(f"{r['benchmark']:45s} {json.dumps(r['params']):45s} {val}")
    _progress(
        f"done in {out['wall_s']:.0f} s: {out['measured']} measured, {out['skipped']} skipped, {out['errors']} failed"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
