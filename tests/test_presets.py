"""Workload + model presets at production shape: their public sources, the shapes those sources
give, the NAME@SCALE shrinking for CPU runs, `roo-bench presets`, and a memory estimate (the cost
model's parameter and traffic bytes, bounded against every committed H100 peak) that shows each
production shape fits one 80 GB GPU in both layouts."""

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.cli import main
from roo_ref.cost import model_cost
from roo_ref.cost.components import EMBEDDING_ROWS
from roo_ref.model_presets import MODEL_PRESETS, ModelConfig, get_model_config
from roo_ref.models import build_model, model_config_for
from workloads.errors import SpecError
from workloads.generator import generate
from workloads.presets import (
    DLRM_V2_HOT,
    DLRM_V2_ROWS,
    PRESETS,
    SOURCES,
    get_preset,
    preset_sources,
    shape_summary,
    split_scale,
)
from workloads.records import flat_view
from workloads.spec import WorkloadSpec

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = [n for n in PRESETS if n != "tiny"]
GPU_BYTES = 80e9
# The backend a production run of each preset uses (the campaign's sweep files): the torch
# reference attention materializes [B, H, n, n] scores, which do not fit at hstu-ranking's shape.
BACKEND = {"hstu-ranking": ["attention_backend=triton"]}


def _cfg(name: str) -> ModelConfig:
    return model_config_for(get_preset(name), name, BACKEND.get(name, []))


# --- sources and the shapes they give -------------------------------------------------------------
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_names_its_sources(name):
    src = preset_sources(name)
    assert src == SOURCES[name] and src and all(isinstance(x, str) and len(x) > 20 for x in src)
    if name != "tiny":  # a public config backs the shape; what no source gives is marked an assumption
        assert any(x.startswith(("MLPerf", "generative-recommenders")) for x in src)
        assert any("assumption" in x for x in src)
    assert get_model_config(name) == MODEL_PRESETS[name]


def test_late_ranking_is_mlperf_dlrm_v2():
    spec, cfg = get_preset("late-ranking"), MODEL_PRESETS["late-ranking"]
    feats = spec.item_features() + spec.user_features()  # C1..C10, then C11..C26
    assert [g.cardinality for _, g in feats] == list(DLRM_V2_ROWS)
    assert [g.pooling.mean() for _, g in feats] == list(DLRM_V2_HOT)
    assert {g.popularity for _, g in feats} == {"uniform"}
    assert spec.user_dense + spec.item_dense == 13 and spec.history.length.mean() == 0
    assert (cfg.embedding_dim, cfg.dense_arch, cfg.interaction, cfg.dcn_layers, cfg.dcn_rank) == (
        128,
        (512, 256),
        "dcn",
        3,
        512,
    )
    assert cfg.top_arch == (1024, 1024, 512, 256) and spec.n_tasks == 1  # + the 1-wide head
    assert (cfg.user_vectors + cfg.item_vectors) * cfg.embedding_dim == 27 * 128  # DLRM-v2's DCN width
    assert cfg.max_table_rows == max(DLRM_V2_ROWS) // 8


@pytest.mark.parametrize("name", ["retrieval", "early-ranking", "late-ranking"])
def test_dlrm_presets_train_dlrm_v2_per_gpu_batch(name):
    s = shape_summary(get_preset(name))
    assert s["impressions_per_step"] == pytest.approx(65_536 / 8, rel=0.005)  # 8,192 per GPU
    assert s["impressions_per_request"] == pytest.approx(10, rel=0.01)  # the ROO paper's ~10
    assert (s["user_sparse_features"], s["item_sparse_features"]) == (16, 10)
    assert s["user_ids_per_request"] == sum(DLRM_V2_HOT[10:]) and s["item_ids_per_impression"] == sum(DLRM_V2_HOT[:10])


def test_hstu_ranking_is_mlperf_dlrm_v3():
    spec, cfg = get_preset("hstu-ranking"), MODEL_PRESETS["hstu-ranking"]
    assert (spec.requests_per_batch, spec.impressions.kind, spec.impressions.value) == (64, "fixed", 32)
    assert (cfg.hstu_layers, cfg.num_heads, cfg.d_qk, cfg.d_v, cfg.embedding_dim) == (5, 4, 128, 128, 512)
    assert 1000 <= spec.history.length.mean() <= 16_384 and spec.history.length.max == 16_384
    assert cfg.max_table_rows == 10_000_000 // 8 and spec.history.item_cardinality == 10_000_000


# --- NAME@SCALE -------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(list(PRESETS)), scale=st.floats(min_value=1e-6, max_value=1.0))
def test_scale_shrinks_requests_and_tables_only(name, scale):
    base, small = get_preset(name), get_preset(f"{name}@{scale!r}")
    assert small.name == f"{name}@{scale!r}" and split_scale(small.name) == (name, scale)
    assert small.requests_per_batch == max(1, round(base.requests_per_batch * scale))
    assert small.impressions == base.impressions and small.history.length == base.history.length
    feats = small.user_features() + small.item_features()
    pairs = list(zip(feats, base.user_features() + base.item_features(), strict=True))
    assert len(pairs) == base.n_user_sparse + base.n_item_sparse
    for (_, g), (_, g0) in pairs:
        assert g.pooling == g0.pooling and 1 <= g.cardinality <= g0.cardinality
        assert g.cardinality == max(1, round(g0.cardinality * scale))
    cfg, cfg0 = model_config_for(small, small.name), MODEL_PRESETS[name]
    assert cfg.max_table_rows == max(1, round(cfg0.max_table_rows * scale))
    assert cfg.to_dict() | {"max_table_rows": 0} == cfg0.to_dict() | {"max_table_rows": 0}


@pytest.mark.parametrize("name", PRODUCTION)
def test_scaled_preset_trains_on_the_cpu_in_both_layouts(name):
    scaled = f"{name}@0.002"
    spec = get_preset(scaled)
    model = build_model(spec, scaled, overrides=["max_history_len=32"] if name == "hstu-ranking" else [], seed=1)
    assert sum(p.numel() for p in model.parameters()) < 50e6  # a CPU-sized model
    rb = generate(spec, spec.requests_per_batch, seed=2)
    losses = [model(b, lay)["loss"] for b, lay in ((rb.to_impressions(), "impression"), (rb, "roo"))]
    assert all(torch.isfinite(x) for x in losses)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("late-ranking@0", "preset 'late-ranking@0': the scale after '@' must be a number in (0, 1]"),
        ("late-ranking@1.5", "preset 'late-ranking@1.5': the scale after '@' must be a number in (0, 1]"),
        ("late-ranking@abc", "preset 'late-ranking@abc': the scale after '@' must be a number in (0, 1]"),
        ("late-ranking@nan", "preset 'late-ranking@nan': the scale after '@' must be a number in (0, 1]"),
        ("nope@0.5", "unknown preset 'nope@0.5'; choose one of: tiny, "),
    ],
)
def test_bad_scale_is_one_clear_error(name, message):
    with pytest.raises(SpecError) as e:
        get_preset(name)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


# --- roo-bench presets ------------------------------------------------------------------------------
def _cli(capsys, *argv):
    rc = main(["presets", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_presets_json_carries_shape_model_and_sources(capsys):
    rc, out, _ = _cli(capsys, "--json")
    rows = {r["name"]: r for r in flat_view(json.loads(out))["presets"]}
    assert rc == 0 and list(rows) == list(PRESETS)
    for name, r in rows.items():
        spec, cfg = get_preset(name), MODEL_PRESETS[name]
        assert r["sources"] == list(SOURCES[name]) and r["description"] == spec.description
        assert r["shape"]["requests_per_step"] == spec.requests_per_batch
        assert r["model"]["embedding_dim"] == cfg.embedding_dim and r["model"]["arch"] == cfg.arch
        assert r["model"]["table_bytes_fp32"] == r["model"]["table_rows"] * cfg.embedding_dim * 4
    assert rows["late-ranking"]["model"]["table_rows"] == sum(min(c, 5_000_000) for c in DLRM_V2_ROWS) + 5_000_000 + 4


def test_presets_scale_and_detail(capsys):
    rc, out, _ = _cli(capsys, "--scale", "0.01", "--json")
    rows = flat_view(json.loads(out))["presets"]
    assert rc == 0 and [r["name"] for r in rows] == [f"{n}@0.01" for n in PRESETS]
    late = next(r for r in rows if r["name"] == "late-ranking@0.01")
    assert late["shape"]["requests_per_step"] == 8 and late["model"]["max_table_rows"] == 50_000
    assert late["sources"][-1].startswith("scaled by 0.01")
    rc, out, _ = _cli(capsys, "hstu-ranking")
    lines = out.splitlines()
    assert rc == 0 and lines[0].startswith("hstu-ranking: ") and "  sources:" in lines
    assert [x[6:] for x in lines if x.startswith("    - ")] == list(SOURCES["hstu-ranking"])
    rc, out, err = _cli(capsys, "late-ranking@0.5", "--scale", "0.5")
    assert rc == 2 and out == "" and err.strip() == "roo-bench presets: error: give NAME@SCALE or --scale, not both"


# --- memory at production shape ---------------------------------------------------------------------
ACT_PER_TRAFFIC = 0.2  # activations + transients per byte the step moves (committed H100 peaks: <= 0.190)
SLACK = 1e9  # allocator and workspace bytes a step holds whatever its size


def estimate_peak_bytes(spec: WorkloadSpec, cfg: ModelConfig, layout: str, dtype: str = "bf16") -> float:
    """fp32 parameters + optimizer state (row-wise Adagrad: a float per embedding row; Adam: two
    floats per dense parameter, plus its gradient) + a share of the step's memory traffic."""
    lc = model_cost(spec, cfg, dtype=dtype)["layouts"][layout]
    comps = [c for c in lc.components if c.side not in ("comm", "storage")]
    emb = sum(c.param_bytes for c in comps if c.name in EMBEDDING_ROWS)
    dense = sum(c.param_bytes for c in comps) - emb
    traffic = sum(c.bytes for c in comps)
    return emb * (1 + 1 / cfg.embedding_dim) + 4 * dense + SLACK + ACT_PER_TRAFFIC * traffic


def _committed_peaks():
    """(spec, model config, layout, dtype, measured peak bytes) of every committed H100 point."""
    seen = {}
    for f in sorted((ROOT / "reports" / "data" / "h100").rglob("results.jsonl")):
        if any((d / "SUPERSEDED.md").is_file() for d in f.parents):
            continue  # re-measured since (its README says what was wrong), as the report leaves it out
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if rec["status"] != "ok":
                continue
            c = rec["config"]
            for layout, L in rec["metrics"]["layouts"].items():
                key = (json.dumps([c["spec"], c["model"]], sort_keys=True), layout, c.get("dtype", "bf16"))
                if L.get("peak_mem_bytes"):
                    seen[key] = max(seen.get(key, 0), L["peak_mem_bytes"])
    for (blob, layout, dtype), peak in seen.items():
        spec, model = json.loads(blob)
        yield WorkloadSpec.from_dict(spec), ModelConfig.from_dict(model), layout, dtype, peak


def test_memory_estimate_bounds_every_committed_h100_peak():
    rows = list(_committed_peaks())
    assert len(rows) >= 40  # DLRM presets, early-ranking and hstu-ranking k x L grids, both layouts
    ratios = [estimate_peak_bytes(spec, cfg, layout, dtype) / peak for spec, cfg, layout, dtype, peak in rows]
    assert min(ratios) >= 1.0  # an upper bound on what the H100 measured
    assert sorted(ratios)[len(ratios) // 2] < 3.0  # and not a vacuous one


@pytest.mark.parametrize("name", PRODUCTION)
@pytest.mark.parametrize("layout", ["impression", "roo"])
def test_production_shape_fits_one_80gb_gpu(name, layout):
    spec, cfg = get_preset(name), _cfg(name)
    est = estimate_peak_bytes(spec, cfg, layout)
    assert est < GPU_BYTES, f"{name} {layout}: ~{est / 1e9:.1f} GB"
    # production shape is a GPU shape: the tables alone are GBs (the CPU runs NAME@SCALE)
    assert model_cost(spec, cfg)["layouts"][layout].total("param_bytes") > 5e9
    assert math.isfinite(est) and est > 10e9


def test_scaled_preset_names_its_model_preset():
    """NAME@SCALE workloads get the model preset NAME scaled the same way (no --model needed)."""
    from roo_ref.model_presets import get_model_config
    from roo_ref.models import model_config_for
    from workloads.presets import get_preset

    spec = get_preset("late-ranking@0.01")
    assert model_config_for(spec) == get_model_config("late-ranking@0.01")
