"""`roo-bench profile`: a torch.profiler summary per layout (CPU here; CUDA adds kernel rows)."""

import json

from harness.cli import main
from workloads.records import flat_view


def _flat(rec: dict, kind: str) -> dict:
    """The flat object a `--json` record wraps, after checking it is a record of `kind`."""
    assert rec["schema"] == "roo-bench/result/1" and rec["kind"] == kind, rec.get("kind")
    return flat_view(rec)


def test_profile_tiny_both_layouts_json(capsys, tmp_path):
    rc = main(
        [
            "profile",
            "--preset",
            "tiny",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--json",
            "--trace-dir",
            str(tmp_path),
        ]
    )
    assert rc == 0
    out = _flat(json.loads(capsys.readouterr().out), "profile")
    assert set(out["layouts"]) == {"impression", "roo"}
    for layout, s in out["layouts"].items():
        assert s["steps"] == 2 and s["wall_ms"] > 0 and s["aten_ops"] > 10
        assert s["device_busy_ms"] == 0 and s["launches"] == 0  # no CUDA activity on the CPU
        names = [r["name"] for r in s["top_cpu"]]
        assert any(n.startswith("aten::") for n in names)
        assert (tmp_path / f"trace-tiny-{layout}.json").stat().st_size > 0
    assert out["impressions_per_step"] >= out["requests_per_step"] > 0


def test_profile_bad_input_is_one_line_exit_2(capsys):
    assert main(["profile", "--preset", "tiny", "--top", "0"]) == 2
    assert main(["profile", "--preset", "tiny", "--layout", "sideways"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--top 0" in err[0] and "--layout 'sideways'" in err[1]


def test_profile_runs_a_fitted_spec(capsys, tmp_path):
    from tests.harness_fixtures.fitted import fitted_spec

    spec_file = fitted_spec(tmp_path)
    capsys.readouterr()
    argv = ["profile", "--spec", str(spec_file), "--model", "tiny", "--steps", "1", "--warmup", "1"]
    rc = main([*argv, "--threads", "1", "--layout", "roo", "--json", "--trace-dir", str(tmp_path / "t")])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out)
    out = _flat(rec, "profile")
    assert out["workload"] == "fitted" and out["model_preset"] == "tiny" and out["spec_file"] == str(spec_file)
    assert out["requests_per_step"] == out["spec"]["requests_per_batch"] != 16  # the file's batch, not tiny's
    assert set(out["layouts"]) == {"roo"} and out["layouts"]["roo"]["aten_ops"] > 10
    assert (tmp_path / "t" / "trace-fitted-roo.json").stat().st_size > 0
    assert rec["provenance"]["device_name"].startswith("cpu") and rec["provenance"]["seed"] == 0
    # a spec that names no model preset needs --model: one line, and no trace directory made
    rc = main(["profile", "--spec", str(spec_file), "--trace-dir", str(tmp_path / "t2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "name one explicitly (`--model NAME`" in err[0]
    assert not (tmp_path / "t2").exists()


def test_syncs_count_only_inside_a_steps_range():
    """The closing synchronize of the profiled region (and the profiler's own) are not a step's
    syncs: only those under profile_steps' per-step range count, all of them without such ranges."""
    from types import SimpleNamespace as E

    from harness.profile_step import STEP_RANGE, _syncs_in_steps

    step = E(name=STEP_RANGE, cpu_parent=None)
    inner = E(name="aten::item", cpu_parent=step)
    events = [
        step,
        inner,
        E(name="cudaStreamSynchronize", cpu_parent=inner),  # a sync inside a step (e.g. .item())
        E(name="cudaDeviceSynchronize", cpu_parent=None),  # the harness's closing synchronize
        E(name="cudaDeviceSynchronize", cpu_parent=E(name="ProfilerStep", cpu_parent=None)),
    ]
    assert _syncs_in_steps(events) == 1
    assert _syncs_in_steps([e for e in events if e is not step and e is not inner]) == 3


def test_a_triton_launch_is_an_operator_inside_the_optimizers_side_range():
    """The profiler links a kernel to the operator open at its launch, never to a user range: the
    Triton launches run inside a FUNCTION-scope record (roo_ref.kernels.profiling), so their
    kernels are charged to the side range around it, with its shares, and listed per component."""
    from types import SimpleNamespace as E

    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from harness.profile_step import breakdown
    from roo_ref.kernels.profiling import kernel_range

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("roo/optimizer/user=0.75,item=0.25"):
            with kernel_range("roo::segment_sum"):
                torch.ones(3).add_(1)
    (op,) = [e for e in prof.events() if e.name == "roo::segment_sum"]
    assert not op.is_user_annotation and op.cpu_parent.name == "roo/optimizer/user=0.75,item=0.25"

    def ev(name, parent=None, kernels=()):
        return E(
            name=name,
            device_type="DeviceType.CPU",
            kernels=list(kernels),
            is_legacy=False,
            cpu_parent=parent,
            sequence_nr=-1,
            self_cpu_time_total=0,
        )

    side = ev("roo/optimizer/user=0.75,item=0.25", kernels=[E(name="roo/optimizer/user=0.75,item=0.25", duration=90.0)])
    launch = ev("roo::segment_sum", side, [E(name="_segment_sum_kernel", duration=40.0)])
    out = breakdown([side, launch, ev("aten::add", kernels=[E(name="add", duration=7.0)])], steps=1, cuda=True)
    assert out["components_ms"]["optimizer"] * 1e3 == 40.0 and out["components_ms"]["other"] * 1e3 == 7.0
    assert out["optimizer_sides_ms"] == {"user": 0.75 * 40.0 / 1e3, "item": 0.25 * 40.0 / 1e3}
    assert out["components_top"]["optimizer"] == [{"name": "_segment_sum_kernel", "ms": 40.0 / 1e3}]
