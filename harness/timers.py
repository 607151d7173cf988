"""Step timers and their statistics.

GPU: one pair of CUDA events per step, recorded on the current stream, and a single synchronize at
the end of the timed region — a host sync per step would insert a bubble and make the measured
step slower than the real one. CPU: perf_counter_ns around each step (a CPU step is synchronous;
on CUDA devices used without events we synchronize before reading the clock).

Protocol of `time_steps`: `warmup` untimed steps, then one timed step whose time is reported as
`dropped_ms` but excluded from the statistics (allocator growth, autotuning and lazy init land
there), then `steps` timed steps. The optional `region` context manager (e.g. the NVML sampler)
encloses exactly those `steps` steps, with the device synchronized on entry and exit.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where it is used: the CLI imports this module at start-up
    import numpy as np


@dataclass(frozen=True)
class Stats:
    """Robust summary of step times (milliseconds). Percentiles use linear interpolation (numpy's
    default), so the statistics of a fixed sample are reproducible across numpy versions."""

    median: float
    iqr: float
    p25: float
    p75: float
    min: float
    max: float
    n: int
    mean: float

    @classmethod
    def from_samples(cls, samples: Sequence[float]) -> Stats:
        import numpy as np

        x = np.asarray(samples, dtype=np.float64)
        if x.size == 0:
            raise ValueError("Stats.from_samples needs at least one sample")
        if not np.all(np.isfinite(x)):
            raise ValueError("Stats.from_samples got a non-finite sample")
        p25, med, p75 = np.percentile(x, [25.0, 50.0, 75.0])
        return cls(
            median=float(med),
            iqr=float(p75 - p25),
            p25=float(p25),
            p75=float(p75),
            min=float(x.min()),
            max=float(x.max()),
            n=int(x.size),
            mean=float(x.mean()),
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Timing:
    samples_ms: tuple[float, ...]  # the `steps` kept samples, in order
    dropped_ms: float | None  # the first timed step (excluded); None when steps were not timed
    stats: Stats
    region_s: float  # wall time of the timed region (the kept steps), host clock
    method: str  # "cuda_events" | "perf_counter"

    def to_dict(self) -> dict:
        return {
            "samples_ms": list(self.samples_ms),
            "dropped_ms": self.dropped_ms,
            "stats": self.stats.to_dict(),
            "region_s": self.region_s,
            "method": self.method,
        }


def _is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def _sync(device) -> None:
    if _is_cuda(device):
        import torch

        torch.cuda.synchronize(device)


def time_steps(
    fn: Callable[[], object],
    *,
    warmup: int,
    steps: int,
    device="cpu",
    region: Callable[[], contextlib.AbstractContextManager] | None = None,
    before: Callable[[], object] | None = None,
) -> Timing:
    """Run `fn` warmup + 1 + steps times; return the statistics of the last `steps` (ms).

    `before`, when given, runs untimed before every step (e.g. a barrier that lines the ranks up
    before a collective); with it, CUDA steps are timed one at a time (its host work would
    otherwise sit between the events), so use it only where that per-step sync is wanted."""
    if warmup < 0:
        raise ValueError(f"warmup={warmup} must be >= 0")
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    for _ in range(warmup):
        fn()
    _sync(device)
    cm = region() if region is not None else contextlib.nullcontext()
    if before is not None:
        return _time_each(fn, before, steps, device, cm)
    if _is_cuda(device):
        import torch

        n = steps + 1
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        # The dropped step runs before the region so that the region (energy, power) covers
        # exactly the kept steps; its events are still read after the one final sync.
        starts[0].record()
        fn()
        ends[0].record()
        torch.cuda.synchronize(device)
        with cm:
            t0 = time.perf_counter_ns()
            for i in range(1, n):
                starts[i].record()
                fn()
                ends[i].record()
            torch.cuda.synchronize(device)
            region_s = (time.perf_counter_ns() - t0) / 1e9
        times = [s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)]
        return Timing(tuple(times[1:]), times[0], Stats.from_samples(times[1:]), region_s, "cuda_events")
    t = time.perf_counter_ns()
    fn()
    _sync(device)
    dropped = (time.perf_counter_ns() - t) / 1e6
    samples = []
    with cm:
        t0 = time.perf_counter_ns()
        for _ in range(steps):
            t = time.perf_counter_ns()
            fn()
            _sync(device)
            samples.append((time.perf_counter_ns() - t) / 1e6)
        region_s = (time.perf_counter_ns() - t0) / 1e9
    return Timing(tuple(samples), dropped, Stats.from_samples(samples), region_s, "perf_counter")


def _time_each(fn, before, steps: int, device, cm) -> Timing:
    """One dropped + `steps` kept steps, each after an untimed `before()` and timed on its own."""
    cuda = _is_cuda(device)
    if cuda:
        import torch

    def one() -> float:
        before()
        _sync(device)
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        t = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t) / 1e6

    dropped = one()
    with cm:
        t0 = time.perf_counter_ns()
        samples = [one() for _ in range(steps)]
        region_s = (time.perf_counter_ns() - t0) / 1e9
    method = "cuda_events" if cuda else "perf_counter"
    return Timing(tuple(samples), dropped, Stats.from_samples(samples), region_s, method)


def _median_ratio(a, b, axis=-1):
    import numpy as np

    return np.median(a, axis=axis) / np.median(b, axis=axis)


def ratio_interval(
    a_samples: Sequence[float],
    b_samples: Sequence[float],
    confidence: float = 0.95,
    seed: int = 0,
    n_resamples: int = 2000,
) -> dict:
    """Confidence interval for median(a) / median(b) (e.g. impression step time / ROO step time =
    the ROO speedup). Independent (unpaired) bootstrap, BCa, fixed seed, via scipy.stats.bootstrap;
    where the bootstrap is degenerate (too few samples, no spread) or fails, a t-interval on the
    log ratio by the delta method on the means.

    Returns {"ratio", "lo", "hi", "method", "confidence"}; lo/hi are None where no interval exists
    (fewer than 2 samples on a side)."""
    import numpy as np

    a = np.asarray(a_samples, dtype=np.float64)
    b = np.asarray(b_samples, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("ratio_interval needs samples on both sides")
    ratio = float(np.median(a) / np.median(b))
    out = {"ratio": ratio, "lo": None, "hi": None, "method": "none", "confidence": confidence}
    if a.size < 2 or b.size < 2:
        return out
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        # No spread at all: every resample gives the same ratio; the interval is the point.
        out.update(lo=ratio, hi=ratio, method="exact")
        return out
    if a.size >= 5 and b.size >= 5:
        try:
            from scipy import stats

            kw = dict(paired=False, vectorized=True, n_resamples=n_resamples, confidence_level=confidence, method="BCa")
            try:
                res = stats.bootstrap((a, b), _median_ratio, rng=np.random.default_rng(seed), **kw)
            except TypeError:  # scipy < 1.15 names the generator `random_state`
                res = stats.bootstrap((a, b), _median_ratio, random_state=np.random.default_rng(seed), **kw)
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
            if math.isfinite(lo) and math.isfinite(hi) and lo <= ratio <= hi:
                out.update(lo=lo, hi=hi, method="bootstrap_bca")
                return out
        except Exception:  # noqa: BLE001 — any bootstrap failure falls back to the t-interval
            pass
    return _t_interval(a, b, ratio, confidence, out)


def _t_interval(a: np.ndarray, b: np.ndarray, ratio: float, confidence: float, out: dict) -> dict:
    from scipy import stats

    ma, mb = a.mean(), b.mean()
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    # Delta method: Var(log mean) ~ Var(mean)/mean^2; Welch–Satterthwaite degrees of freedom.
    sa, sb = va / ma**2, vb / mb**2
    se = math.sqrt(sa + sb)
    denom = (sa**2 / (a.size - 1) if sa else 0.0) + (sb**2 / (b.size - 1) if sb else 0.0)
    df = (sa + sb) ** 2 / denom if denom > 0 else float(min(a.size, b.size) - 1)
    t = float(stats.t.ppf(0.5 + confidence / 2, df))
    # Centred on the median ratio (the reported statistic), with the spread of the log mean ratio.
    out.update(lo=ratio * math.exp(-t * se), hi=ratio * math.exp(t * se), method="t_delta_log")
    return out
