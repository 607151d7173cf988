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


# --- where a step's time goes (harness.profile_step through run_point) --------------------------------
PROFILE_KEYS = {
    "profile_steps",
    "profile_reason",
    "host_wall_ms",
    "busy_ms",
    "busy_share",
    "busy_share_of_step",
    "busy_source",
    "launches_per_step",
    "syncs_per_step",
    "component_ms",
    "component_reason",
    "profile_top",
    "mfu",
    "mfu_reason",
    "mfu_flops",
}
POINT_KEYS = {
    "impressions_per_request",
    "s_u",
    "s_u_reason",
    "time_ideal_speedup",
    "flop_ideal_speedup",
    "byte_ideal_speedup",
    "speedup_vs_time_ideal",
    "calibration",
}


class _Cfg:
    def to_dict(self) -> dict:
        return {"labeled": True}


def _labeled_builder(spec, pc, layout):
    """A stand-in whose user side (three wide layers) outweighs its item side (one narrow layer),
    with the models' profiler ranges around each part and around the optimizer step."""
    from torch import nn
    from torch.profiler import record_function

    class Labeled(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = _Cfg()
            w = 192
            self.user = nn.Sequential(
                nn.Linear(spec.user_dense, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 8)
            )
            self.item = nn.Linear(spec.item_dense, 8)
            self.head = nn.Linear(8, spec.n_tasks)

        def forward(self, batch, layout):
            with record_function("roo/user"):
                u = self.user(batch.user_dense)
                if layout == "roo":
                    u = u[batch.impression_to_request()]
            with record_function("roo/item"):
                i = self.item(batch.item_dense)
            with record_function("roo/loss"):
                logits = self.head(u * i)
                loss = nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
            return {"loss": loss, "logits": logits}

    class Trainer:
        def __init__(self, model):
            self.model, self.opt = model, torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(self, batch):
            self.opt.zero_grad(set_to_none=True)
            loss = self.model(batch, layout)["loss"]
            loss.backward()
            with record_function("roo/optimizer"):
                self.opt.step()
            return loss.detach()

    torch.manual_seed(pc.seed)
    model = Labeled()
    return model, Trainer(model)


def _check_profile_fields(m: dict) -> None:
    assert POINT_KEYS <= set(m)
    assert m["impressions_per_request"] == pytest.approx(
        m["layouts"]["roo"]["impressions_per_step"] / m["layouts"]["roo"]["requests_per_step"]
    )
    cal = m["calibration"]
    assert cal["reason"] is None and cal["matmul_flops"] > 0 and cal["matmul_dtype"] == "float32"
    for L in m["layouts"].values():
        assert PROFILE_KEYS <= set(L)
        assert L["profile_reason"] is None and L["profile_steps"] == 2 and L["busy_source"] == "cpu"
        assert L["host_wall_ms"] > 0 and 0 < L["busy_ms"] <= L["host_wall_ms"]
        assert L["busy_share"] == pytest.approx(L["busy_ms"] / L["host_wall_ms"]) and 0 < L["busy_share"] <= 1
        assert L["busy_share_of_step"] is None  # a CPU busy time is operator self time, not GPU time
        assert L["launches_per_step"] == 0 and L["syncs_per_step"] == 0  # nothing runs on a GPU here
        assert L["profile_top"]["cpu"] and all(r["name"] for r in L["profile_top"]["cpu"])
        flops = L["flops_per_step"] or L["flops_counted_per_step"]
        assert L["mfu"] == pytest.approx(flops / (L["step_ms"]["median"] / 1e3 * cal["matmul_flops"]))
        assert 0 < L["mfu"] < 1 and L["mfu_reason"] is None


def test_profile_fields_with_component_ranges():
    rec = run_point(
        {"preset": "tiny", "spec_overrides": FIXED, "warmup": 1, "steps": 5, "threads": 1, "profile_steps": 2},
        builder=_labeled_builder,
    )
    assert validate_record(rec) == [] and rec["status"] == "ok"
    m = rec["metrics"]
    _check_profile_fields(m)
    for L in m["layouts"].values():
        comps = L["component_ms"]
        assert L["component_reason"] is None and set(comps) == {
            "user",
            "item",
            "interaction",
            "loss",
            "optimizer",
            "other",
        }
        assert all(v >= 0 for v in comps.values()) and comps["interaction"] == 0  # no such range here
        # every ms of CPU busy time lands in exactly one component (backward ops by their forward range)
        assert sum(comps.values()) == pytest.approx(L["busy_ms"], rel=1e-9)
        assert comps["user"] > comps["item"] > 0 and comps["optimizer"] > 0 and comps["loss"] > 0
        assert comps["other"] < comps["user"]
    imp = m["layouts"]["impression"]
    s_u, k = m["s_u"], m["impressions_per_request"]
    assert m["s_u_reason"] is None and s_u == pytest.approx(imp["component_ms"]["user"] / imp["busy_ms"])
    assert 0 < s_u < 1
    assert m["time_ideal_speedup"] == pytest.approx(1 / (s_u / k + 1 - s_u)) and 1 < m["time_ideal_speedup"] < k
    assert m["speedup_vs_time_ideal"] == pytest.approx(m["speedup"] / m["time_ideal_speedup"])
    roo = m["layouts"]["roo"]
    assert m["flop_ideal_speedup"] == pytest.approx(imp["flops_counted_per_step"] / roo["flops_counted_per_step"])
    assert m["flop_ideal_speedup"] > 1 and m["byte_ideal_speedup"] is None  # a stand-in: no cost model


def test_profile_fields_on_the_real_tiny_model():
    pytest.importorskip("roo_ref.models")
    rec = run_point(
        {"preset": "tiny", "spec_overrides": FIXED, "warmup": 1, "steps": 3, "threads": 1, "profile_steps": 2}
    )
    m = rec["metrics"]
    _check_profile_fields(m)
    imp, roo = m["layouts"]["impression"], m["layouts"]["roo"]
    if imp["component_ms"] is None:  # models without the profiler ranges: s_u is null and says why
        assert m["s_u"] is None and "roo/user" in m["s_u_reason"] and m["time_ideal_speedup"] is None
    else:
        assert 0 <= m["s_u"] <= 1 and m["time_ideal_speedup"] >= 1
    if imp["flops_per_step"] is not None:  # the analytic cost model: FLOP- and byte-ideal from it
        assert m["flop_ideal_speedup"] == pytest.approx(imp["flops_per_step"] / roo["flops_per_step"])
        assert m["byte_ideal_speedup"] == pytest.approx(imp["cost"]["bytes_per_step"] / roo["cost"]["bytes_per_step"])
        assert m["byte_ideal_speedup"] > 1 and imp["mfu_flops"] == "analytic"


def test_profile_off_records_why_and_keeps_the_point_identity():
    from harness_fixtures.points import standin_point

    cfg = {"preset": "tiny", "spec_overrides": FIXED, "warmup": 1, "steps": 3, "threads": 1, "profile": False}
    rec = standin_point(cfg)
    m = rec["metrics"]
    assert POINT_KEYS <= set(m) and m["calibration"] == {"matmul_flops": None, "reason": "profile = false"}
    assert m["s_u"] is None and m["s_u_reason"] == "profile = false" and m["time_ideal_speedup"] is None
    for L in m["layouts"].values():
        assert PROFILE_KEYS <= set(L) and L["profile_reason"] == "profile = false"
        assert L["host_wall_ms"] is None and L["component_ms"] is None and L["mfu"] is None
        assert L["mfu_reason"] == "profile = false"
    # the profiled steps come after the timed ones: profiling does not change the point's identity
    on = PointConfig.from_dict({**cfg, "profile": True, "profile_steps": 7})
    assert on.config_hash() == PointConfig.from_dict(cfg).config_hash() == rec["config_hash"]


@pytest.mark.parametrize(
    ("cfg", "msg"),
    [
        ({"profile_steps": 0}, "profile_steps=0 must be >= 1 (profile = false skips the profile)"),
        ({"profile": "yes"}, "point config: profile='yes' must be true or false"),
        ({"profile_steps": 2.5}, "point config: profile_steps=2.5 must be an integer"),
    ],
)
def test_point_config_rejects_bad_profile_settings(cfg, msg):
    with pytest.raises(UserError) as e:
        PointConfig.from_dict(cfg)
    assert str(e.value) == msg


def test_breakdown_charges_backward_ops_to_their_forward_range():
    """Exact attribution on synthetic profiler events: forward ops by their enclosing range,
    backward ops by the forward op's sequence number, the rest to "other"."""
    from types import SimpleNamespace

    from harness.profile_step import breakdown

    def ev(name, us, parent=None, seq=-1):
        return SimpleNamespace(
            name=name, self_cpu_time_total=us, cpu_parent=parent, sequence_nr=seq, device_type="DeviceType.CPU"
        )

    user = ev("roo/user", 5.0)  # not an aten op: its own self time is Python, not device work
    item = ev("roo/item", 1.0)
    opt = ev("roo/optimizer", 0.0)
    bwd_u = ev("autograd::engine::evaluate_function: AddmmBackward0", 0.0, seq=11)
    bwd_i = ev("autograd::engine::evaluate_function: MulBackward0", 0.0, seq=12)
    bwd_x = ev("autograd::engine::evaluate_function: SumBackward0", 0.0, seq=99)  # its forward is unlabeled
    events = [
        user,
        item,
        opt,
        bwd_u,
        bwd_i,
        bwd_x,
        ev("aten::addmm", 300.0, user, seq=11),
        ev("aten::mul", 100.0, item, seq=12),
        ev("aten::sum", 7.0, None, seq=99),
        ev("aten::mm", 600.0, bwd_u),  # the backward of the user matmul
        ev("aten::mul", 200.0, bwd_i),
        ev("aten::ones_like", 3.0, bwd_x),
        ev("aten::_foreach_add_", 50.0, opt),
    ]
    out = breakdown(events, steps=2, cuda=False)
    assert out["components_reason"] is None
    assert out["components_ms"] == pytest.approx(
        {"user": 0.45, "item": 0.15, "interaction": 0.0, "loss": 0.0, "optimizer": 0.025, "other": 0.005}
    )
    assert out["busy_ms"] == pytest.approx((300 + 100 + 7 + 600 + 200 + 3 + 50) / 2 / 1e3)
    plain = breakdown([e for e in events if not e.name.startswith("roo/")], steps=2, cuda=False)
    assert plain["components_ms"] is None and "roo/user" in plain["components_reason"]
    assert plain["busy_ms"] == pytest.approx(out["busy_ms"])


def test_breakdown_on_a_gpu_counts_kernels_not_range_spans():
    """On a GPU an event's busy time is its kernels; a range's GPU-timeline copy, which the profiler
    attaches to the range under the range's own name, spans idle gaps and is left out."""
    from types import SimpleNamespace

    from harness.profile_step import breakdown

    def ev(name, kernels=(), parent=None, seq=-1):
        ks = [SimpleNamespace(name=n, duration=d) for n, d in kernels]
        return SimpleNamespace(
            name=name, kernels=ks, is_legacy=False, cpu_parent=parent, sequence_nr=seq, device_type="DeviceType.CPU"
        )

    user = ev("roo/user", [("roo/user", 900.0), ("_hstu_attn_fwd", 40.0)])  # a span + a Triton launch
    bwd = ev("autograd::engine::evaluate_function: MmBackward0", seq=5)
    events = [
        user,
        bwd,
        ev("aten::mm", [("sm90_gemm", 100.0)], user, seq=5),
        ev("aten::mm", [("sm90_gemm", 150.0), ("sm90_gemm", 50.0)], bwd),
        ev("aten::add_", [("elementwise", 10.0)]),
    ]
    out = breakdown(events, steps=1, cuda=True)
    assert out["components_ms"]["user"] == pytest.approx((40 + 100 + 150 + 50) / 1e3)
    assert out["components_ms"]["other"] == pytest.approx(10 / 1e3)
    assert out["busy_ms"] == pytest.approx(350 / 1e3)
    # per component, its kernels by GPU time (the backward's gemms charged to the forward's range)
    top = {c: [(k["name"], round(k["ms"] * 1e3, 6)) for k in v] for c, v in out["components_top"].items()}
    assert top == {"user": [("sm90_gemm", 300.0), ("_hstu_attn_fwd", 40.0)], "other": [("elementwise", 10.0)]}


def test_data_device_is_a_point_setting_recorded_with_its_generator():
    """Where a point's batch is made is a setting (auto: the training device; cpu: numpy then copied),
    validated, part of the hash only when not the default, and named in the record."""
    from harness.run_point import PointConfig, run_point

    auto, cpu = PointConfig(preset="tiny"), PointConfig(preset="tiny", data_device="cpu")
    assert "data_device" not in auto.hash_dict() and auto.config_hash() != cpu.config_hash()
    with pytest.raises(UserError, match="data_device='gpu'; allowed: auto, cpu"):
        PointConfig(preset="tiny", data_device="gpu")
    rec = run_point({"preset": "tiny", "data_device": "cpu", "warmup": 0, "steps": 2, "nvml": False, "profile": False})
    assert rec["config"]["data_device"] == "cpu"
    assert rec["metrics"]["data_made_by"] == "workloads.generator (numpy)"


@pytest.mark.parametrize("layouts", [["impression", "roo"], ["roo", "impression"]])
def test_no_timed_step_runs_after_a_profiler_session(monkeypatch, layouts):
    """A profiler leaves work behind in the process (on a GPU, CUPTI stays subscribed to every
    kernel launch), so a layout timed after another layout's profile would pay for it: every
    layout's timed steps come before the first profiled step, in either layout order."""
    import harness.measure
    import harness.profile_step

    calls: list[tuple[str, int]] = []
    real_time, real_profile = harness.measure.time_steps, harness.profile_step.profile_steps

    def time_steps(fn, **kw):
        calls.append(("time", kw["steps"]))
        return real_time(fn, **kw)

    def profile_steps(step, **kw):
        calls.append(("profile", kw["steps"]))
        return real_profile(step, **kw)

    monkeypatch.setattr(harness.measure, "time_steps", time_steps)
    monkeypatch.setattr(harness.profile_step, "profile_steps", profile_steps)
    cfg = {"preset": "tiny", "spec_overrides": FIXED, "warmup": 1, "steps": 4, "threads": 1, "profile_steps": 2}
    rec = run_point({**cfg, "layouts": layouts}, builder=_labeled_builder)
    first_profile = calls.index(("profile", 2))
    assert [c for c in calls[:first_profile] if c == ("time", 4)] == [("time", 4)] * 2
    assert ("time", 4) not in calls[first_profile:]
    assert [c[0] for c in calls].count("profile") == 2
    for L in rec["metrics"]["layouts"].values():  # each layout still has its own profile
        assert L["profile_reason"] is None and L["profile_steps"] == 2 and L["host_wall_ms"] > 0
        assert L["step_ms"]["n"] == 4 and L["component_ms"]["user"] > 0
