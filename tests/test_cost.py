"""The analytic cost model (roo_ref.cost) against independent counts: FlopCounterMode (via
roo_ref.flops) exactly, per component and in total, both layouts; parameter bytes against the
built model; uncompressed storage against workloads.storage's measurement; expectations against
sample means; the projection against the scalar model and roo_ref.cost.comm."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from harness.cli import main
from roo_ref import cost
from roo_ref.cost import Plan, validate_preset
from roo_ref.cost import comm as comm_cost
from roo_ref.flops import count_flops
from roo_ref.models import build_model, model_config_for
from workloads.generator import generate
from workloads.presets import PRESETS, get_preset
from workloads.records import flat_view
from workloads.storage import measure, uncompressed_bytes_per_impression


def _flat(rec: dict, kind: str) -> dict:
    """The flat object a `--json` record wraps, after checking it is a record of `kind`."""
    assert rec["schema"] == "roo-bench/result/1" and rec["kind"] == kind, rec.get("kind")
    return flat_view(rec)


def _check_exact(spec, model, batch):
    st = cost.batch_stats(batch, model.config)
    for layout in cost.LAYOUTS:
        b = batch if layout == "roo" else batch.to_impressions()
        model.zero_grad(set_to_none=True)
        counted = count_flops(model, b, layout)
        rows = cost.layout_components(spec, model.config, st, layout, "fp32")
        assert sum(c.flops for c in rows) == counted["total"], layout
        assert sum(c.fwd_flops for c in rows) == counted["forward"], layout
        assert sum(c.bwd_flops for c in rows) == counted["backward"], layout
        for c in rows:
            got = sum(counted["by_module"].get(m, 0) for m in c.modules)
            assert c.flops == got, (layout, c.name)
            fwd = sum(counted["by_module_forward"].get(m, 0) for m in c.modules)
            assert c.fwd_flops == fwd, (layout, c.name)
        assert sum(c.param_bytes for c in rows) == sum(p.numel() * 4 for p in model.parameters())
        if model.config.arch != "hstu":
            assert all(c.flops_mask_aware == c.flops for c in rows)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_exact(preset):
    v = validate_preset(preset, requests=3, seed=1)
    for r in v["records"]:
        assert r["analytic_flops"] == r["counted_flops"] and r["rel_error"] == 0
    for c in v["components"]:
        assert c["analytic_flops"] == c["counted_flops"], c


@hs.composite
def configs(draw):
    arch = draw(hs.sampled_from(["dlrm", "two_tower", "hstu"]))
    kind = draw(hs.sampled_from(["geometric", "uniform", "fixed"]))
    # only the parameters the drawn kind reads: one it ignores is an error (workloads.spec)
    params = {"geometric": ["mean=2.5"], "uniform": ["low=1", "high=4"], "fixed": ["value=3"]}[kind]
    spec_over = [
        f"impressions.kind={kind}",
        *(f"impressions.{p}" for p in params),
        "impressions.max=6",
        f"history.length.mean={draw(hs.integers(1, 12))}",
        f"history.length.max={draw(hs.integers(12, 20))}",
        f"user_sparse.0.count={draw(hs.integers(0, 3))}",
        f"item_sparse.0.count={draw(hs.integers(0, 2))}",
        f"user_dense={draw(hs.integers(0, 3))}",
        f"item_dense={draw(hs.integers(0, 2))}",
    ]
    if draw(hs.booleans()):
        spec_over.append('tasks=[{"name": "a", "base_rate": 0.1}, {"name": "b", "base_rate": 0.2}]')
    heads = draw(hs.sampled_from([1, 2]))
    small = hs.lists(hs.integers(2, 12), min_size=1, max_size=2)
    model_over = [
        f"arch={arch}",
        f"embedding_dim={draw(hs.sampled_from([4, 8]))}",
        "max_table_rows=50",
        f"dense_arch={json.dumps(draw(small))}",
        f"user_arch={json.dumps(draw(small))}",
        f"item_arch={json.dumps(draw(small))}",
        f"top_arch={json.dumps(draw(small))}",
        f"user_vectors={draw(hs.integers(1, 3))}",
        f"item_vectors={draw(hs.integers(1, 3))}",
        f"interaction={draw(hs.sampled_from(['dot', 'dcn']))}",
        f"dcn_layers={draw(hs.integers(0, 2))}",
        f"dcn_rank={draw(hs.integers(1, 6))}",
        f"tower_dim={draw(hs.integers(2, 8))}",
        f"hstu_layers={draw(hs.integers(0, 2))}",
        f"num_heads={heads}",
        f"qk_dim={heads * draw(hs.integers(1, 4))}",
        f"v_dim={heads * draw(hs.integers(1, 4))}",
        f"max_history_len={draw(hs.sampled_from([0, 3, 8]))}",
        f"rab={draw(hs.sampled_from(['true', 'false']))}",
        f"head_arch={json.dumps(draw(small))}",
    ]
    return spec_over, model_over, draw(hs.integers(1, 5)), draw(hs.integers(0, 10_000))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_random_configs_exact(c):
    spec_over, model_over, requests, seed = c
    spec = get_preset("tiny").with_overrides(spec_over)
    model = build_model(spec, preset="tiny", overrides=model_over, seed=seed % 7)
    _check_exact(spec, model, generate(spec, requests, seed=seed))


def test_hstu_attention_padded_and_mask_aware():
    """Padded = B * N_max^2 work; mask-aware = the pairs target_aware_mask keeps."""
    from roo_ref.attention import target_aware_mask

    spec = get_preset("tiny")
    cfg = model_config_for(spec, "tiny", ["arch=hstu", "hstu_layers=1", "num_heads=1", "qk_dim=1", "v_dim=1"])
    b = generate(spec, 6, seed=2)
    st = cost.batch_stats(b, cfg)
    k, L = b.num_impressions, b.history_lengths
    imp_lengths = torch.repeat_interleave(2 + L, k)
    for layout, lengths, nt in (
        ("roo", 1 + L + k, k),
        ("impression", imp_lengths, torch.ones(int(k.sum()), dtype=torch.int64)),
    ):
        m = target_aware_mask(lengths, nt, int(lengths.max()))
        att = next(c for c in cost.layout_components(spec, cfg, st, layout, "fp32") if c.name == "hstu attention")
        assert att.fwd_flops_mask_aware == 2 * 2 * int(m.sum())
        assert att.fwd_flops == 2 * 2 * lengths.numel() * int(lengths.max()) ** 2
        assert att.bwd_flops == 2 * att.fwd_flops


def test_expected_equals_exact_for_fixed_distributions():
    over = [
        "impressions.kind=fixed",
        "impressions.value=4",
        "history.length.kind=fixed",
        "history.length.value=7",
        "user_sparse.0.pooling.kind=fixed",
        "user_sparse.0.pooling.value=2",
    ]
    spec = get_preset("tiny").with_overrides(over)
    for arch in ("dlrm", "two_tower", "hstu"):
        cfg = model_config_for(spec, "tiny", [f"arch={arch}", "max_history_len=5"])
        ex = cost.batch_stats(generate(spec, 16, seed=0), cfg)
        ev = cost.expected_stats(spec, cfg, 16)
        for key in cost.STAT_KEYS:
            assert getattr(ev, key) == pytest.approx(getattr(ex, key), rel=1e-12), key


def test_expected_matches_sample_means():
    spec = get_preset("tiny")
    cfg = model_config_for(spec, "tiny", ["arch=hstu", "max_history_len=20"])
    n = 20_000
    ex = cost.batch_stats(generate(spec, n, seed=5), cfg)
    ev = cost.expected_stats(spec, cfg, n)
    keys = (
        "impressions",
        "user_ids",
        "user_ids_k",
        "hist",
        "hist_k",
        "item_ids",
        "hist_capped",
        "hist_capped_k",
        "pairs_roo",
        "pairs_imp",
    )
    for key in keys:
        assert getattr(ex, key) == pytest.approx(getattr(ev, key), rel=0.03), key
    # the padded max over 20k requests is the support's top: E[max] -> the cap
    small = cost.expected_stats(spec, cfg, 8)
    exs = [cost.batch_stats(generate(spec, 8, seed=s), cfg).pad_roo for s in range(300)]
    assert np.mean(exs) == pytest.approx(small.pad_roo, rel=0.05)


@pytest.mark.parametrize("preset", ["tiny", "early-ranking"])
def test_storage_exact_and_expected(preset):
    spec = get_preset(preset)
    b = generate(spec, 48, seed=3)
    m = measure(b, spec, codecs=("none",), orders=("grouped",))
    exact = cost.batch_storage_bytes(b, spec)
    assert exact["impression"] == m["uncompressed_bytes"]["impression"]
    assert exact["roo"] == m["uncompressed_bytes"]["request"]


def test_storage_expected_within_5_percent():
    spec = get_preset("tiny")
    b = generate(spec, 3000, seed=4)
    m = measure(b, spec, codecs=("none",), orders=("grouped",))
    n = b.num_impressions_total
    for lay, key in (("impression", "impression"), ("request", "request")):
        pred = uncompressed_bytes_per_impression(spec, lay) * n
        assert abs(pred / m["uncompressed_bytes"][key] - 1) < 0.05


def test_point_cost_matches_counter_and_keys():
    spec = get_preset("tiny")
    model = build_model(spec, preset="tiny", overrides=["arch=hstu"])
    b = generate(spec, 4, seed=9)
    for layout in cost.LAYOUTS:
        pc = cost.point_cost(spec, model.config, b, layout, "bf16", "NVIDIA H100 80GB HBM3")
        counted = count_flops(model, b if layout == "roo" else b.to_impressions(), layout)["total"]
        assert pc["flops_per_step"] == counted
        assert pc["flops_masked_counted"] is True
        assert pc["flops_mask_aware"] < pc["flops_padded"]
        assert pc["device_key"] == "h100" and pc["predicted_step_ms"] > 0 and pc["ideal_speedup"] >= 1


def test_speedup_fu_and_ideal():
    assert cost.ideal_speedup(0.0, 10) == 1.0
    assert cost.ideal_speedup(1.0, 10) == pytest.approx(10.0)
    assert cost.ideal_speedup(0.5, 4) == pytest.approx(1 / (0.125 + 0.5))
    for p in ("early-ranking", "hstu-ranking"):
        spec = get_preset(p)
        mc = cost.model_cost(spec, model_config_for(spec, p))
        assert 0 < mc["f_u"] < 1
        assert mc["predicted_speedup"] > 1
        # user-side-only components vanish per impression under ROO: flops drop by ~k for them
        imp, roo = mc["layouts"]["impression"], mc["layouts"]["roo"]
        assert roo.total("flops") < imp.total("flops")


@pytest.mark.parametrize("world", [1, 4])
@pytest.mark.parametrize("layout", ["impression", "roo"])
def test_project_alltoall_matches_comm_cost(world, layout):
    spec = get_preset("late-ranking")
    cfg = model_config_for(spec, "late-ranking")
    plan = Plan.of(spec, cfg, "h100", "bf16")
    per = plan.a2a_bytes_per_rank(plan.stats(), layout)
    a = comm_cost.expected_a2a_bytes(
        spec, layout, world, embedding_dim=cfg.embedding_dim, emb_bytes=2, row_cap=cfg.max_table_rows
    )
    assert per * world == pytest.approx(a.total, rel=1e-12)
    assert per * (world - 1) == pytest.approx(a.cross_total, rel=1e-12, abs=1e-6)


def test_project_vectorized_equals_scalar_and_model():
    spec = get_preset("hstu-ranking")
    cfg = model_config_for(spec, "hstu-ranking")
    plan = Plan.of(spec, cfg, "h100", "bf16")
    rpd = np.array([1e8, 5e9, 2e10])
    g = np.array([1, 8, 512])
    k = np.array([4.0, 32.0, 64.0])
    L = np.array([100.0, 1000.0, 3000.0])
    vec = plan.evaluate(rpd, g, k, L)
    for i in range(3):
        one = plan.evaluate(rpd[i], g[i], k[i], L[i])
        for lay in cost.LAYOUTS:
            for m in ("gpu_hours_per_day", "storage_tb_per_day", "alltoall_tb_per_day", "energy_kwh_per_day"):
                assert float(vec[lay][m][i]) == pytest.approx(float(one[lay][m]), rel=1e-12)
    # at the spec's own means the projection's step equals model_cost's expected step
    at_spec = plan.evaluate(1e9, 8)
    mc = cost.model_cost(spec, cfg)
    for lay in cost.LAYOUTS:
        assert float(at_spec[lay]["step_ms"]) == pytest.approx(mc["layouts"][lay].step_s * 1e3, rel=1e-12)
        assert float(at_spec[lay]["gpu_hours_per_day"]) == pytest.approx(
            1e9 / spec.requests_per_batch * mc["layouts"][lay].step_s / 3600, rel=1e-12
        )
    s = at_spec["savings"]["gpu_hours_per_day"]
    ratio = at_spec["roo"]["gpu_hours_per_day"] / at_spec["impression"]["gpu_hours_per_day"]
    assert float(s) == pytest.approx(1 - float(ratio))


def test_layer_norms_under_half_autocast_run_in_fp32_with_casts():
    """autocast runs layer_norm in fp32: a bf16 step's HSTU norms move more bytes than an fp32
    step's (the casts each way plus fp32 reads and writes) and launch 4 more kernels per norm."""
    spec = get_preset("hstu-ranking")
    cfg = model_config_for(spec, "hstu-ranking")
    rows = {}
    for dtype in ("fp32", "bf16"):
        lay = cost.model_cost(spec, cfg, dtype=dtype)["layouts"]["roo"]
        rows[dtype] = next(c for c in lay.components if c.name == "hstu layer norms")
    norms = 2 * cfg.hstu_layers + 1
    assert rows["bf16"].bytes > rows["fp32"].bytes
    assert rows["bf16"].kernels == rows["fp32"].kernels + 4 * norms
    assert rows["bf16"].other_flops == rows["fp32"].other_flops


# --- CLI -------------------------------------------------------------------------------------------
def _run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_model_json(capsys):
    rc, out, _ = _run(capsys, "model", "--preset", "late-ranking", "--json", "--world-size", "4")
    assert rc == 0
    d = _flat(json.loads(out), "model")
    assert {"components", "totals", "predicted_speedup", "f_u", "ideal_speedup"} <= set(d)
    assert set(d["totals"]) == {"impression", "roo"}
    for c in d["components"]:
        assert {"name", "layout", "fwd_flops", "bwd_flops", "bytes", "time_ms"} <= set(c)
    names = {c["name"] for c in d["components"]}
    assert {
        "interaction",
        "top arch",
        "all-to-all (sparse features)",
        "storage (uncompressed)",
        "request→impression expansion",
        "dense optimizer (Adam)",
    } <= names
    assert d["totals"]["roo"]["alltoall_bytes"] < d["totals"]["impression"]["alltoall_bytes"]


def test_cli_model_exact_and_text(capsys):
    rc, out, _ = _run(
        capsys,
        "model",
        "--preset",
        "tiny",
        "--exact",
        "--requests",
        "5",
        "--hardware",
        "cpu",
        "--dtype",
        "fp32",
        "--model-set",
        "arch=hstu",
        "--json",
    )
    assert rc == 0 and _flat(json.loads(out), "model")["exact"] is True
    rc, out, _ = _run(capsys, "model", "--preset", "tiny")
    assert rc == 0 and "predicted ROO speedup" in out


def test_cli_validate_json(capsys):
    rc, out, _ = _run(capsys, "validate", "--preset", "tiny", "--json", "--storage-requests", "16")
    assert rc == 0
    d = _flat(json.loads(out), "validate")
    assert d["max_rel_error"] == 0
    assert [(r["preset"], r["layout"]) for r in d["presets"]] == [("tiny", "impression"), ("tiny", "roo")]
    assert all({"analytic_flops", "counted_flops", "rel_error"} <= set(r) for r in d["presets"])
    assert d["max_storage_rel_error"] == 0


def test_cli_project_json(capsys):
    rc, out, _ = _run(
        capsys, "project", "--preset", "early-ranking", "--requests-per-day", "1e10", "--gpus", "64", "--json"
    )
    assert rc == 0
    d = _flat(json.loads(out), "project")
    for lay in ("impression", "roo"):
        for m in ("gpu_hours_per_day", "storage_tb_per_day", "alltoall_tb_per_day", "energy_kwh_per_day"):
            assert d["layouts"][lay][m] > 0
    for m, v in d["savings"].items():
        assert v == pytest.approx(1 - d["layouts"]["roo"][m] / d["layouts"]["impression"][m])
        assert 0 < v < 1


@pytest.mark.parametrize(
    "argv, msg",
    [
        (
            ["project", "--preset", "nope", "--requests-per-day", "1e9", "--gpus", "8"],
            "roo-bench project: error: unknown preset 'nope'; choose one of: tiny, retrieval, early-ranking, "
            "late-ranking, hstu-ranking (see `roo-bench presets`)",
        ),
        (
            ["project", "--preset", "tiny", "--requests-per-day", "0", "--gpus", "8"],
            "roo-bench project: error: --requests-per-day 0.0 must be > 0",
        ),
        (
            ["project", "--preset", "tiny", "--requests-per-day", "-5", "--gpus", "8"],
            "roo-bench project: error: --requests-per-day -5.0 must be > 0",
        ),
        (
            ["project", "--preset", "tiny", "--requests-per-day", "1e9", "--gpus", "0"],
            "roo-bench project: error: --gpus 0 must be >= 1",
        ),
        (
            ["project", "--preset", "tiny", "--requests-per-day", "1e9", "--gpus", "8", "--hardware", "tpu"],
            "roo-bench project: error: unknown device 'tpu'; choose one of: h100, h200, a100, cpu",
        ),
        (
            ["project", "--preset", "tiny", "--requests-per-day", "1e9", "--gpus", "8", "--device", "h100"],
            "roo-bench project: error: --device is not an option of `project`: the datasheet entry to price on is "
            "--hardware h100 | h200 | a100 | cpu (--device names a torch device in bench, sweep and comm)",
        ),
        (
            ["model", "--preset", "tiny", "--device", "cuda"],
            "roo-bench model: error: --device is not an option of `model`: the datasheet entry to price on is "
            "--hardware h100 | h200 | a100 | cpu (--device names a torch device in bench, sweep and comm)",
        ),
        (
            ["model", "--preset", "tiny", "--set", "bogus=1"],
            "roo-bench model: error: --set bogus: unknown key 'bogus'; allowed here: ['description', "
            "'history', 'impressions', 'item_dense', 'item_sparse', 'name', 'requests_per_batch', 'seed', "
            "'tasks', 'user_dense', 'user_sparse']",
        ),
        (
            [
                "model",
                "--preset",
                "tiny",
                "--model-set",
                "arch=hstu",
                "--set",
                "history.length.kind=fixed",
                "--set",
                "history.length.value=0",
            ],
            "roo-bench model: error: model arch='hstu' needs a user history, but history.length is always 0; "
            "give history.length a distribution with positive lengths (e.g. history.length.kind=lognormal)",
        ),
        (
            ["model", "--preset", "tiny", "--dtype", "int8"],
            "roo-bench model: error: --dtype 'int8'; allowed: bf16, fp32",
        ),
        (["model", "--preset", "tiny", "--requests", "0"], "roo-bench model: error: --requests 0.0 must be > 0"),
        (
            ["validate", "--preset", "nope"],
            "roo-bench validate: error: unknown preset 'nope'; choose one of: tiny, retrieval, early-ranking, "
            "late-ranking, hstu-ranking or all",
        ),
    ],
)
def test_cli_bad_input(capsys, argv, msg):
    rc, out, err = _run(capsys, *argv)
    assert rc == 2
    assert out == ""
    assert err.strip().splitlines() == [msg]
