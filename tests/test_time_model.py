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
    assert kc.grad_reduce_s(1e6, 1e6, 128) == pytest.approx(2 * kc.grad_reduce_s(1e6, 1e6, 64))


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
        assert g.device_s == pytest.approx(e.device_s)
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
    assert sum(kc_dict["benchmark"]["seconds"].values()) < 120
    kc = KernelClasses.from_dict(kc_dict)
    assert kc.gemm_s(8192, 8192, 8192, "bf16") < kc.gemm_s(8192, 8192, 8192, "fp32")
    assert 1e-7 < kc.host.per_op_s < 1e-3 and kc.host.graph_launch_s < kc.host.per_op_s * 100
    spec, cfg = get_preset("hstu-ranking"), get_model_config("hstu-ranking")
    lt = predict_layouts(TimeModel(kc), spec, cfg, expected_stats(spec, cfg, 16.0))
    assert lt["impression"].device_s > lt["roo"].device_s > 0
