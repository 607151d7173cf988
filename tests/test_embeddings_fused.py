"""EmbeddingBagCollection (all features' tables fused into one weight) against the per-feature
layout it replaced: one nn.EmbeddingBag per feature holding the same weight block."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from roo_ref.embeddings import (
    EmbeddingBagCollection,
    Table,
    embedding_parameters,
    enable_row_grads,
    hash_ids,
    init_table,
    table_rows,
)


class PerFeatureTables(nn.Module):
    """The pre-fusion layout: one EmbeddingBag (sum) per feature, looked up feature by feature."""

    def __init__(self, blocks: list[torch.Tensor]):
        super().__init__()
        self.rows = [b.shape[0] for b in blocks]
        self.bags = nn.ModuleList(
            nn.EmbeddingBag(r, b.shape[1], mode="sum", sparse=True, include_last_offset=True, _weight=b.clone())
            for r, b in zip(self.rows, blocks, strict=True)
        )

    def forward(self, lengths: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        starts = [0, *lengths.sum(1).cumsum(0).tolist()]
        out = []
        for f, bag in enumerate(self.bags):
            ids = hash_ids(values[starts[f] : starts[f + 1]], self.rows[f])
            offsets = torch.cat([lengths.new_zeros(1), lengths[f].cumsum(0)])
            out.append(bag(ids, offsets))
        return torch.stack(out, 1)


def _fused_and_reference(cards, dim, max_rows):
    fused = EmbeddingBagCollection(cards, dim, max_rows).double()
    blocks = list(fused.weight.detach().split(fused.rows))
    return fused, PerFeatureTables(blocks)


def _random_batch(gen, n_feat, batch, max_len, id_high, empty_features=()):
    lengths = torch.randint(0, max_len + 1, (n_feat, batch), generator=gen)
    for f in empty_features:
        lengths[f] = 0
    values = torch.randint(0, id_high, (int(lengths.sum()),), generator=gen)
    return lengths, values


def _check_equal(fused, ref, lengths, values):
    out = fused(lengths, values)
    expect = ref(lengths, values)
    assert out.shape == (lengths.shape[1], lengths.shape[0], fused.dim)
    torch.testing.assert_close(out, expect, rtol=1e-12, atol=1e-12)
    # gradient of an arbitrary loss w.r.t. every block
    g_out = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    (out * g_out).sum().backward()
    (expect * g_out).sum().backward()
    grad = fused.weight.grad
    if values.numel():
        assert grad.is_sparse
    dense = grad.to_dense() if grad.is_sparse else grad
    for f, (blk, bag) in enumerate(zip(dense.split(fused.rows), ref.bags, strict=True)):
        g_ref = bag.weight.grad
        g_ref = torch.zeros_like(blk) if g_ref is None else g_ref.to_dense()
        torch.testing.assert_close(blk, g_ref, rtol=1e-12, atol=1e-12, msg=lambda m, f=f: f"feature {f}: {m}")
    return out, dense


@pytest.mark.parametrize(
    "cards, batch, empty_features",
    [
        ([5, 1000, 17, 3], 7, ()),  # 1000 > max_rows: hashed
        ([5, 1000, 17, 3], 7, (0, 2)),  # whole features without ids
        ([5, 1000, 17, 3], 1, ()),  # B = 1
        ([40], 6, ()),  # F = 1
        ([40], 1, ()),
        ([1, 1, 2], 5, ()),  # one-row tables: every id hits row 0 of its block
        ([9, 9], 4, (0, 1)),  # no ids at all
    ],
)
def test_fused_equals_per_feature_tables(cards, batch, empty_features):
    torch.manual_seed(0)
    fused, ref = _fused_and_reference(cards, 4, max_rows=64)
    gen = torch.Generator().manual_seed(len(cards) * 100 + batch)
    lengths, values = _random_batch(gen, len(cards), batch, 4, 10_000, empty_features)
    out, grad = _check_equal(fused, ref, lengths, values)
    assert out.shape == (batch, len(cards), 4)
    # empty bags pool to zeros; ids hash into their own feature's block only
    torch.testing.assert_close(out[(lengths == 0).T], torch.zeros_like(out[(lengths == 0).T]))
    for f, blk in enumerate(grad.split(fused.rows)):
        assert bool(blk.abs().sum() > 0) == bool(lengths[f].sum() > 0), f


@settings(max_examples=40, deadline=None)
@given(
    cards=st.lists(st.integers(1, 200), min_size=1, max_size=6),
    batch=st.integers(1, 6),
    max_len=st.integers(0, 5),
    id_high=st.sampled_from([3, 50, 10**6]),
    seed=st.integers(0, 2**16),
)
def test_fused_equals_per_feature_tables_random(cards, batch, max_len, id_high, seed):
    torch.manual_seed(seed)
    fused, ref = _fused_and_reference(cards, 3, max_rows=64)
    gen = torch.Generator().manual_seed(seed)
    lengths, values = _random_batch(gen, len(cards), batch, max_len, id_high)
    _check_equal(fused, ref, lengths, values)


def test_fused_weight_layout_and_hashing():
    ebc = EmbeddingBagCollection([10, 10**9, 3], 2, max_rows=100)
    assert ebc.rows == [10, 100, 3] and ebc.weight.shape == (113, 2) and ebc.num_features == 3
    assert ebc.row_offsets.tolist() == [0, 10, 110] and ebc.row_counts.tolist() == [10, 100, 3]
    assert "row_offsets" not in ebc.state_dict() and list(ebc.state_dict()) == ["bag.weight"]
    with torch.no_grad():
        ebc.weight.copy_(torch.arange(113, dtype=torch.float32)[:, None].expand(113, 2))
    # one bag per feature, B = 1: id 12 -> row 2 of feature 0; 1234 -> row 34 of feature 1; 7 -> row 1 of feature 2
    out = ebc(torch.tensor([[1], [1], [1]]), torch.tensor([12, 1234, 7]))
    assert out[0, :, 0].tolist() == [2.0, 10 + 34.0, 110 + 1.0]


def test_init_bounds_per_block():
    torch.manual_seed(3)
    ebc = EmbeddingBagCollection([4, 50, 10**9, 400], 16, max_rows=400)
    bounds = [1 / r**0.5 for r in ebc.rows]
    blocks = ebc.weight.detach().split(ebc.rows)
    for blk, bound in zip(blocks, bounds, strict=True):
        assert blk.abs().max() <= bound
        assert blk.abs().max() > 0.8 * bound  # uses its range, not a smaller one
    # blocks with different rows have different bounds: a smaller table's weights exceed a larger one's bound
    assert blocks[0].abs().max() > bounds[1] and blocks[1].abs().max() > bounds[2]


def test_init_is_one_uniform_draw_per_feature_block_for_a_seed():
    """A seed gives exactly: feature by feature, uniform(+-1/sqrt(rows_f)) over that feature's block,
    and no other RNG draw (the N(0, 1) init nn.EmbeddingBag would draw first is not drawn)."""
    cards, dim, max_rows = [7, 300, 10**6, 1, 33], 5, 200
    torch.manual_seed(11)
    fused = EmbeddingBagCollection(cards, dim, max_rows)
    after_fused = torch.rand(3)
    torch.manual_seed(11)
    blocks = [torch.empty(table_rows(c, max_rows), dim) for c in cards]
    for b in blocks:
        init_table(b)
    assert torch.equal(fused.weight.detach(), torch.cat(blocks))
    assert torch.equal(after_fused, torch.rand(3))  # and leaves the RNG where it left it


def test_table_init_is_one_uniform_draw():
    torch.manual_seed(5)
    t = Table(50, 3, max_rows=20)
    after = torch.rand(2)
    torch.manual_seed(5)
    ref = torch.empty(20, 3)
    init_table(ref)
    assert torch.equal(t.emb.weight.detach(), ref) and torch.equal(after, torch.rand(2))


def test_no_features_and_wrong_feature_count():
    ebc = EmbeddingBagCollection([], 4, max_rows=10).double()
    assert ebc.num_features == 0 and ebc.weight.shape == (0, 4)
    out = ebc(torch.zeros(0, 3, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    assert out.shape == (3, 0, 4) and out.dtype == torch.float64
    ebc2 = EmbeddingBagCollection([5, 6], 4, max_rows=10)
    with pytest.raises(ValueError, match="got 3 sparse features, the model has 2 tables"):
        ebc2(torch.ones(3, 2, dtype=torch.int64), torch.zeros(6, dtype=torch.int64))


@pytest.mark.parametrize("arch", ["dlrm", "hstu"])
def test_fused_weight_is_an_embedding_parameter_and_trains(arch):
    from roo_ref.models import build_model
    from roo_ref.train import Trainer
    from workloads.generator import generate
    from workloads.presets import get_preset

    spec = get_preset("tiny")
    model = build_model(spec, overrides=[f"arch={arch}"], seed=0)
    colls = [m for m in model.modules() if isinstance(m, EmbeddingBagCollection) and m.num_features]
    assert colls
    emb = embedding_parameters(model)
    for c in colls:
        assert any(c.weight is p for p in emb)
    # every embedding weight is a table's or a collection's fused weight, each found once
    assert len({id(p) for p in emb}) == len(emb)
    before = [c.weight.detach().clone() for c in colls]
    tr = Trainer(model, "roo")
    tr.step(generate(spec, 4, seed=0))
    for c, w0 in zip(colls, before, strict=True):
        assert tr.emb_opt.state[c.weight]["sum"].shape == (sum(c.rows),)
        changed = (c.weight.detach() != w0).any(1)
        assert changed.any()
        assert not changed.all()  # sparse update: only the rows the batch touched (tiny: 1000 rows a feature)


# --- row-gradient mode: the lookups hand (ids, rows) to the optimizer instead of a COO gradient ----
def _row_grad_coo(sink, shape) -> torch.Tensor:
    ids, rows = sink.take(torch.float64)
    return torch.sparse_coo_tensor(ids[None], rows, shape).to_dense()


@pytest.mark.parametrize("amp_bf16", [False, True])
@pytest.mark.parametrize("kind", ["bags_sum", "plain", "pooled_mean"])
def test_row_grads_equal_the_coo_gradient(kind, amp_bf16):
    """Same forward, and the rows handed to the sink sum (per row) to the COO gradient of the
    ordinary path, for every lookup kind, in fp32 and under bf16 autocast; the weight gets no .grad."""
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    if kind == "bags_sum":
        ref = EmbeddingBagCollection([30, 5000, 4], 6, max_rows=50)  # hashed: many duplicate rows
        lengths, values = _random_batch(gen, 3, 9, 6, 10_000)
        args = (lengths, values)
    else:
        ref = Table(5000, 6, max_rows=13)
        lengths = torch.randint(0, 7, (9,), generator=gen)
        ids = torch.randint(0, 10_000, (int(lengths.sum()),), generator=gen)
        args = (ids,) if kind == "plain" else (ids, lengths)
    fused = copy.deepcopy(ref)
    sinks = enable_row_grads(fused)
    weight = fused.weight if kind == "bags_sum" else fused.emb.weight
    assert list(sinks) == [id(weight)] and enable_row_grads(fused) == sinks  # idempotent
    call = {"bags_sum": "__call__", "plain": "__call__", "pooled_mean": "pooled_mean"}[kind]
    outs, g_out = [], None
    for m in (ref, fused):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp_bf16):
            out = getattr(m, call)(*args)
            if g_out is None:
                g_out = torch.randn(out.shape, generator=gen).to(out.dtype)
            (out * g_out).float().sum().backward()
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
    assert weight.grad is None and len(sinks[id(weight)]) == 1
    expect = (ref.weight if kind == "bags_sum" else ref.emb.weight).grad
    assert expect.is_sparse
    got = _row_grad_coo(sinks[id(weight)], weight.shape)
    torch.testing.assert_close(got, expect.to_dense().double(), rtol=1e-6, atol=1e-6)
    assert got.abs().sum() > 0


def test_row_grads_accumulate_over_lookups_and_need_a_bag_index():
    from roo_ref.sparse_optim import RowGrads, row_grad_lookup

    t = Table(100, 4, max_rows=100)
    enable_row_grads(t)
    for ids in (torch.tensor([1, 2, 2]), torch.tensor([[5, 1]])):
        t(ids).sum().backward()
    ids, rows = t.row_grads.take(torch.float32)
    assert ids.tolist() == [1, 2, 2, 5, 1] and rows.shape == (5, 4) and torch.equal(rows, torch.ones(5, 4))
    assert t.row_grads.take(torch.float32) is None  # taken
    with pytest.raises(ValueError, match="a bag lookup needs the bag of each id"):
        row_grad_lookup(t.emb.weight, torch.tensor([1]), RowGrads(), offsets=torch.tensor([0, 1]))


@pytest.mark.parametrize("layout", ["impression", "roo"])
def test_fused_step_on_a_workload_without_history(layout):
    """DLRM-v2 (late-ranking) has no user history: the history tables' lookups are empty, and the
    fused optimizer takes their [0, dim] rows like any others (the same step as the reference)."""
    from roo_ref.models import build_model
    from roo_ref.train import Trainer
    from workloads.generator import generate
    from workloads.presets import get_preset

    spec = get_preset("late-ranking@0.002")
    assert spec.history.length.kind == "fixed" and spec.history.length.value == 0
    rb = generate(spec, spec.requests_per_batch, seed=1)
    batch = rb if layout == "roo" else rb.to_impressions()
    losses = []
    for fused in (True, False):
        model = build_model(spec, "late-ranking@0.002", ["embedding_dim=8"], seed=0)
        tr = Trainer(model, layout, seed=0, fused_embeddings=fused)
        losses.append([float(tr.step(batch)) for _ in range(2)])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_bag_lookup_hands_over_its_pooled_gradient_and_its_side():
    """A bag lookup's backward gives the sink the bags' output gradient [bags, dim] and the bag of
    each id, not [nnz, dim] rows; their rows are the per-id gradient. Inside a USER / ITEM region
    (while a profiler runs) the sink counts the ids under that side, outside under None."""
    from torch.profiler import ProfilerActivity, profile

    from roo_ref.models.regions import ITEM, USER, region

    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(3)
    t = Table(500, 4, max_rows=40)
    sink = enable_row_grads(t)[id(t.emb.weight)]
    lengths = torch.tensor([3, 0, 5, 2])
    ids = torch.randint(0, 10_000, (10,), generator=gen)
    g_out = torch.randn(4, 4, generator=gen)
    with profile(activities=[ProfilerActivity.CPU]):
        with region(USER):
            pooled = t.pooled_mean(ids, lengths)
        with region(ITEM):
            plain = t(ids[:6])
        t.pooled_mean(ids, lengths).sum().backward()  # outside both regions: no side
        ((pooled * g_out).sum() + plain.sum()).backward()
    assert sink.nnz_by_side() == {None: 10, "user": 10, "item": 6}
    parts = sink.take_sources()
    bags = [p for p in parts if p.src is not None]
    assert len(bags) == 2 and all(p.grad.shape == (4, 4) and p.scale.shape == (4,) for p in bags)
    mean = next(p for p in bags if not torch.equal(p.grad, torch.ones(4, 4)))
    torch.testing.assert_close(mean.grad, g_out)
    bag = torch.repeat_interleave(torch.arange(4), lengths)
    torch.testing.assert_close(mean.rows(torch.float32), g_out[bag] / lengths[bag, None].float())
    assert len(sink) == 0 and sink.nnz_by_side() == {}
