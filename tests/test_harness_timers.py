"""harness.timers: statistics on known samples, the warm-up / dropped-step protocol, ratio intervals;
and the training loop built on them (harness.measure)."""

import time

import numpy as np
import pytest

from harness.timers import Stats, ratio_interval, time_steps


def test_stats_on_known_samples():
    s = Stats.from_samples([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s.median, s.p25, s.p75, s.iqr, s.min, s.max, s.n, s.mean) == (
        3.0,
        2.0,
        4.0,
        2.0,
        1.0,
        5.0,
        5,
        3.0,
    )
    # linear interpolation between order statistics (numpy's default), as documented
    s = Stats.from_samples([1, 2, 3, 4])
    assert (s.median, s.p25, s.p75, s.iqr) == (2.5, 1.75, 3.25, 1.5)
    assert Stats.from_samples([7.5]).to_dict() == {
        "median": 7.5,
        "iqr": 0.0,
        "p25": 7.5,
        "p75": 7.5,
        "min": 7.5,
        "max": 7.5,
        "n": 1,
        "mean": 7.5,
    }


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_stats_rejects_empty_and_non_finite(bad):
    with pytest.raises(ValueError):
        Stats.from_samples(bad)


def test_time_steps_protocol_cpu():
    calls = []
    entered = {}

    def fn():
        calls.append(1)
        if len(calls) == 4:  # warmup=3, so this is the first timed step: it must be dropped
            time.sleep(0.05)

    class Region:
        def __enter__(self):
            entered["enter"] = len(calls)

        def __exit__(self, *a):
            entered["exit"] = len(calls)

    t = time_steps(fn, warmup=3, steps=5, device="cpu", region=Region)
    assert len(calls) == 3 + 1 + 5
    assert entered == {"enter": 4, "exit": 9}  # the region holds exactly the kept steps
    assert len(t.samples_ms) == 5 and t.stats.n == 5
    assert t.dropped_ms >= 50.0 and max(t.samples_ms) < 50.0
    assert t.method == "perf_counter"
    assert t.region_s * 1e3 >= sum(t.samples_ms)


def test_time_steps_rejects_bad_counts():
    with pytest.raises(ValueError):
        time_steps(lambda: None, warmup=-1, steps=3)
    with pytest.raises(ValueError):
        time_steps(lambda: None, warmup=0, steps=0)


def test_ratio_interval_bootstrap_contains_truth_and_is_seeded():
    rng = np.random.default_rng(7)
    b = 10.0 * np.exp(rng.normal(0, 0.02, 40))
    a = 15.0 * np.exp(rng.normal(0, 0.02, 40))  # true median ratio 1.5
    r = ratio_interval(a, b, seed=3)
    assert r["method"] == "bootstrap_bca"
    assert r["ratio"] == pytest.approx(np.median(a) / np.median(b))
    assert r["lo"] < r["ratio"] < r["hi"]
    assert r["hi"] - r["lo"] < 0.05
    assert ratio_interval(a, b, seed=3) == r  # fixed seed: the same interval every time


def test_ratio_interval_coverage():
    """A 95% interval must cover the true ratio in about 95% of seeded replicates."""
    rng = np.random.default_rng(11)
    hits = 0
    for i in range(40):
        b = 10.0 * np.exp(rng.normal(0, 0.05, 25))
        a = 15.0 * np.exp(rng.normal(0, 0.05, 25))
        r = ratio_interval(a, b, seed=i, n_resamples=1000)
        hits += r["lo"] < 1.5 < r["hi"]
    assert hits >= 34


def test_ratio_interval_small_samples_use_t_interval():
    r = ratio_interval([2.0, 2.2, 2.1], [1.0, 1.1, 0.9])
    assert r["method"] == "t_delta_log"
    assert r["ratio"] == pytest.approx(2.1)
    assert r["lo"] < 2.1 < r["hi"]


def test_ratio_interval_degenerate_cases():
    assert ratio_interval([3.0] * 6, [1.5] * 6) == {
        "ratio": 2.0,
        "lo": 2.0,
        "hi": 2.0,
        "method": "exact",
        "confidence": 0.95,
    }
    r = ratio_interval([3.0], [1.0, 2.0])
    assert r["ratio"] == 2.0 and r["lo"] is None and r["hi"] is None and r["method"] == "none"
    with pytest.raises(ValueError):
        ratio_interval([], [1.0])


def test_measure_layouts_same_batches_in_every_layout():
    """harness.measure's loop: each layout trains on the same request batches in the same order
    (kept step i on batch (warmup + i) % n, the dropped step repeating the first kept one), one
    layout's setup is left before the next is entered, and the region encloses the kept steps."""
    import contextlib
    from types import SimpleNamespace

    from harness.measure import LayoutRun, measure_layouts
    from workloads.layout import Layout

    reqs = [SimpleNamespace(num_impressions_total=10 * (i + 1), num_requests=i + 1, i=i) for i in range(3)]
    events, seen = [], {}

    class Trainer:
        def __init__(self, layout):
            self.layout = layout

        def step(self, batch):
            seen.setdefault(self.layout, []).append(batch.i)
            return 0.0

    @contextlib.contextmanager
    def region():
        events.append(("region", len(seen[events[-1][1]])))
        yield
        events.append(("region_end", len(seen[events[-2][1]])))

    @contextlib.contextmanager
    def setup(layout):
        events.append(("enter", layout))
        yield LayoutRun(Trainer(layout), reqs, region=region, report=lambda t: {"n": t.stats.n})
        events.append(("exit", layout))

    m = measure_layouts(["impression", "roo"], reqs, setup, warmup=2, steps=5, device="cpu")
    order = [0, 1, 2, 2, 0, 1, 2, 0]  # warmup 0 1, dropped 2, kept 2 0 1 2 0
    assert seen == {Layout.IMPRESSION: order, Layout.ROO: order}
    assert [e for e in events if e[0] in ("enter", "exit")] == [
        ("enter", Layout.IMPRESSION),
        ("exit", Layout.IMPRESSION),
        ("enter", Layout.ROO),
        ("exit", Layout.ROO),
    ]
    assert [e for e in events if e[0].startswith("region")] == [("region", 3), ("region_end", 8)] * 2
    for r in m.layouts.values():
        assert r.impressions_per_step == pytest.approx((30 + 10 + 20 + 30 + 10) / 5)
        assert r.requests_per_step == pytest.approx((3 + 1 + 2 + 3 + 1) / 5)
        assert r.extra == {"n": 5} and r.timing.stats.n == 5 and r.loss == 0.0
        assert r.impressions_per_s == pytest.approx(r.impressions_per_step / (r.stats.median / 1e3))
    ci = m.speedup_interval(seed=0)
    assert ci["lo"] <= ci["ratio"] <= ci["hi"]
    one = measure_layouts(["roo"], reqs, setup, warmup=0, steps=2, device="cpu")
    assert list(one.layouts) == [Layout.ROO] and one.speedup_interval() is None


def test_measure_layouts_frees_a_layouts_trainer_before_the_next_setup():
    """Nothing of one layout's trainer (its bound prepare/plan/capture, its prepared batches) may
    outlive it: the next layout's setup frees memory and resets the peak, so a surviving model would
    count in the next layout's peak memory."""
    import contextlib
    import gc
    import weakref
    from types import SimpleNamespace

    from harness.measure import LayoutRun, measure_layouts

    reqs = [SimpleNamespace(num_impressions_total=10, num_requests=1)]
    alive_at_setup = []
    trainers: list[weakref.ref] = []

    class Trainer:
        def prepare(self, batch):
            return SimpleNamespace(batch=batch, owner=self)

        def plan(self, batches):
            self.planned = len(batches)

        def capture(self, batches):
            self.captured = batches

        def step(self, batch):
            return 0.0

    @contextlib.contextmanager
    def setup(layout):
        gc.collect()
        alive_at_setup.append([r() is not None for r in trainers])
        t = Trainer()
        trainers.append(weakref.ref(t))
        yield LayoutRun(t, reqs, report=lambda timing: {})

    measure_layouts(["impression", "roo"], reqs, setup, warmup=1, steps=2, device="cpu")
    assert alive_at_setup == [[], [False]]
