"""Which point a summary row quotes for a preset."""

from reports.sections.common import headline_point


def _p(speedup, **config):
    base = {"spec_overrides": [], "model_overrides": [], "requests_per_batch": None}
    return {"config": {**base, **config}, "metrics": {"speedup": speedup}}


def test_the_preset_at_its_own_shape_beats_sweep_points():
    sweep = [_p(0.9, spec_overrides=["impressions.value=1"], requests_per_batch=256) for _ in range(4)]
    own = _p(4.3)
    assert headline_point([*sweep, own]) is own


def test_median_of_a_sweep_without_a_preset_point():
    pts = [_p(s, spec_overrides=[f"impressions.value={s}"]) for s in (1.0, 3.0, 2.0)]
    assert headline_point(pts)["metrics"]["speedup"] == 2.0


def test_an_explicit_headline_wins():
    marked = _p(1.5, spec_overrides=["x=1"], headline=True)
    assert headline_point([_p(4.0), marked]) is marked
