"""The kernel-class step-time model (roo_ref.cost.time_model) on synthetic calibrations, the CPU
calibration path, and validate-time on a synthetic point record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from roo_ref.cost.kernel_classes import Curve, Grid, Host, KernelClasses, RateGrid
from roo_ref.cost.stats import expected_stats
from roo_ref.cost.time_model import (
    GRAPH_HOST_OPS,
    TimeModel,
    embedding_tables,
    from_calibration,
    from_device_spec,
    predict_layouts,
)
from roo_ref.hardware import DEVICES
from roo_ref.model_presets import get_model_config
from workloads.errors import UserError
from workloads.presets import get_preset


def _synthetic(per_op_s: float = 5e-6, serial: bool = False) -> KernelClasses:
    """A calibration whose rates rise with size and saturate, as a GPU's do."""
    ax = [16.0, 256.0, 4096.0, 65536.0]
    m, k, n = np.meshgrid(ax, ax, ax, indexing="ij")
    work = 2 * m * k * n
    secs = 3e-6 + work / 5e14 + 1e-3 / np.sqrt(m * k * n)  # noisy small end, made monotone on load
    sizes = [1e3, 1e5, 1e7, 1e9]
    ids, dups = [1e3, 1e5, 1e7], [1.0, 100.0, 1e6]
    red = np.array([[n * (1 + np.log10(d)) * 1e-9 + 5e-6 for d in dups] for n in ids])
    return KernelClasses(
        gemm={"bf16": RateGrid.from_times([ax] * 3, secs, work, "gemm")},
        gather=Curve.make(sizes, [4e-6, 6e-6, 1e-5, 6e-4]),
        grad_reduce=RateGrid.from_times([ids, dups], red, np.repeat(np.array(ids)[:, None], 3, 1), "gr"),
        grad_reduce_dim=64,
        elementwise=Curve.make(sizes, [3e-6, 4e-6, 8e-6, 4e-4]),
        reduction=Curve.make(sizes, [3e-6, 4e-6, 8e-6, 4e-4]),
        optimizer=Curve.make(sizes, [5e-6, 6e-6, 1e-5, 5e-4]),
        hstu_attention=RateGrid.from_times(
            [[64.0, 1024.0], [1.0, 64.0]], [[1e-4, 2e-4], [1e-3, 2e-3]], [[1e9, 3e9], [3e10, 9e10]], "h"
        ),
        host=Host(per_op_s, 3e-6, 8e-6, 2e-5),
        source="synthetic",
        serial=serial,
    )


def test_grid_interpolates_in_log_space_and_clamps():
    g = Grid.make([[1.0, 100.0]], [1.0, 100.0])
    assert g(10.0) == pytest.approx(10.0)
    assert g(1e4) == pytest.approx(100.0) and g(0.01) == pytest.approx(1.0)
    c = Curve.make([10.0, 1000.0], [1e-6, 1e-4])
    assert c(1e5) == pytest.approx(1e-2)  # the edge's rate beyond the grid
    assert c(1.0) == pytest.approx(1e-6)  # a kernel's fixed cost below it
    with pytest.raises(UserError):
        Grid.make([[2.0, 1.0]], [1.0, 1.0])


def test_gemm_time_is_monotone_in_every_size():
    kc = _synthetic()
    sizes = np.geomspace(4, 3e5, 40)
    for axis in range(3):
        dims = [np.full_like(sizes, 300.0) for _ in range(3)]
        dims[axis] = sizes
        t = kc.gemm_s(*dims, "bf16")
        assert np.all(np.diff(t) >= -1e-15), axis
    big = kc.gemm_s(1e6, 4096, 4096, "bf16")
    assert big == pytest.approx(2e6 * 4096 * 4096 / kc.gemm["bf16"].grid(1e6, 4096, 4096))


def test_bandwidth_and_reduce_classes_are_monotone():
    kc = _synthetic()
    b = np.geomspace(1, 1e11, 50)
    for curve in (kc.gather, kc.elementwise, kc.optimizer):
        assert np.all(np.diff(curve(b)) >= 0)
    n = np.geomspace(10, 1e8, 30)
    assert np.all(np.diff(kc.grad_reduce_s(n, n / 10, 64)) >= 0)
    # a wider row is more work per id: twice the width prices as twice the ids
    assert kc.grad_reduce_s(1e6, 1e6, 128) == pytest.approx(kc.grad_reduce_s(2e6, 2e6, 64))


def test_kernel_classes_round_trip():
    kc = _synthetic()
    back = KernelClasses.from_dict(json.loads(json.dumps(kc.to_dict())))
    assert back.gemm_s(1000, 512, 256, "bf16") == pytest.approx(kc.gemm_s(1000, 512, 256, "bf16"))
    assert back.host == kc.host and back.serial == kc.serial
    with pytest.raises(UserError, match="malformed"):
        KernelClasses.from_dict({"gemm": {}})


def _early(requests: float = 64.0):
    spec, cfg = get_preset("early-ranking"), get_model_config("early-ranking")
    return spec, cfg, expected_stats(spec, cfg, requests)


def test_eager_host_term_scales_with_ops_and_graph_replaces_it():
    spec, cfg, st = _early()
    slow = TimeModel(_synthetic(per_op_s=1e-3))
    eager = predict_layouts(slow, spec, cfg, st, aten_ops={"impression": 500.0, "roo": 500.0})
    graph = predict_layouts(slow, spec, cfg, st, graph=True)
    for lay in ("impression", "roo"):
        e, g = eager[lay], graph[lay]
        assert e.host_s == pytest.approx(0.5)  # 500 ops x 1 ms
        assert e.step_s >= e.host_s and e.step_s >= e.device_s
        assert g.host_s == pytest.approx(8e-6 + GRAPH_HOST_OPS * 1e-3) and g.step_s < e.step_s
        # a replay runs the eager kernels plus the copy of its inputs into the static buffers
        copy = [r for r in g.rows if r.name == "graph input copy"]
        assert len(copy) == 1 and copy[0].device_s > 0
        assert all(r.name != "graph input copy" for r in e.rows)
        assert g.device_s == pytest.approx(e.device_s + copy[0].device_s)
    fast = predict_layouts(TimeModel(_synthetic(per_op_s=1e-9)), spec, cfg, st)
    assert fast["impression"].step_s == pytest.approx(fast["impression"].device_s, rel=1e-3)


def test_serial_device_adds_host_and_kernels():
    spec, cfg, st = _early()
    lt = predict_layouts(TimeModel(_synthetic(serial=True)), spec, cfg, st, syncs={"roo": 2.0})["roo"]
    assert lt.step_s == pytest.approx(lt.host_s + lt.device_s + 2 * 2e-5)


def test_step_grows_with_the_batch_and_roo_is_faster():
    spec, cfg, _ = _early()
    tm = TimeModel(_synthetic())
    small = predict_layouts(tm, spec, cfg, expected_stats(spec, cfg, 64.0))
    big = predict_layouts(tm, spec, cfg, expected_stats(spec, cfg, 1024.0))
    for lay in ("impression", "roo"):
        assert big[lay].device_s > small[lay].device_s
    assert big["impression"].step_s > big["roo"].step_s
    assert set(big["roo"].group_ms()) <= {"user", "item", "interaction", "optimizer", "other"}


def test_embedding_tables_copy_ids_but_not_rows_in_the_impression_layout():
    spec, cfg, st = _early(256.0)
    imp, roo = embedding_tables(spec, cfg, st, "impression"), embedding_tables(spec, cfg, st, "roo")
    assert len(imp) == len(roo)
    assert sum(n for n, _ in imp) > sum(n for n, _ in roo)
    assert [u for _, u in imp] == pytest.approx([u for _, u in roo])
    assert all(u <= n + 1e-9 for n, u in roo)


def test_roofs_only_calibration_loads_as_the_roofline():
    rec = {"kind": "calibration", "metrics": {"device_name": "x", "spec": DEVICES["h100"].to_dict()}}
    tm = from_calibration(rec)
    assert "roofs" in tm.source
    kc = tm.classes
    assert kc.gemm_s(8192, 8192, 8192, "bf16") == pytest.approx(2 * 8192**3 / 989e12)
    assert kc.elementwise(1e9) == pytest.approx(1e9 / 3.35e12)
    assert kc.elementwise(10.0) == pytest.approx(6e-6)
    assert from_device_spec(DEVICES["cpu"]).classes.serial
    with pytest.raises(UserError):
        from_calibration({"kind": "comm", "metrics": {}})


def test_cpu_calibration_path(tmp_path):
    from harness.calibration import calibrate_kernels

    kc_dict = calibrate_kernels("cpu")
    assert kc_dict["serial"] and kc_dict["hstu_attention"] is None
    assert sum(kc_dict["benchmark"]["seconds"].values()) < 30
    tm = from_calibration({"kind": "calibration", "metrics": {"device_name": "cpu", "kernel_classes": kc_dict}})
    kc = tm.classes
    assert kc.host.per_op_s > 0 and kc.gemm_s(512, 512, 512, "fp32") > 0
    spec, cfg, st = _early(16.0)
    lt = predict_layouts(tm, spec, cfg, st, "fp32")
    assert 0 < lt["roo"].step_s < 60


def _point_record(measured_ms: float, seed: int = 0) -> dict:
    spec, cfg = get_preset("early-ranking"), get_model_config("early-ranking")
    lay = {"step_ms": {"median": measured_ms}, "aten_ops_per_step": 500, "syncs_per_step": 0.5}
    return {
        "kind": "point",
        "status": "ok",
        "config": {"preset": "early-ranking", "spec": spec.to_dict(), "model": cfg.to_dict(), "seed": seed,
                   "requests_per_batch": 16, "dtype": "bf16"},
        "metrics": {"layouts": {"impression": dict(lay), "roo": dict(lay)}, "speedup": 2.0},
    }  # fmt: skip


def test_validate_time_never_fits_to_the_measured_step(tmp_path):
    from harness.commands.validate_time import validate_time

    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps({"kind": "calibration", "metrics": {"kernel_classes": _synthetic().to_dict()}}))
    outs = []
    for ms in (10.0, 40.0):
        f = tmp_path / f"r{ms}.jsonl"
        f.write_text(json.dumps(_point_record(ms)) + "\n" + json.dumps({"kind": "calibration"}) + "\n")
        outs.append(validate_time([str(f)], str(cal), min_step_ms=5.0))
    a, b = (o["points"][0]["layouts"]["impression"] for o in outs)
    assert a["predicted_ms"] == pytest.approx(b["predicted_ms"])
    assert a["error"] == pytest.approx(a["predicted_ms"] / 10.0 - 1)
    assert outs[0]["summary"]["step"]["n"] == 2
    assert outs[0]["worst"] and set(outs[0]["worst"][0]["components"]) == {"user", "item", "interaction", "optimizer"}
    with pytest.raises(UserError, match="no measured point"):
        validate_time([str(cal)], str(cal))


@pytest.mark.gpu
def test_cuda_calibration_loads_and_prices_every_class():
    from harness.calibration import calibrate_kernels

    kc_dict = calibrate_kernels("cuda")
    assert not kc_dict["serial"] and kc_dict["hstu_attention"] is not None
    assert sum(kc_dict["benchmark"]["seconds"].values()) < 90
    kc = KernelClasses.from_dict(kc_dict)
    assert kc.gemm_s(8192, 8192, 8192, "bf16") < kc.gemm_s(8192, 8192, 8192, "fp32")
    # a 16-row GEMM is bound by reading its weight: far below the matmul roof, never filled to it
    assert 2 * 16 * 4096 * 4096 / kc.gemm_s(16, 4096, 4096, "bf16") < 300e12
    g = kc.gemm["bf16"]
    assert g.measured is None or g.measured.sum() > 0.5 * g.measured.size
    assert 1e-7 < kc.host.per_op_s < 1e-3 and kc.host.graph_launch_s < kc.host.per_op_s * 100
    assert kc.host.per_triton_launch_s > 0
    assert kc.host.per_op_by_model == {}  # opt-in (--host-models)
    h = kc.hstu_attention
    assert len(h.grid.axes) == 3
    # a few sequences leave SMs idle: at L = 1024 the rate rises with the sequences per call (a
    # tiny call is not a slow one per FLOP: timed on a spun-ahead device, L = 64 x 8 sequences
    # costs the kernels' few microseconds)
    assert h.grid(1024.0, 1.0, 512.0) > 1.2 * h.grid(1024.0, 1.0, 8.0)
    assert len(h.grid.axes[2]) == 4 and h.grid(256.0, 1.0, 2048.0) > 0  # the impression layout's calls
    spec, cfg = get_preset("hstu-ranking"), get_model_config("hstu-ranking")
    lt = predict_layouts(TimeModel(kc), spec, cfg, expected_stats(spec, cfg, 16.0))
    assert lt["impression"].device_s > lt["roo"].device_s > 0


# --- the second pass: measured hulls, per-layer HSTU calls, host mix, step rules ---------------------


def test_fill_nearest_takes_a_smaller_measured_cell_never_an_invented_one():
    from roo_ref.cost.kernel_classes import fill_nearest

    rng = np.random.default_rng(1)
    v = rng.uniform(1.0, 10.0, (4, 4, 4))
    ok = np.ones_like(v, dtype=bool)
    ok[2:, 2:, :] = False  # a big corner, as past a memory cap
    out = fill_nearest(np.where(ok, v, np.nan), ok)
    assert np.array_equal(out[ok], v[ok])
    assert out.max() <= v[ok].max()
    # (2, 2, 0): its dominated measured neighbours are (1, 2, 0) and (2, 1, 0)
    assert out[2, 2, 0] in (v[1, 2, 0], v[2, 1, 0])
    assert out[3, 3, 3] in {v[i, j, k] for i, j, k in np.argwhere(ok) if i <= 3 and j <= 3}
    with pytest.raises(UserError, match="smallest cell"):
        fill_nearest(v, ~ok)


def test_rate_grid_keeps_unmeasured_cells_at_measured_rates():
    ax = [16.0, 256.0, 4096.0]
    m, k, n = np.meshgrid(ax, ax, ax, indexing="ij")
    work = 2 * m * k * n
    rng = np.random.default_rng(2)
    rate = np.minimum(work / 1e3, 5e14) * rng.uniform(0.9, 1.1, work.shape)  # small shapes slow
    secs = work / rate
    secs[2, 2, 2] = np.nan  # not run: past the cap
    rg = RateGrid.from_times([ax] * 3, secs, work, "gemm")
    measured_best = np.nanmax(work / secs)
    assert rg.grid.values.max() <= measured_best * (1 + 1e-9)
    assert rg.measured is not None and not rg.measured[2, 2, 2] and rg.measured.sum() == 26
    back = RateGrid.from_dict(json.loads(json.dumps(rg.to_dict())), "gemm")
    assert np.array_equal(back.measured, rg.measured)
    # beyond the grid the edge's rate: a 10x bigger m costs 10x the edge cell's time
    t_edge = rg.seconds(2 * 4096.0**3, 4096.0, 4096.0, 4096.0)
    assert rg.seconds(2 * 40960.0 * 4096**2, 40960.0, 4096.0, 4096.0) == pytest.approx(10 * t_edge)


def _hstu3(floor_rate: float = 1e12) -> RateGrid:
    """(length, targets, sequences): the rate rises with length and with sequences."""
    L, t, B = [64.0, 1024.0], [1.0, 32.0], [8.0, 512.0]
    Lg, tg, Bg = np.meshgrid(L, t, B, indexing="ij")
    work = 3 * 2 * 4 * 256 * Bg * (Lg * Lg / 2 + tg * Lg)
    rate = floor_rate * (Lg / 64.0) * np.sqrt(Bg / 8.0)
    return RateGrid.from_times([L, t, B], work / rate + 2e-5, work, "hstu")


def test_hstu_class_prices_one_call_per_layer_and_fills_with_sequences():
    kc = KernelClasses(**{**_synthetic().__dict__, "hstu_attention": _hstu3()})
    flops = 3 * 2 * 4 * 256 * 64 * (256 * 256 / 2 + 32 * 256)  # 64 sequences of 256, 32 targets
    one = kc.hstu_attention_s(flops, 256.0, 32.0, 64.0, calls=1)
    five = kc.hstu_attention_s(5 * flops, 256.0, 32.0, 64.0, calls=5)
    assert five == pytest.approx(5 * one)
    assert kc.hstu_attention_s(flops, 256.0, 32.0, 512.0) < kc.hstu_attention_s(flops, 256.0, 32.0, 8.0)
    tiny = kc.hstu_attention_s(5 * 1e3, 64.0, 1.0, 8.0, calls=5)
    assert tiny == pytest.approx(5 * kc.hstu_attention.floor_s)  # a fixed cost per layer's call
    old = KernelClasses(**{**_synthetic().__dict__})  # a two-axis table: one call, no sequences
    assert old.hstu_attention_s(flops, 256.0, 32.0, 64.0, calls=5) == pytest.approx(
        old.hstu_attention.seconds(flops, 256.0, 32.0)
    )


def test_hstu_ranking_attention_is_priced_at_its_real_sizes():
    from dataclasses import replace

    spec = get_preset("hstu-ranking")
    cfg = replace(get_model_config("hstu-ranking"), attention_backend="triton")
    st = expected_stats(spec, cfg, 64.0)
    kc = KernelClasses(**{**_synthetic().__dict__, "hstu_attention": _hstu3()})
    lt = predict_layouts(TimeModel(kc), spec, cfg, st, aten_ops={"impression": 900.0, "roo": 900.0})
    for lay in ("impression", "roo"):
        att = lt[lay].class_ms()["hstu_attention"]
        row = next(r for r in lt[lay].rows if r.name == "hstu attention")
        assert att == pytest.approx(row.device_s * 1e3) and att > 0
    # the impression layout's many one-target sequences do more work than ROO's few
    assert lt["impression"].class_ms()["hstu_attention"] > 5 * lt["roo"].class_ms()["hstu_attention"]
    assert lt["roo"].triton_launches >= 3 * cfg.hstu_layers


def test_triton_launches_cost_host_time_in_eager_steps_only():
    from dataclasses import replace

    spec = get_preset("hstu-ranking")
    cfg = replace(get_model_config("hstu-ranking"), attention_backend="triton")
    st = expected_stats(spec, cfg, 16.0)
    base = _synthetic()
    slow = KernelClasses(**{**base.__dict__, "host": Host(5e-6, 3e-6, 8e-6, 2e-5, 1e-3)})
    ops = {"impression": 100.0, "roo": 100.0}
    a = predict_layouts(TimeModel(base), spec, cfg, st, aten_ops=ops)["roo"]
    b = predict_layouts(TimeModel(slow), spec, cfg, st, aten_ops=ops)["roo"]
    assert b.triton_launches > 0
    assert b.host_s - a.host_s == pytest.approx(b.triton_launches * 1e-3)
    g = predict_layouts(TimeModel(slow), spec, cfg, st, graph=True)["roo"]
    assert g.triton_launches == 0 and g.host_s < 1e-4


def test_a_models_own_host_cost_per_op_prices_its_eager_steps():
    """A calibration's per-model host cost per op (the preset's own step at a few requests) prices
    that model's eager steps, layout by layout; another model, and a replay, keep per_op_s. It
    survives the record round trip."""
    spec, cfg, st = _early(256.0)
    base = _synthetic(per_op_s=5e-6)
    own = Host(5e-6, 3e-6, 8e-6, 2e-5, per_op_by_model={"early-ranking": {"roo": 2e-5}})
    kc = KernelClasses(**{**base.__dict__, "host": own})
    assert KernelClasses.from_dict(kc.to_dict()).host == own
    ops = {"impression": 400.0, "roo": 400.0}
    fallback = predict_layouts(TimeModel(base), spec, cfg, st, aten_ops=ops)
    mine = predict_layouts(TimeModel(kc), spec, cfg, st, aten_ops=ops, model="early-ranking")
    other = predict_layouts(TimeModel(kc), spec, cfg, st, aten_ops=ops, model="late-ranking")
    tri = mine["roo"].triton_launches * own.per_triton_launch_s
    assert mine["roo"].host_s == pytest.approx(400 * 2e-5 + tri)
    assert mine["impression"].host_s == pytest.approx(fallback["impression"].host_s)  # no entry: per_op_s
    assert other["roo"].host_s == pytest.approx(fallback["roo"].host_s)
    graph = predict_layouts(TimeModel(kc), spec, cfg, st, graph=True, model="early-ranking")["roo"]
    assert graph.host_s == pytest.approx(8e-6 + 2 * 5e-6)  # a replay's host work is not the eager mix


def test_step_is_pipelined_without_syncs_and_drained_with_them():
    spec, cfg, st = _early(256.0)
    tm = TimeModel(_synthetic(per_op_s=2e-5))
    ops = {"impression": 600.0, "roo": 600.0}
    free = predict_layouts(tm, spec, cfg, st, aten_ops=ops)
    one = predict_layouts(tm, spec, cfg, st, aten_ops=ops, syncs={"impression": 1.0, "roo": 1.0})
    half = predict_layouts(tm, spec, cfg, st, aten_ops=ops, syncs={"impression": 0.5, "roo": 0.5})
    for lay in ("impression", "roo"):
        f, o, h = free[lay], one[lay], half[lay]
        assert f.step_s == pytest.approx(max(f.host_s, f.device_s))
        assert o.step_s > f.step_s  # a drained pipeline exposes host and device in turn
        assert o.step_s >= max(o.host_s, o.device_s) + o.sync_s
        assert h.step_s == pytest.approx(0.5 * o.step_s + 0.5 * f.step_s)
    with pytest.raises(UserError, match="syncs"):
        predict_layouts(tm, spec, cfg, st, syncs={"roo": -1.0})


def test_in_step_syncs_drop_the_profilers_own():
    from harness.commands.validate_time import in_step_syncs

    assert in_step_syncs(2 / 3, 3) == 0.0  # an older record: the loop's closing sync and the profiler's
    assert in_step_syncs(1 / 3, 3) == 0.0
    assert in_step_syncs(1 + 2 / 3, 3) == 1.0  # one sync inside every step, an older record
    assert in_step_syncs(1.0, 3) == 1.0  # the same, counted inside the steps' ranges only
    assert in_step_syncs(3.0, None) == 3.0 and in_step_syncs(None, 3) == 0.0


def test_cpu_host_mix_is_a_whole_recommender_step():
    import torch

    from harness.calibration.host import host_terms

    h = host_terms(torch, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert 150 <= h["tiny_step_ops"] <= 600
    assert h["per_op_s"] > 0 and h["per_triton_launch_s"] == 0.0


def test_validate_time_why_prints_every_class(tmp_path, capsys):
    from harness.cli import main

    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps({"kind": "calibration", "metrics": {"kernel_classes": _synthetic().to_dict()}}))
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps(_point_record(20.0)) + "\n")
    assert main(["validate-time", str(f), "--calibration", str(cal), "--why"]) == 0
    out = capsys.readouterr().out
    assert "per kernel class" in out and "gemm" in out and "host" in out and "pipelined" in out


def test_calibration_kernels_run_under_the_triton_interpreter():
    """The HSTU class's call (as a layer makes it, relative bias included) and the Triton launch
    probe run, on the CPU through Triton's interpreter where there is no GPU."""
    pytest.importorskip("triton")
    import torch

    from harness.calibration import _hstu_shape
    from harness.calibration.hstu import _call, mask_pairs
    from harness.calibration.triton_probe import launch_add_one

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = {**_hstu_shape(), "heads": 2, "d_qk": 16, "d_v": 16}
    step, flops = _call(torch, dev, torch.Generator(device=dev).manual_seed(0), 16, 2, 3, shape)
    step()
    assert flops == pytest.approx(3 * 2 * 2 * 32 * mask_pairs(np.full(3, 16), 2))
    x = torch.rand(300, device=dev)
    y = x.clone()
    launch_add_one(y)
    assert torch.allclose(y, x + 1.0)


# --- the third pass: the first real campaign's modelling errors -------------------------------------


def test_a_slow_first_call_at_the_smallest_size_does_not_raise_every_size():
    sizes = [4e3, 1.6e4, 6.5e4, 2.6e5, 1e6, 4e6]
    curve = Curve.make(sizes, [185e-6, 5.1e-6, 4.8e-6, 9.3e-6, 24e-6, 28e-6])  # a warm-up outlier first
    assert curve(6.5e4) == pytest.approx(4.8e-6)
    assert curve(4e3) <= 4.8e-6 and np.all(np.diff(curve(np.geomspace(1e3, 1e7, 40))) >= 0)


def test_grad_reduce_width_scales_the_work_not_the_fixed_cost():
    kc = _synthetic()
    assert kc.grad_reduce_s(10.0, 10.0, 512) == pytest.approx(kc.grad_reduce_s(10.0, 10.0, 64))
    assert kc.grad_reduce_s(1e6, 1e6, 512) > 4 * kc.grad_reduce_s(1e6, 1e6, 64)


def _plateau_classes(timing: str | None) -> dict:
    """A calibration dict whose grad_reduce and hstu tables' small cells sit at a host-issue
    plateau (one eager call between two events), their big cells at device rates."""
    from roo_ref.cost.kernel_classes import hstu_cell_flops

    d = _synthetic().to_dict()
    d.pop("timing", None)
    ids, dups = np.array([4096.0, 262144.0, 2097152.0, 8388608.0]), [1.0, 256.0]
    secs = np.maximum(8e-4, ids[:, None] * 6e-10 * np.ones((1, 2)))  # device 0.6 ns/id, host 0.8 ms
    d["grad_reduce"] = {**RateGrid.from_times([ids, dups], secs, ids[:, None] * np.ones((1, 2)), "gr").to_dict()}
    d["grad_reduce"]["dim"] = 64
    shape = {"heads": 4, "d_qk": 128, "d_v": 128}
    ax = [[64.0, 1024.0, 4096.0], [1.0, 16.0], [8.0, 512.0]]
    work = hstu_cell_flops(ax, shape)
    d["hstu_attention"] = RateGrid.from_times(ax, np.maximum(2.7e-3, work / 2e14), work, "h").to_dict()
    d["hstu_shape"] = shape
    if timing:
        d["timing"] = timing
    return d


def test_a_host_issue_plateau_is_stripped_from_an_events_timed_table():
    old = KernelClasses.from_dict(_plateau_classes(None))
    assert old.grad_reduce_s(4096.0, 4096.0, 64) == pytest.approx(4096 * 6e-10, rel=0.3)
    assert old.grad_reduce_s(4096.0, 4096.0, 64) < 1e-4 and old.grad_reduce.floor_s < 1e-4
    assert old.grad_reduce_s(8388608.0, 8388608.0, 64) == pytest.approx(8388608 * 6e-10)
    flops = float(3 * 2 * 4 * 256 * 8 * (63 * 64 / 2 + 64))  # the (64, 1, 8) cell
    assert old.hstu_attention_s(flops, 64.0, 1.0, 8.0) < 1e-4
    assert not old.hstu_attention.measured[0, 0, 0] and old.hstu_attention.measured[2, 1, 1]
    new = KernelClasses.from_dict(_plateau_classes("device"))  # a device-only timer: kept as measured
    assert new.grad_reduce_s(4096.0, 4096.0, 64) == pytest.approx(8e-4)
    assert new.hstu_attention_s(flops, 64.0, 1.0, 8.0) == pytest.approx(2.7e-3)


def test_host_ops_come_from_counted_launches_where_ops_were_not_counted():
    from dataclasses import replace

    spec = get_preset("hstu-ranking")
    cfg = replace(get_model_config("hstu-ranking"), attention_backend="triton")
    st = expected_stats(spec, cfg, 8.0)
    tm = TimeModel(_synthetic(per_op_s=1e-5))
    counted = predict_layouts(tm, spec, cfg, st, launches={"impression": 500.0, "roo": 400.0})
    est = predict_layouts(tm, spec, cfg, st)
    ops = predict_layouts(tm, spec, cfg, st, aten_ops={"roo": 900.0}, launches={"roo": 400.0})
    roo = counted["roo"]
    assert roo.ops_source == "counted launches"
    assert roo.ops == pytest.approx(1.7 * (400.0 - roo.triton_launches))
    assert counted["impression"].ops == pytest.approx(1.7 * (500.0 - counted["impression"].triton_launches))
    assert est["roo"].ops_source == "estimated" and est["roo"].ops != pytest.approx(roo.ops)
    assert ops["roo"].ops == 900.0 and ops["roo"].ops_source == "counted"
    with pytest.raises(UserError, match="launches"):
        predict_layouts(tm, spec, cfg, st, launches={"roo": -1.0})


def test_validate_time_summarizes_graph_points_apart(tmp_path, capsys):
    from harness.commands.validate_time import validate_time

    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps({"kind": "calibration", "metrics": {"kernel_classes": _synthetic().to_dict()}}))
    eager, graph = _point_record(10.0), _point_record(50.0, seed=1)
    graph["config"]["graph"] = True
    prof = {"component_ms": {"user": 1.0, "item": 0.5, "interaction": 0.2, "optimizer": 0.3}, "busy_ms": 2.5}
    for lay in eager["metrics"]["layouts"].values():
        lay.update(prof, launches_per_step=300)
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps(eager) + "\n" + json.dumps(graph) + "\n")
    out = validate_time([str(f)], str(cal))
    s = out["summary"]
    assert s["step"]["n"] == 2 and s["graph"]["step"]["n"] == 2 and "device model's alone" in s["graph"]["reason"]
    assert s["speedup"]["n"] == 1 and s["graph"]["speedup"]["n"] == 1
    assert all(w["preset"] for w in out["worst"]) and len(out["worst"]) == 2  # eager layouts only
    comp = s["components"]
    assert comp["user"]["n"] == 2 and comp["device"]["n"] == 2
    row = comp["device"]["worst"][0]
    assert row["error"] == pytest.approx(row["predicted_ms"] / 2.5 - 1)
    assert out["points"][0]["layouts"]["roo"]["predicted"]["aten_ops_source"] == "counted"


class _Timeline:
    """A fake torch.cuda: the host pays `issue_s` per kernel it launches, the device runs each
    kernel `kernel_s` once issued and the one before it is done; an event records when the device
    reaches it; _sleep spins the device 1 ns per cycle."""

    def __init__(self, issue_s: float, kernel_s: float):
        self.host = self.free = 0.0
        self.issue_s, self.kernel_s = issue_s, kernel_s
        timeline = self

        class Event:
            def __init__(self, enable_timing: bool = True):
                self.at = 0.0

            def record(self):
                self.at = max(timeline.free, timeline.host)

            def elapsed_time(self, other) -> float:
                return (other.at - self.at) * 1e3

        self.cuda = type("cuda", (), {"Event": Event, "synchronize": self.synchronize, "_sleep": self.sleep})

    def synchronize(self):
        self.host = max(self.host, self.free)

    def _run(self, seconds: float):
        self.free = max(self.free, self.host) + seconds

    def sleep(self, cycles: int):
        self._run(cycles * 1e-9)

    def call(self, kernels: int = 10):
        for _ in range(kernels):
            self.host += self.issue_s
            self._run(self.kernel_s)


def test_a_long_call_is_timed_without_the_hosts_issue():
    from harness.calibration.timing import _device_seconds

    fake = _Timeline(issue_s=100e-6, kernel_s=10e-6)  # 1 ms of issue for 0.1 ms of kernels
    assert _device_seconds(fake, fake.call, True, 5) == pytest.approx(100e-6, rel=1e-6)
