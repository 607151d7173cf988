"""WorkloadSpec and Dist: validation messages, --set overrides, TOML round trip, sampling means."""

import numpy as np
import pytest

from workloads.distributions import CLIP_PARAMS, KIND_PARAMS, KINDS, Dist
from workloads.errors import SpecError
from workloads.presets import PRESETS, get_preset, resolve_spec
from workloads.spec import SpecWarning, WorkloadSpec, clip_warnings


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
    with pytest.warns(SpecWarning, match=r"impressions: the geometric distribution \(mean=5\) is clipped to \[1, 8\]"):
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


# --- what each distribution kind reads: overrides and spec files never silently ignored -------------------
PARAM_VALUES = {
    "value": 3,
    "low": 2,
    "high": 5,
    "mean": 4.0,
    "sigma": 0.5,
    "a": 1.5,
    "values": [1, 4],
    "weights": [1.0, 2.0],
}
ALL_PARAMS = sorted({p for ps in KIND_PARAMS.values() for p in ps})


def test_kind_params_table_is_what_to_dict_writes():
    assert set(KIND_PARAMS) == set(KINDS)
    for kind, params in KIND_PARAMS.items():
        dist = Dist.from_dict({"kind": kind, **{p: PARAM_VALUES[p] for p in params}, "max": 9})
        assert set(dist.to_dict()) == {"kind", *params, "max"}, kind
        assert Dist.from_dict(dist.to_dict()) == dist


def _spec_with(kind: str, where: str) -> WorkloadSpec:
    dist = {"kind": kind, **{p: PARAM_VALUES[p] for p in KIND_PARAMS[kind]}, "min": 1}
    d = get_preset("tiny").to_dict()
    if where == "impressions":
        d["impressions"] = dist
    else:
        d["user_sparse"][0]["pooling"] = dist
    return WorkloadSpec.from_dict(d)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["impressions", "user_sparse.0.pooling"])
def test_override_of_a_parameter_the_kind_does_not_read_is_an_error(kind, where):
    rng = np.random.default_rng()
    spec = _spec_with(kind, where)
    for key in ALL_PARAMS:
        v = int(rng.integers(2, 50))
        if key in KIND_PARAMS[kind]:
            continue
        with pytest.raises(SpecError) as e:
            spec.with_overrides([f"{where}.{key}={v}"])
        msg = str(e.value)
        assert msg.startswith(f"--set {where}.{key}={v}: {where} is a {kind} distribution, which does not read {key!r}")
        assert f"it reads {', '.join(KIND_PARAMS[kind])} (and min, max" in msg and "\n" not in msg
        users = [k for k, ps in KIND_PARAMS.items() if key in ps]
        assert msg.endswith(f"also --set {where}.kind={'|'.join(users)}")
    # the parameters it reads, and the clip bounds, do apply
    for key in (*KIND_PARAMS[kind], *CLIP_PARAMS):
        if key in ("values", "weights"):
            continue
        v = {"min": 1, "max": 1000}.get(key, int(rng.integers(2, 6)))
        got = spec.with_overrides([f"{where}.{key}={v}"], warn=lambda m: None)
        dist = dict(got.distributions())[where]
        assert getattr(dist, "mean_" if key == "mean" else key) == v


def test_switching_kinds_needs_the_new_parameters_and_drops_the_old():
    tiny = get_preset("tiny")  # impressions: geometric mean=3, min=1, max=8
    with pytest.raises(SpecError, match=r"--set impressions.kind=uniform: a uniform distribution reads low, high"):
        tiny.with_overrides(["impressions.kind=uniform", "impressions.low=2"])
    s = tiny.with_overrides(["impressions.kind=uniform", "impressions.low=2", "impressions.high=6"])
    assert s.impressions.to_dict() == {"kind": "uniform", "low": 2, "high": 6, "min": 1, "max": 8}
    s = tiny.with_overrides(["impressions.kind=poisson"])  # reads the mean the geometric one had
    assert s.impressions.to_dict() == {"kind": "poisson", "mean": 3.0, "min": 1, "max": 8}
    s = tiny.with_overrides(["impressions.value=5", "impressions.kind=fixed"])  # in any order
    assert s.impressions.to_dict() == {"kind": "fixed", "value": 5, "min": 1, "max": 8}
    with pytest.raises(SpecError, match=r"--set impressions.mean=4: impressions is a fixed distribution"):
        tiny.with_overrides(["impressions.kind=fixed", "impressions.value=5", "impressions.mean=4"])


@pytest.mark.parametrize("kind", KINDS)
def test_spec_file_parameter_the_kind_does_not_read_is_an_error(kind, tmp_path):
    d = get_preset("tiny").to_dict()
    d["history"]["length"] = {"kind": kind, **{p: PARAM_VALUES[p] for p in KIND_PARAMS[kind]}}
    import json

    assert WorkloadSpec.from_dict(json.loads(json.dumps(d))).history.length.kind == kind
    extra = next(p for p in ALL_PARAMS if p not in KIND_PARAMS[kind])
    d["history"]["length"][extra] = PARAM_VALUES[extra]
    f = tmp_path / "s.json"
    f.write_text(json.dumps(d))
    with pytest.raises(SpecError) as e:
        WorkloadSpec.from_file(f)
    assert str(e.value) == (
        f"history.length.{extra}: history.length is a {kind} distribution, which does not read {extra!r}; "
        f"it reads {', '.join(KIND_PARAMS[kind])} (and min, max, which clip every kind)"
    )


def test_values_the_bounds_would_clip_to_a_constant_are_errors():
    v = int(np.random.default_rng().integers(9, 100))
    with pytest.raises(SpecError) as e:
        get_preset("tiny").with_overrides(["impressions.kind=fixed", f"impressions.value={v}"])
    assert str(e.value) == (
        f"impressions.value={v} is above impressions.max=8: the fixed distribution would be clipped to 8; "
        f"set impressions.max={v} or keep value within [1, 8]"
    )
    ok = get_preset("tiny").with_overrides(["impressions.kind=fixed", f"impressions.value={v}", f"impressions.max={v}"])
    assert ok.impressions.mean() == v
    with pytest.raises(SpecError, match=r"history.length.high=40 is above history.length.max=32: the uniform"):
        get_preset("tiny").with_overrides(
            ["history.length.kind=uniform", "history.length.low=1", "history.length.high=40"]
        )
    with pytest.raises(SpecError, match=r"user_sparse.0.pooling.value=0 is below user_sparse.0.pooling.min=1"):
        get_preset("tiny").with_overrides(
            ["user_sparse.0.pooling.min=1", "user_sparse.0.pooling.kind=fixed", "user_sparse.0.pooling.value=0"]
        )
    with pytest.raises(SpecError, match=r"impressions.values=12 is above impressions.max=10: the empirical"):
        WorkloadSpec(impressions=d(kind="empirical", values=(1, 12), weights=(1.0, 1.0), min=1, max=10))
    for spec in PRESETS.values():  # no preset clips its own constants
        assert WorkloadSpec.from_dict(spec.to_dict()) == spec


def test_clipping_a_tail_warns_only_when_it_moves_the_mean():
    tiny = get_preset("tiny")
    for spec in PRESETS.values():  # the presets' own bounds cut only a thin tail
        assert clip_warnings(spec) == []
    got = []
    s = tiny.with_overrides(["impressions.mean=30"], warn=got.append)
    assert len(got) == 1 and got[0].startswith("impressions: the geometric distribution (mean=30) is clipped to [1, 8]")
    assert f"so its draws average {s.impressions.mean():.3g}, not 30;" in got[0]
    assert s.impressions.mean() < 8 and s.impressions.mean_ == 30
    got.clear()
    tiny.with_overrides(["impressions.mean=30", "impressions.max=1000", "history.length.mean=6"], warn=got.append)
    assert got == []
    with pytest.warns(SpecWarning, match=r"history.length: the lognormal distribution \(mean=100\) is clipped"):
        tiny.with_overrides(["history.length.mean=100"])


def test_resolve_spec_prints_the_warning_on_one_line(capsys):
    s = resolve_spec("tiny", None, ["impressions.mean=30"])
    err = capsys.readouterr().err
    assert (
        err.startswith("roo-bench: warning: impressions: the geometric distribution (mean=30)") and err.count("\n") == 1
    )
    assert s.impressions.mean_ == 30


@pytest.mark.parametrize("text, suffix", [("", ".toml"), ("# nothing yet\n\n", ".toml"), ("{}", ".json")])
def test_empty_spec_file_is_an_error(tmp_path, text, suffix):
    f = tmp_path / f"s{suffix}"
    f.write_text(text)
    with pytest.raises(
        SpecError, match=r"is empty \(it sets nothing\); write one with `roo-bench fit` or give --preset"
    ):
        WorkloadSpec.from_file(f)
    with pytest.raises(SpecError, match=r"is empty"):
        resolve_spec(None, str(f))
