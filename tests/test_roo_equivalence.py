"""ROO equivalence: the impression-level and the ROO layout of every model compute the same loss,
the same logits and the same gradient for EVERY parameter, given the same weights and the same
impressions (the impression batch is `to_impressions()` of the request batch).

- every preset model (shrunk by overrides so CPU is fast): fp32 at rtol 1e-5 / atol 1e-6 and
  float64 at rtol 1e-10 / atol 1e-12;
- >= 50 random small configs (hypothesis): float64, rtol 1e-10 / atol 1e-12;
- edge cases: all k = 1, very long histories, empty histories;
- bf16 (autocast, as the Trainer runs it), GR's rule: with err(x) = max |x - x_fp32_ref| where the
  reference is the fp32 impression-level model, err(roo bf16) <= 2 x err(impression bf16) for loss
  and logits and <= 5 x for every parameter gradient;
- HSTU stack level: one ROO request sequence (history + k targets, target-aware mask) reproduces
  the target outputs of the k impression sequences (history + 1 target).
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roo_ref.embeddings import embedding_parameters
from roo_ref.jagged import offsets_from_lengths
from roo_ref.model_presets import MODEL_PRESETS, ModelConfig
from roo_ref.models import build_model
from roo_ref.models.hstu import HSTUStack
from roo_ref.train import Trainer
from workloads.distributions import Dist
from workloads.errors import SpecError, UserError
from workloads.generator import generate
from workloads.presets import PRESETS, get_preset
from workloads.spec import HistorySpec, SparseGroup, Task, WorkloadSpec

# Shrink every preset's model (same architecture, small widths) and its data (short histories).
SMALL_MODEL = {
    "tiny": [],
    "early-ranking": [
        "embedding_dim=8",
        "max_table_rows=500",
        "user_arch=[32,16]",
        "dense_arch=[8]",
        "item_arch=[16]",
        "top_arch=[16,8]",
    ],
    "late-ranking": [
        "embedding_dim=8",
        "max_table_rows=500",
        "user_arch=[32,16]",
        "dense_arch=[16,8]",
        "item_arch=[16]",
        "dcn_rank=8",
        "top_arch=[32,16,8]",
    ],
    "retrieval": [
        "embedding_dim=8",
        "max_table_rows=500",
        "user_arch=[32,16]",
        "dense_arch=[8]",
        "item_arch=[16]",
        "tower_dim=8",
    ],
    "hstu-ranking": [
        "embedding_dim=16",
        "max_table_rows=500",
        "hstu_layers=2",
        "num_heads=2",
        "qk_dim=8",
        "v_dim=8",
        "max_history_len=24",
        "pos_buckets=32",
        "head_arch=[16]",
    ],
}
SMALL_SPEC = {
    "tiny": [],
    "early-ranking": ["history.length.max=40"],
    "late-ranking": ["history.length.max=40", "user_sparse.0.pooling.max=6"],
    "retrieval": ["history.length.max=40"],
    "hstu-ranking": ["history.length.max=40", "impressions.value=5"],
}


def _dense(g: torch.Tensor | None) -> torch.Tensor | None:
    if g is None:
        return None
    return g.to_dense() if g.is_sparse else g


def run_both(model, rb, amp_bf16=False):
    """(loss, logits, grads) for the impression layout and for the ROO layout, same weights."""
    out = {}
    ib = rb.to_impressions()
    for layout, batch in (("impression", ib), ("roo", rb)):
        m = copy.deepcopy(model)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp_bf16):
            res = m(batch, layout)
        res["loss"].backward()
        grads = {n: _dense(p.grad) for n, p in m.named_parameters()}
        out[layout] = (res["loss"].detach(), res["logits"].detach(), grads)
    return out["impression"], out["roo"]


def assert_equivalent(model, rb, rtol, atol):
    (l1, o1, g1), (l2, o2, g2) = run_both(model, rb)
    torch.testing.assert_close(l2, l1, rtol=rtol, atol=atol)
    assert o1.shape == (rb.num_impressions_total, rb.labels.shape[1])
    torch.testing.assert_close(o2, o1, rtol=rtol, atol=atol)
    assert g1.keys() == g2.keys() and len(g1) > 0
    for name in g1:
        if g1[name] is None:  # unused parameter: unused in both
            assert g2[name] is None, name
            continue
        torch.testing.assert_close(g2[name], g1[name], rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
    # the test must not pass vacuously: most parameters carry a nonzero gradient
    # (a zero-element parameter — a [D, 0] weight of a model with no user features, or the [0, D]
    # fused table of an EmbeddingBagCollection without features, gradient None — has no entries)
    numel = {n: p.numel() for n, p in model.named_parameters()}
    sized = {n: g for n, g in g1.items() if numel[n] > 0}
    nonzero = [n for n, g in sized.items() if g is not None and g.abs().max() > 0]
    assert len(nonzero) >= 0.8 * len(sized), f"too many zero gradients: {sorted(set(sized) - set(nonzero))}"


def preset_case(name, dtype, n_requests=6, seed=3):
    spec = get_preset(name).with_overrides(SMALL_SPEC[name])
    model = build_model(spec, preset=name, overrides=SMALL_MODEL[name], dtype=dtype, seed=seed)
    rb = generate(spec, n_requests, seed=seed)
    return spec, model, rb


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_has_a_model_preset(name):
    assert name in MODEL_PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_equivalence_fp32(name):
    _, model, rb = preset_case(name, torch.float32)
    assert (rb.num_impressions > 1).any()  # some request actually shares its user side
    assert_equivalent(model, rb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_equivalence_fp64(name):
    _, model, rb = preset_case(name, torch.float64)
    assert_equivalent(model, rb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["tiny", "late-ranking", "retrieval", "hstu-ranking"])
def test_preset_equivalence_dcn_and_hstu_variants_on_tiny(name):
    # the tiny workload under each architecture (incl. DCN and HSTU without RAB)
    arch = {
        "tiny": ["interaction=dcn"],
        "late-ranking": ["arch=dlrm", "interaction=dot"],
        "retrieval": ["arch=two_tower"],
        "hstu-ranking": ["arch=hstu", "rab=false"],
    }[name]
    spec = get_preset("tiny")
    model = build_model(spec, preset="tiny", overrides=arch, dtype=torch.float64, seed=1)
    assert_equivalent(model, generate(spec, 8, seed=5), rtol=1e-10, atol=1e-12)


# --- random small configs ----------------------------------------------------------------------
ARCH_OVERRIDES = {
    "dot": ["arch=dlrm", "interaction=dot"],
    "dcn": ["arch=dlrm", "interaction=dcn"],
    "two_tower": ["arch=two_tower"],
    "hstu": ["arch=hstu"],
}


@st.composite
def random_case(draw):
    arch = draw(st.sampled_from(sorted(ARCH_OVERRIDES)))
    k_hi = draw(st.integers(1, 5))
    h_lo = draw(st.integers(0, 3))
    h_hi = draw(st.integers(h_lo, 12))
    if arch == "hstu" and h_hi == 0:
        h_hi = 1  # a spec whose history is always empty is rejected for HSTU (tested separately)
    spec = WorkloadSpec(
        name="custom",
        impressions=Dist(kind="uniform", low=1, high=k_hi, min=1),
        history=HistorySpec(
            length=Dist(kind="uniform", low=h_lo, high=h_hi),
            item_cardinality=50,
            action_types=draw(st.integers(1, 3)),
        ),
        user_sparse=(SparseGroup("u", draw(st.integers(0, 3)), 40, Dist(kind="uniform", low=0, high=3)),),
        user_dense=draw(st.integers(0, 3)),
        item_sparse=(SparseGroup("i", draw(st.integers(0, 2)), 40, Dist(kind="uniform", low=1, high=2)),),
        item_dense=draw(st.integers(0, 2)),
        tasks=tuple(Task(f"t{i}", 0.3) for i in range(draw(st.integers(1, 3)))),
    )
    heads = draw(st.sampled_from([1, 2]))
    overrides = [
        *ARCH_OVERRIDES[arch],
        f"embedding_dim={draw(st.sampled_from([4, 8]))}",
        f"max_table_rows={draw(st.sampled_from([7, 1000]))}",  # 7: many hash collisions
        f"user_vectors={draw(st.integers(1, 3))}",
        f"item_vectors={draw(st.integers(1, 2))}",
        f"user_arch=[{draw(st.sampled_from([8, 12]))}]",
        f"num_heads={heads}",
        f"qk_dim={4 * heads}",
        f"v_dim={2 * heads}",
        f"hstu_layers={draw(st.integers(1, 2))}",
        f"rab={draw(st.booleans())}".lower(),
        f"max_history_len={draw(st.sampled_from([0, 4]))}",
        "pos_buckets=8",
        "time_buckets=8",
        "dcn_layers=2",
        "dcn_rank=4",
        "tower_dim=4",
    ]
    n_req = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 10_000))
    return spec, overrides, n_req, seed


@settings(max_examples=55, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(random_case())
def test_random_configs_equivalent_fp64(case):
    spec, overrides, n_req, seed = case
    model = build_model(spec, preset="tiny", overrides=overrides, dtype=torch.float64, seed=seed)
    rb = generate(spec, n_req, seed=seed)
    assert_equivalent(model, rb, rtol=1e-10, atol=1e-12)


# --- edge cases ----------------------------------------------------------------------------------
def _edge_spec(k: Dist, hist: Dist) -> WorkloadSpec:
    tiny = get_preset("tiny")
    return WorkloadSpec(
        name="custom",
        impressions=k,
        history=HistorySpec(length=hist, item_cardinality=500),
        user_sparse=tiny.user_sparse,
        user_dense=3,
        item_sparse=tiny.item_sparse,
        item_dense=2,
        tasks=(Task("a", 0.3), Task("b", 0.2)),
    )


@pytest.mark.parametrize("arch", sorted(ARCH_OVERRIDES))
@pytest.mark.parametrize(
    "case",
    ["k1", "long_history", "empty_history", "mixed_empty"],
)
def test_edge_cases(arch, case):
    k = Dist(kind="fixed", value=1, min=1) if case == "k1" else Dist(kind="uniform", low=1, high=4, min=1)
    hist = {
        "k1": Dist(kind="uniform", low=0, high=6),
        "long_history": Dist(kind="uniform", low=250, high=300),
        "empty_history": Dist(kind="fixed", value=0),
        "mixed_empty": Dist(kind="uniform", low=0, high=1),
    }[case]
    if arch == "hstu" and case == "empty_history":
        pytest.skip("covered by test_hstu_rejects_always_empty_history")
    spec = _edge_spec(k, hist)
    model = build_model(
        spec,
        preset="tiny",
        overrides=[*ARCH_OVERRIDES[arch], "embedding_dim=8", "qk_dim=8", "v_dim=8"],
        dtype=torch.float64,
        seed=2,
    )
    rb = generate(spec, 5, seed=11)
    if case == "k1":
        assert (rb.num_impressions == 1).all()
    if case == "mixed_empty":
        rb = generate(spec, 12, seed=11)
        assert (rb.history_lengths == 0).any() and (rb.history_lengths > 0).any()
    assert_equivalent(model, rb, rtol=1e-10, atol=1e-12)


def test_hstu_empty_history_rows_still_have_target_tokens():
    # a batch where every request's history happens to be empty: HSTU runs on [context, targets]
    spec = _edge_spec(Dist(kind="uniform", low=1, high=4, min=1), Dist(kind="uniform", low=0, high=1))
    model = build_model(spec, preset="tiny", overrides=["arch=hstu"], dtype=torch.float64, seed=2)
    ib = generate(spec, 40, seed=1).to_impressions()
    rows = (ib.history_lengths == 0).nonzero().reshape(-1)[:6]
    sub = ib.permute(rows).to_requests()
    assert int(sub.history_lengths.sum()) == 0 and sub.num_impressions_total > 0
    assert_equivalent(model, sub, rtol=1e-10, atol=1e-12)


def test_custom_spec_must_name_its_model_preset():
    # a spec that is not a preset implies no model: one clear error, never a silent `tiny`
    spec = _edge_spec(Dist(kind="fixed", value=2, min=1), Dist(kind="fixed", value=3))
    with pytest.raises(SpecError, match=r"^workload 'custom' has no model preset of its name.*one of: tiny, "):
        build_model(spec)
    with pytest.raises(SpecError, match=r"^unknown model preset 'nope'; choose one of: tiny, "):
        build_model(spec, preset="nope")
    assert build_model(spec, preset="tiny").config == MODEL_PRESETS["tiny"]


def test_hstu_rejects_always_empty_history():
    spec = _edge_spec(Dist(kind="fixed", value=2, min=1), Dist(kind="fixed", value=0))
    msg = r"^model arch='hstu' needs a user history, but history.length is always 0"
    with pytest.raises(SpecError, match=msg):
        build_model(spec, preset="tiny", overrides=["arch=hstu"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("qk_dim=10", "model qk_dim=10 is not divisible by num_heads=4"),
        ("attention_backend=cuda", "model attention_backend='cuda'; allowed: torch, triton"),
        ("nope=1", "--set nope: unknown model key"),
        ("user_arch=[0]", "model user_arch=[0] must be a list of integers >= 1"),
    ],
)
def test_model_config_errors(override, message):
    with pytest.raises(SpecError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        MODEL_PRESETS["hstu-ranking"].with_overrides(["num_heads=4", override])


def test_config_round_trip():
    for cfg in MODEL_PRESETS.values():
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg


# --- bf16 under GR's rule ------------------------------------------------------------------------
def _err(x, ref):
    return (x.float() - ref.float()).abs().max().item()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_bf16_rule(name):
    _, model, rb = preset_case(name, torch.float32, n_requests=8)
    (rl, ro, rg), _ = run_both(model, rb)  # fp32 reference: impression layout
    (il, io, ig), (ql, qo, qg) = run_both(model, rb, amp_bf16=True)

    # floor: bf16 rounding of the reference value itself (so an error of exactly 0 on one side
    # does not demand exactly 0 on the other)
    def floor(ref):
        return 2.0**-9 * ref.float().abs().max().item()

    assert _err(ql, rl) <= 2 * _err(il, rl) + floor(rl)
    assert _err(qo, ro) <= 2 * _err(io, ro) + floor(ro)
    for n in rg:
        if rg[n] is None:
            continue
        assert _err(qg[n], rg[n]) <= 5 * _err(ig[n], rg[n]) + floor(rg[n]), n


# --- HSTU stack: one request sequence == k impression sequences ----------------------------------
@pytest.mark.parametrize("rab", [False, True])
def test_hstu_request_sequence_reproduces_impression_targets(rab):
    cfg = ModelConfig(
        arch="hstu",
        embedding_dim=16,
        hstu_layers=3,
        num_heads=2,
        qk_dim=8,
        v_dim=8,
        normalizer=40.0,
        rab=rab,
        pos_buckets=16,
        time_buckets=8,
    )
    torch.manual_seed(0)
    stack = HSTUStack(cfg).double()
    g = torch.Generator().manual_seed(1)
    hist_len, k = [5, 0, 9], [3, 1, 4]
    req_tokens, req_pos, req_ts = [], [], []
    imp_tokens, imp_pos, imp_ts, imp_len = [], [], [], []
    for length, kk in zip(hist_len, k, strict=True):
        hist = torch.randn(length, 16, generator=g, dtype=torch.float64)
        tg = torch.randn(kk, 16, generator=g, dtype=torch.float64)
        hts = torch.sort(torch.randint(0, 10_000, (length,), generator=g)).values
        now = 20_000
        req_tokens.append(torch.cat([hist, tg]))
        req_pos.append(torch.cat([torch.arange(length), torch.full((kk,), length)]))
        req_ts.append(torch.cat([hts, torch.full((kk,), now)]))
        for j in range(kk):
            imp_tokens.append(torch.cat([hist, tg[j : j + 1]]))
            imp_pos.append(torch.arange(length + 1))
            imp_ts.append(torch.cat([hts, torch.tensor([now])]))
            imp_len.append(length + 1)
    req_lengths = torch.tensor([h + kk for h, kk in zip(hist_len, k, strict=True)])
    y_req = stack(
        torch.cat(req_tokens),
        offsets_from_lengths(req_lengths),
        torch.tensor(k),
        torch.cat(req_pos),
        torch.cat(req_ts),
    )
    y_imp = stack(
        torch.cat(imp_tokens),
        offsets_from_lengths(torch.tensor(imp_len)),
        torch.ones(len(imp_len), dtype=torch.int64),
        torch.cat(imp_pos),
        torch.cat(imp_ts),
    )
    req_off = offsets_from_lengths(req_lengths).tolist()
    imp_off = offsets_from_lengths(torch.tensor(imp_len)).tolist()
    n = 0
    for r, (length, kk) in enumerate(zip(hist_len, k, strict=True)):
        for j in range(kk):
            # target j of request r == the last token of impression sequence n
            torch.testing.assert_close(
                y_req[req_off[r] + length + j], y_imp[imp_off[n + 1] - 1], rtol=1e-12, atol=1e-12
            )
            # and the history outputs agree too (causal: targets never leak into them)
            torch.testing.assert_close(
                y_req[req_off[r] : req_off[r] + length],
                y_imp[imp_off[n] : imp_off[n] + length],
                rtol=1e-12,
                atol=1e-12,
            )
            n += 1
    # sanity: a target does depend on the history (the identity is not trivially true)
    assert not torch.allclose(y_req[req_off[0] + 5], stack.norm(torch.cat(req_tokens)[5]))


# --- training step ------------------------------------------------------------------------------
@pytest.mark.parametrize("emb_optimizer", ["rowwise_adagrad", "sgd"])
def test_trainer_steps_stay_equal_across_layouts(emb_optimizer):
    spec = get_preset("tiny")
    model = build_model(spec, overrides=["arch=hstu"], dtype=torch.float64, seed=4)
    batches = [generate(spec, 6, seed=s) for s in range(3)]
    params = {}
    for layout in ("impression", "roo"):
        m = copy.deepcopy(model)
        tr = Trainer(m, layout, emb_optimizer=emb_optimizer)
        for rb in batches:
            tr.step(rb if layout == "roo" else rb.to_impressions())
        params[layout] = {n: p.detach().clone() for n, p in m.named_parameters()}
    for n, p in params["impression"].items():
        torch.testing.assert_close(params["roo"][n], p, rtol=1e-9, atol=1e-12, msg=n)
    # the step really changed the weights (embeddings included)
    before = dict(model.named_parameters())
    emb_names = {n for n, p in model.named_parameters() if any(p is q for q in embedding_parameters(model))}
    assert emb_names
    for n in emb_names:
        assert not torch.equal(params["roo"][n], before[n].detach()), n


def test_same_seed_same_weights_and_losses():
    spec = get_preset("tiny")
    rb = generate(spec, 6, seed=0)
    losses = []
    for _ in range(2):
        m = build_model(spec, seed=7)
        tr = Trainer(m, "roo", seed=0)
        losses.append([tr.step(rb).item() for _ in range(3)])
    assert losses[0] == losses[1]
    m2 = build_model(spec, seed=8)
    assert not torch.equal(next(m2.parameters()), next(build_model(spec, seed=7).parameters()))


# --- the sync-free step: fused embedding optimizer and prepared batches ---------------------------
@pytest.mark.slow
@pytest.mark.parametrize("amp_bf16", [False, True])
@pytest.mark.parametrize("arch", sorted(ARCH_OVERRIDES))
def test_fused_embedding_optimizer_trains_like_the_reference(arch, amp_bf16):
    """Trainer(fused_embeddings=True) (row gradients, FusedRowWiseAdagrad) and the reference
    (COO gradients, RowWiseAdagrad with torch.unique) end with the same weights after several
    steps, both layouts, on tables small enough (max_table_rows=7) that most ids collide. The
    tolerance is 1% of one Adam step (lr 1e-3): a table read twice may sum its duplicates in another
    order, and Adam's first steps scale a near-zero gradient's last bits up to a full step."""
    spec = get_preset("tiny")
    model = build_model(spec, overrides=[*ARCH_OVERRIDES[arch], "max_table_rows=7"], seed=6)
    batches = [generate(spec, 6, seed=s) for s in range(3)]
    for layout in ("impression", "roo"):
        weights = {}
        for fused in (False, True):
            m = copy.deepcopy(model)
            tr = Trainer(m, layout, amp_bf16=amp_bf16, fused_embeddings=fused)
            for rb in batches:
                batch = rb if layout == "roo" else rb.to_impressions()
                tr.step(tr.prepare(batch) if fused else batch)
            weights[fused] = {n: p.detach().clone() for n, p in m.named_parameters()}
            emb = [p for p in embedding_parameters(m) if p.numel()]
            assert all(p.grad is None for p in emb) == fused  # fused: no COO gradient on the tables
        for n, w in weights[False].items():
            torch.testing.assert_close(
                weights[True][n], w, rtol=1e-4, atol=1e-5, msg=lambda m, n=n, lay=layout: f"{lay} {n}: {m}"
            )
        moved = [n for n, w in weights[True].items() if not torch.equal(w, dict(model.named_parameters())[n])]
        assert len(moved) >= 0.8 * len(weights[True])


def test_prepared_batch_gives_the_raw_batch_result_and_checks_its_layout():
    spec = get_preset("tiny")
    rb = generate(spec, 5, seed=2)
    for arch in ARCH_OVERRIDES:
        model = build_model(spec, overrides=ARCH_OVERRIDES[arch], dtype=torch.float64, seed=3)
        for layout, batch in (("impression", rb.to_impressions()), ("roo", rb)):
            prepared = model.prepare(batch, layout)
            assert model.prepare(prepared, layout) is prepared
            raw, prep = model(batch, layout), model(prepared, layout)
            assert torch.equal(raw["loss"], prep["loss"]) and torch.equal(raw["logits"], prep["logits"])
        with pytest.raises(UserError, match="^layout='impression', but the batch was prepared for 'roo'$"):
            model(model.prepare(rb, "roo"), "impression")
        with pytest.raises(UserError, match="needs a RequestBatch"):
            model.prepare(rb.to_impressions(), "roo")


def test_a_batch_prepared_by_another_model_shape_is_refused():
    """Prepared ids are hashed into the preparing model's tables: another configuration must not
    consume them silently; the same configuration (another instance) may."""
    spec = get_preset("tiny")
    rb = generate(spec, 5, seed=2)
    small = build_model(spec, overrides=["max_table_rows=7"], seed=3)
    prepared = small.prepare(rb, "roo")
    twin = build_model(spec, overrides=["max_table_rows=7"], seed=4)
    assert twin.prepare(prepared, "roo") is prepared
    with pytest.raises(UserError, match="prepared by a model of another configuration"):
        build_model(spec, seed=3)(prepared, "roo")
