"""harness.run_point: config validation and hashing, and one point end to end (stand-in model and
the real `tiny` model) with the record schema of docs/contracts.md."""

import pytest
import torch

from harness.results import validate_record
from harness.run_point import PointConfig, check_device, run_point
from workloads.errors import UserError

FIXED = [
    "impressions.kind=fixed",
    "impressions.value=3",
    "history.length.kind=fixed",
    "history.length.value=6",
]
LAYOUT_KEYS = {
    "step_ms",
    "impressions_per_s",
    "requests_per_s",
    "impressions_per_step",
    "requests_per_step",
    "peak_mem_bytes",
    "flops_per_step",
    "flops_masked_counted",
    "achieved_tflops",
    "predicted_step_ms",
    "step_error",
    "energy",
}


@pytest.mark.parametrize(
    ("cfg", "msg"),
    [
        ({"stepz": 3}, "point config: unknown key(s) ['stepz']; allowed: "),
        ({"dtype": "fp16"}, "dtype='fp16'; allowed: fp32, bf16"),
        ({"device": "gpu"}, "device='gpu'; allowed: cpu, cuda, cuda:N"),
        ({"steps": 0}, "steps=0 must be >= 1"),
        ({"steps": "5"}, "point config: steps='5' must be an integer"),
        ({"preset": "nope"}, "unknown preset 'nope'"),
        ({"layouts": ["roo", "roo"]}, "layouts=['roo', 'roo']; allowed: distinct values of impression, roo"),
        (
            {"spec_overrides": "impressions.value=2"},
            "point config: spec_overrides='impressions.value=2' must be a list of strings",
        ),
    ],
)
def test_point_config_rejects(cfg, msg):
    with pytest.raises(UserError) as e:
        PointConfig.from_dict(cfg)
    assert str(e.value).startswith(msg)


def test_point_config_hash():
    a = PointConfig.from_dict({"preset": "tiny", "axes": {"k": 1}})
    b = PointConfig.from_dict({"preset": "tiny", "steps": 20, "warmup": 3, "axes": {"k": 2}})
    assert a.config_hash() == b.config_hash()  # defaults filled; axis labels are not identity
    assert a.config_hash() != PointConfig.from_dict({"preset": "tiny", "steps": 21}).config_hash()
    spec = PointConfig.from_dict({"spec_overrides": FIXED, "requests_per_batch": 5, "seed": 9}).resolve_spec()
    assert (spec.impressions.value, spec.requests_per_batch, spec.seed) == (3, 5, 9)


@pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the no-CUDA message")
def test_missing_device_is_one_line():
    with pytest.raises(UserError) as e:
        check_device("cuda")
    assert str(e.value) == "device 'cuda' is not available here (torch.cuda.is_available() is False); use cpu"
    check_device("cpu")


def _check_point_record(rec, steps):
    assert validate_record(rec) == [] and rec["kind"] == "point" and rec["status"] == "ok"
    m = rec["metrics"]
    imp, roo = m["layouts"]["impression"], m["layouts"]["roo"]
    for L in (imp, roo):
        assert LAYOUT_KEYS <= set(L)
        assert L["step_ms"]["n"] == steps and L["step_ms"]["min"] <= L["step_ms"]["median"] <= L["step_ms"]["max"]
        assert L["impressions_per_s"] == pytest.approx(L["impressions_per_step"] / (L["step_ms"]["median"] / 1e3))
        assert L["energy"]["available"] is False and L["energy"]["reason"]
    # the same impressions per step in both layouts: one request batch, the impression batch derived
    assert imp["impressions_per_step"] == roo["impressions_per_step"] == 3 * imp["requests_per_step"]
    assert m["speedup"] == pytest.approx(imp["step_ms"]["median"] / roo["step_ms"]["median"])
    lo, hi = m["speedup_ci"]
    assert lo <= m["speedup"] <= hi
    assert (
        rec["config_hash"]
        == PointConfig.from_dict({k: v for k, v in rec["config"].items() if k not in ("spec", "model")}).config_hash()
    )
    imps = rec["config"]["spec"]["impressions"]
    assert (imps["kind"], imps["value"]) == ("fixed", 3)
    assert set(rec["provenance"]) >= {"git_sha", "git_dirty", "device_name", "torch_version", "seed"}


def test_run_point_with_stand_in_model():
    from harness_fixtures.points import standin_point

    rec = standin_point({"preset": "tiny", "spec_overrides": FIXED, "warmup": 1, "steps": 5, "threads": 1})
    _check_point_record(rec, 5)
    imp, roo = rec["metrics"]["layouts"]["impression"], rec["metrics"]["layouts"]["roo"]
    # ROO runs the user tower once per request: FlopCounterMode sees fewer FLOPs
    assert 0 < roo["flops_counted_per_step"] < imp["flops_counted_per_step"]
    assert imp["aten_ops_per_step"] > 0 and roo["aten_ops_per_step"] > 0
    assert rec["config"]["model"] == {"dim": 8, "buckets": 257}


def test_run_point_real_tiny_model_cpu():
    pytest.importorskip("roo_ref.models")
    rec = run_point({"preset": "tiny", "spec_overrides": FIXED, "warmup": 1, "steps": 3, "threads": 1})
    _check_point_record(rec, 3)
    m = rec["metrics"]
    assert rec["config"]["model"]["arch"] and rec["config"]["model"]["attention_backend"] == "torch"
    for L in m["layouts"].values():
        assert L["flops_counted_per_step"] > 0
        assert L["aten_ops_per_step"] > 100  # a whole training step: forward, backward, optimizers
        if L["flops_per_step"] is None:  # the analytic cost model is optional; its absence is explained
            assert L["cost_reason"]
            continue
        # predicted (roo_ref.cost) and counted (FlopCounterMode over a whole trainer step) agree
        assert L["flops_per_step"] == L["flops_counted_per_step"]
        assert L["achieved_tflops"] == pytest.approx(L["flops_per_step"] / (L["step_ms"]["median"] / 1e3) / 1e12)
        assert L["step_error"] == pytest.approx(L["step_ms"]["median"] / L["predicted_step_ms"] - 1)
    imp, roo = m["layouts"]["impression"], m["layouts"]["roo"]
    if imp["predicted_step_ms"]:
        assert m["predicted_speedup"] == pytest.approx(imp["predicted_step_ms"] / roo["predicted_step_ms"])
        assert m["speedup_error"] == pytest.approx(m["speedup"] / m["predicted_speedup"] - 1)
        assert m["ideal_speedup"] > 1.0


def test_op_count_is_exact_and_leaves_results_unchanged():
    """count_flops_and_ops counts every dispatched op of the step once, and the counting modes do
    not change what the step computes."""
    import torch

    from harness.run_point import count_flops_and_ops

    a = torch.randn(4, 5, requires_grad=True)
    b = torch.randn(5, 3)
    out = {}

    def step():
        y = (a @ b).relu().sum()  # mm, relu, sum
        out["y"] = y.detach().clone()
        return y

    flops, ops = count_flops_and_ops(step)
    assert flops == 2 * 4 * 5 * 3  # one mm
    ops_plain = count_flops_and_ops(lambda: (a @ b).relu().sum())[1]
    assert ops_plain >= 3  # mm, relu, sum (+ what autograd saves, version-dependent)
    assert ops == ops_plain + 2  # + the detach and clone of the recorded copy
    assert torch.equal(out["y"], (a @ b).relu().sum().detach())
