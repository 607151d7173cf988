"""WorkloadSpec and Dist: validation messages, --set overrides, TOML round trip, sampling means."""

import numpy as np
import pytest

from workloads.distributions import Dist
from workloads.errors import SpecError
from workloads.presets import PRESETS, get_preset, resolve_spec
from workloads.spec import WorkloadSpec


def d(**kw):
    if "mean" in kw:
        kw["mean_"] = kw.pop("mean")
    return Dist(**kw)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"kind": "nope"}, "dist.kind='nope' is not a distribution; allowed: fixed, uniform"),
        ({"kind": "fixed", "value": 1, "min": -1}, "dist.min=-1 must be >= 0"),
        ({"kind": "fixed", "value": 1, "min": 5, "max": 2}, "dist.max=2 is below dist.min=5; set max >= min"),
        ({"kind": "uniform", "low": 5, "high": 2}, "dist: uniform needs 0 <= low <= high, got low=5 high=2"),
        ({"kind": "geometric", "mean": 0.5}, "dist.mean=0.5 must be >= 1 for a geometric distribution"),
        ({"kind": "poisson", "mean": 0.0}, "dist.mean=0.0 must be > 0"),
        ({"kind": "lognormal", "mean": 3.0, "sigma": 0.0}, "dist.sigma=0.0 must be > 0"),
        ({"kind": "zipf", "a": 1.0}, "dist.a=1.0 must be > 1"),
        ({"kind": "powerlaw", "a": 2.0, "low": 0}, "dist.low=0 must be >= 1 for a power law"),
        ({"kind": "empirical", "values": (1, 2), "weights": (1.0,)}, "empirical needs values and weights of equal"),
    ],
)
def test_dist_validation_messages(kw, msg):
    with pytest.raises(SpecError) as e:
        d(**kw)
    assert msg in str(e.value)
    assert "\n" not in str(e.value)


def test_spec_validation_messages():
    with pytest.raises(SpecError, match=r"impressions.min=0: every request has at least one impression; set min >= 1"):
        WorkloadSpec(impressions=d(kind="fixed", value=1, min=0))
    with pytest.raises(SpecError, match=r"user_dense=-1 must be >= 0"):
        WorkloadSpec(user_dense=-1)
    with pytest.raises(SpecError, match=r"tasks is empty"):
        WorkloadSpec(tasks=())
    with pytest.raises(SpecError, match=r"tasks.0.base_rate=1.5 must be in \[0, 1\]"):
        WorkloadSpec.from_dict({"tasks": [{"name": "c", "base_rate": 1.5}]})


def test_set_overrides_apply_and_validate():
    s = get_preset("tiny").with_overrides(["impressions.mean=5", "user_dense=7", "history.length.max=64"])
    assert s.impressions.mean_ == 5.0 and s.user_dense == 7 and s.history.length.max == 64
    assert s.impressions.kind == "geometric"
    with pytest.raises(SpecError, match=r"--set impressions.nope: unknown key 'nope'; allowed here"):
        get_preset("tiny").with_overrides(["impressions.nope=3"])
    with pytest.raises(SpecError, match=r"--set bogus: unknown key 'bogus'"):
        get_preset("tiny").with_overrides(["bogus=1"])
    with pytest.raises(SpecError, match=r"spec.user_dense='abc' must be an integer"):
        get_preset("tiny").with_overrides(["user_dense=abc"])
    with pytest.raises(SpecError, match=r"impressions.mean='x' must be a number"):
        get_preset("tiny").with_overrides(["impressions.mean=x"])
    with pytest.raises(SpecError, match=r"expected key=value"):
        get_preset("tiny").with_overrides(["impressions.mean"])
    with pytest.raises(SpecError, match=r"impressions.max=1 is below impressions.min=2"):
        get_preset("tiny").with_overrides(["impressions.min=2", "impressions.max=1"])


def test_resolve_spec_errors():
    with pytest.raises(SpecError, match=r"unknown preset 'nope'; choose one of: tiny"):
        resolve_spec("nope")
    with pytest.raises(SpecError, match=r"either --preset or --spec"):
        resolve_spec("tiny", "x.toml")
    with pytest.raises(SpecError, match=r"give --preset NAME"):
        resolve_spec()


@pytest.mark.parametrize("name", list(PRESETS))
def test_toml_round_trip(name, tmp_path):
    s = get_preset(name)
    p = tmp_path / "s.toml"
    p.write_text(s.to_toml())
    back = WorkloadSpec.from_file(p)
    assert back == s
    assert back.config_hash() == s.config_hash()
    assert WorkloadSpec.from_dict(s.to_dict()) == s


def test_spec_file_errors(tmp_path):
    with pytest.raises(SpecError, match=r"does not exist"):
        WorkloadSpec.from_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(SpecError, match=r"is not valid TOML"):
        WorkloadSpec.from_file(bad)


DISTS = [
    d(kind="fixed", value=7),
    d(kind="uniform", low=2, high=9),
    d(kind="geometric", mean=10.0, min=1, max=64),
    d(kind="poisson", mean=4.5),
    d(kind="lognormal", mean=400.0, sigma=0.6, max=2048),
    d(kind="zipf", a=1.8, max=1000),
    d(kind="powerlaw", a=2.5, low=2, max=500),
    d(kind="empirical", values=(1, 3, 10), weights=(0.5, 0.3, 0.2)),
    d(kind="geometric", mean=3.0, min=2, max=6),
]


@pytest.mark.parametrize("dist", DISTS, ids=lambda x: x.kind)
def test_every_kind_samples_with_its_mean(dist):
    rng = np.random.default_rng(0)
    x = dist.sample(rng, 200_000)
    assert x.dtype == np.int64
    assert x.min() >= dist.min and (dist.max is None or x.max() <= dist.max)
    m = dist.mean()
    # 5 standard errors of the sample mean, from the exact second moment
    se = np.sqrt(max(dist.second_moment() - m * m, 0.0) / x.size)
    assert abs(x.mean() - m) <= 5 * se + 1e-9, (x.mean(), m, se)
    # and the sampled support matches the pmf table
    xs, _ = dist.pmf_table
    assert set(np.unique(x).tolist()) <= set(xs.tolist())
