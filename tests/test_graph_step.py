"""The CUDA-graph step (`--graph`): padding to a bucket (roo_ref.pad) trains exactly as the
unpadded batch, and a replay (roo_ref.graph_step) equals the eager step.

CPU: for every model family in both layouts, a batch padded to its grid bucket and to a much larger
one gives the unpadded batch's loss, every parameter's gradient and one optimizer step's parameters
(fp32 tight; bf16 autocast loss loosely); table rows the real batch leaves alone stay bit-equal;
the row-wise Adagrad leaves a row whose gradient rows are all 0 bit-equal; the warm-up's dense
state restore gives a fresh Adam. GPU (marked gpu): replays equal eager steps, two batches of one
bucket each, bucket growth, and the max_buckets error.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from roo_ref.graph_step import GraphTrainer, clone_tree, copy_into, restore, signature, snapshot, tensors
from roo_ref.models import build_model
from roo_ref.pad import (
    Bucket,
    BucketPlan,
    PaddedImpressionBatch,
    PaddedRequestBatch,
    batch_sizes,
    bucket_for,
    fits,
    grid_ceil,
    pad_batch,
)
from roo_ref.sparse_optim import RowGradSource, rowwise_adagrad_update
from roo_ref.train import Trainer
from workloads.errors import UserError
from workloads.generator import generate
from workloads.presets import get_preset

FAMILIES = {
    "dlrm_dot": ["arch=dlrm", "interaction=dot"],
    "dlrm_dcn": ["arch=dlrm", "interaction=dcn"],
    "two_tower": ["arch=two_tower"],
    "hstu": ["arch=hstu", "max_history_len=6"],
}
LAYOUTS = ("impression", "roo")
ROOT = Path(__file__).resolve().parents[1]


def _batch(layout: str, requests: int = 5, seed: int = 3, device: str = "cpu"):
    rb = generate(get_preset("tiny"), requests, seed=seed).to(device)
    return rb if layout == "roo" else rb.to_impressions()


def _seq(model) -> tuple[bool, int]:
    seq = not model.pooled_history
    return seq, model.config.max_history_len if seq else 0


def _big_floor(need: Bucket) -> Bucket:
    """A bucket well above `need` in every size: many padding rows, values and tokens."""
    rows = need.rows + (9 if need.roo else 13)  # the impression layout's rows are its impressions
    return dataclasses.replace(
        need,
        rows=rows,
        impressions=need.impressions + 13,
        user_values=need.user_values + 7,
        item_values=need.item_values + 5,
        history=need.history + 40,
        seq_len=need.seq_len + 2 if need.sequences else 0,
    )


def _padded(model, batch, big: bool):
    seq, max_hist = _seq(model)
    need = batch_sizes(batch, max_hist, seq)
    cap = bucket_for(need, _big_floor(need) if big else None)
    return pad_batch(batch, cap, need), need, cap


# --- the grid and the buckets ---------------------------------------------------------------------
def test_grid_ceil_is_a_coarse_geometric_grid():
    assert grid_ceil(0) == 0 and [grid_ceil(n) for n in range(1, 17)] == list(range(1, 17))
    values = {grid_ceil(n) for n in range(1, 5000)}
    for n in (1, 7, 100, 1023, 1024, 1025, 4097, 123_457, 10**7):
        g = grid_ceil(n)
        assert n <= g <= n * 2 ** (1 / 16) + 1 and grid_ceil(g) == g
        assert grid_ceil(g + 1) > g
    assert len(values) < 200  # a few buckets cover a wide range of sizes


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seq", [False, True])
def test_bucket_for_fits_and_covers_its_floor(layout, seq):
    b = _batch(layout)
    need = batch_sizes(b, 6 if seq else 0, seq)
    cap = bucket_for(need)
    assert fits(need, cap) and not fits(cap, cap)  # a batch always pads: one row at least
    floor = _big_floor(need)
    big = bucket_for(need, floor)
    assert fits(need, big)
    assert all(x >= y for x, y in zip(dataclasses.astuple(big), dataclasses.astuple(floor), strict=True))
    small = dataclasses.replace(cap, history=need.history - 1)
    assert not fits(need, small)
    with pytest.raises(UserError, match="does not fit the graph bucket"):
        pad_batch(b, small, need)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seq", [False, True])
def test_bucket_plan_chooses_grows_plans_and_stops(layout, seq):
    max_hist = 6 if seq else 0
    needs = [batch_sizes(_batch(layout, requests=r, seed=r), max_hist, seq) for r in (4, 9, 3, 12, 7)]
    one = BucketPlan(max_buckets=1)
    bucket = one.plan_all(needs)  # one bucket every batch fits
    assert one.buckets == [bucket] and all(fits(n, bucket) for n in needs)
    assert all(one.choose(n) == bucket for n in needs)
    grow = BucketPlan(max_buckets=2)
    first = grow.choose(needs[0])
    second = grow.choose(needs[3])  # larger: a new bucket covering the first
    assert first != second and all(
        x >= y for x, y in zip(dataclasses.astuple(second), dataclasses.astuple(first), strict=True)
    )
    assert grow.choose(needs[2]) == first  # the smallest bucket that fits
    with pytest.raises(UserError, match="fits none of the 2 CUDA-graph buckets.*max_buckets=2"):
        grow.choose(batch_sizes(_batch(layout, requests=40, seed=1), max_hist, seq))


# --- padding trains as the unpadded batch ---------------------------------------------------------
def _grads(model) -> dict[str, torch.Tensor]:
    out = {}
    for n, p in model.named_parameters():
        g = p.grad
        out[n] = torch.zeros_like(p) if g is None else (g.to_dense() if g.is_sparse else g).clone()
    return out


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_padded_batch_gives_the_same_loss_gradients_and_step(family, layout, big, one_torch_thread):
    model = build_model(get_preset("tiny"), overrides=FAMILIES[family], seed=1)
    batch = _batch(layout)
    padded, need, cap = _padded(model, batch, big)
    assert isinstance(padded, PaddedRequestBatch if layout == "roo" else PaddedImpressionBatch)
    assert padded.item_id.numel() == cap.impressions and float(padded.real_impressions) == need.impressions
    # the loss and every gradient (COO embedding gradients densified; padding ids add zeros)
    results = []
    for b in (batch, padded):
        m = copy.deepcopy(model)
        loss = m(m.prepare(b, layout), layout)["loss"]
        loss.backward()
        results.append((loss.detach(), _grads(m)))
    (l0, g0), (l1, g1) = results
    torch.testing.assert_close(l1, l0, rtol=1e-6, atol=1e-7)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-5, atol=1e-7, msg=n)
    # one training step (Adam + the fused row-wise Adagrad): the same parameters; rows the real
    # batch leaves alone (padding-only rows among them) stay bit-equal
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    after = []
    for b in (batch, padded):
        t = Trainer(copy.deepcopy(model), layout)
        t.step(t.prepare(b))
        after.append({n: p.detach() for n, p in t.model.named_parameters()})
    for n, p0 in after[0].items():
        # Adam moves a weight by ~lr * g / (|g| + eps): gradients of ~eps size that differ in
        # their last bits (summation order) move it by up to ~lr / 2; lr = 1e-3
        torch.testing.assert_close(after[1][n], p0, rtol=1e-5, atol=2e-6, msg=n)
        if n.endswith(("bag.weight", "emb.weight")):
            still = (p0 == before[n]).all(dim=1)
            assert torch.equal(after[1][n][still], before[n][still]), n


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", ["dlrm_dcn", "two_tower", "hstu"])
def test_padded_batch_bf16_loss(family, layout, one_torch_thread):
    model = build_model(get_preset("tiny"), overrides=FAMILIES[family], seed=2)
    batch = _batch(layout, seed=4)
    padded, _, _ = _padded(model, batch, big=True)
    trainer = Trainer(model, layout, amp_bf16=True)
    losses = [trainer.loss(model.prepare(b, layout)) for b in (batch, padded)]
    torch.testing.assert_close(losses[1], losses[0], rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_padding_sequences_are_no_longer_than_the_longest_real_one(layout):
    model = build_model(get_preset("tiny"), overrides=FAMILIES["hstu"], seed=0)
    batch = _batch(layout, requests=7)
    padded, need, cap = _padded(model, batch, big=True)
    p = model.prepare(padded, layout)
    lengths = p.extra.offsets[1:] - p.extra.offsets[:-1]
    real_rows = need.rows
    assert int(lengths[real_rows:].max()) <= need.seq_len and lengths[real_rows:].numel() == cap.rows - real_rows
    assert p.extra.history_items.numel() == cap.history  # the kept history is the bucket's, whole


@pytest.mark.parametrize("layout", LAYOUTS)
def test_padding_bags_are_spread_over_the_padding_rows(layout):
    """Pooled models: the padding history and sparse values are spread evenly over the padding rows,
    never one long bag (ATen's embedding_bag gives a bag to one thread block, so one bag holding a
    bucket's whole padding runs serially for longer than all the real bags together)."""
    batch = _batch(layout, requests=7)
    need = batch_sizes(batch)
    cap = bucket_for(need, _big_floor(need))
    padded = pad_batch(batch, cap, need)
    r, p_rows = need.rows, cap.rows - need.rows
    assert p_rows > 1
    for lengths, total in (
        (padded.history_lengths[r:], cap.history - need.history),
        (padded.user_sparse_lengths[:, r:], cap.user_values - need.user_values),
        (padded.item_sparse_lengths[:, -(cap.impressions - need.impressions) :], cap.item_values - need.item_values),
    ):
        assert int(lengths.sum()) == total > 0
        assert int(lengths.max()) <= math.ceil(total / lengths.shape[-1])


@pytest.mark.parametrize(
    "backend",
    ["torch", pytest.param("triton", marks=pytest.mark.gpu)],
)
def test_rowwise_adagrad_leaves_a_row_with_zero_gradient_bit_equal(backend):
    dev = "cuda" if backend == "triton" else "cpu"
    torch.manual_seed(0)
    w, state = torch.randn(6, 4, device=dev), torch.rand(6, device=dev)
    w0, s0 = w.clone(), state.clone()
    ids = torch.tensor([1, 3, 3, 5, 5], device=dev)
    rows = torch.randn(5, 4, device=dev)
    rows[3:] = 0.0  # row 5: only padding lookups (gradient rows exactly 0)
    rowwise_adagrad_update(w, state, [RowGradSource(ids, rows)], lr=0.1, eps=1e-8, backend=backend)
    assert torch.equal(w[5], w0[5]) and torch.equal(state[5], s0[5])
    assert not torch.equal(w[3], w0[3])
    fresh_w, fresh_s = torch.randn(6, 4, device=dev), torch.zeros(6, device=dev)  # a never-touched row: state 0
    keep = fresh_w.clone()
    one = RowGradSource(torch.tensor([2], device=dev), torch.zeros(1, 4, device=dev))
    rowwise_adagrad_update(fresh_w, fresh_s, [one], lr=0.1, eps=1e-8, backend=backend)
    assert torch.equal(fresh_w, keep) and torch.equal(fresh_s, torch.zeros(6, device=dev))


# --- the static buffers and the warm-up's state restore --------------------------------------------
def _same_sizes_other_values(b, seed: int):
    """A batch with `b`'s sizes (so its bucket) and other ids, features and labels."""
    g = torch.Generator().manual_seed(seed)

    def ids(t):
        return torch.randint(0, 1000, t.shape, generator=g, dtype=t.dtype)

    return dataclasses.replace(
        b,
        user_sparse_values=ids(b.user_sparse_values),
        item_sparse_values=ids(b.item_sparse_values),
        history_item_ids=ids(b.history_item_ids),
        item_id=ids(b.item_id),
        user_dense=torch.randn(b.user_dense.shape, generator=g),
        labels=torch.randint(0, 2, b.labels.shape, generator=g).float(),
    )


@pytest.mark.parametrize("family", ["dlrm_dot", "hstu"])
def test_static_buffers_clone_copy_and_signature(family):
    model = build_model(get_preset("tiny"), overrides=FAMILIES[family], seed=0)
    b1 = _batch("roo")
    b2 = _same_sizes_other_values(b1, 1)
    seq, max_hist = _seq(model)
    p1, need, cap = _padded(model, b1, big=False)
    p2 = pad_batch(b2, cap, batch_sizes(b2, max_hist, seq))
    prep1, prep2 = model.prepare(p1, "roo"), model.prepare(p2, "roo")
    assert signature(prep1) == signature(prep2)
    static = clone_tree(prep1)
    ptrs = [t.data_ptr() for t in tensors(static) if t.numel()]
    assert len(set(ptrs)) == len(ptrs)  # no two static buffers alias
    assert not set(ptrs) & {t.data_ptr() for t in tensors(prep1)}
    copy_into(tensors(static), tensors(prep2))
    for a, b in zip(tensors(static), tensors(prep2), strict=True):
        assert torch.equal(a, b)
    other = model.prepare(pad_batch(b1, bucket_for(need, _big_floor(need)), need), "roo")
    assert signature(other) != signature(prep1)


def test_restore_after_a_zero_gradient_step_is_a_fresh_adam():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    ref = copy.deepcopy(net)
    opt, ref_opt = torch.optim.Adam(net.parameters(), lr=0.1), torch.optim.Adam(ref.parameters(), lr=0.1)
    saved = snapshot(opt)
    (net(torch.randn(2, 4)).sum() * 0).backward()
    opt.step()  # the warm-up: state made, step count 1
    restore(opt, saved)
    x = torch.randn(5, 4)
    for m, o in ((net, opt), (ref, ref_opt)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
    saved = snapshot(opt)  # a later warm-up: parameters and state come back exactly
    state0 = {k: v.clone() for k, v in opt.state[net.weight].items()}
    w0 = net.weight.detach().clone()
    opt.step()
    restore(opt, saved)
    assert torch.equal(net.weight, w0)
    assert all(torch.equal(opt.state[net.weight][k], v) for k, v in state0.items())


def test_graph_trainer_needs_cuda():
    model = build_model(get_preset("tiny"), overrides=FAMILIES["dlrm_dot"], seed=0)
    with pytest.raises(UserError, match="CUDA"):
        GraphTrainer(Trainer(model, "roo"))


# --- GPU: replay equals eager -------------------------------------------------------------------------
def _gpu_pair(family: str, layout: str, amp_bf16: bool, **kw):
    overrides = FAMILIES[family] + (["attention_backend=triton", "qk_dim=32", "v_dim=32"] if family == "hstu" else [])
    model = build_model(get_preset("tiny"), overrides=overrides, device="cuda", seed=5)
    eager = Trainer(copy.deepcopy(model), layout, amp_bf16=amp_bf16, seed=5)
    graph = GraphTrainer(Trainer(model, layout, amp_bf16=amp_bf16, seed=5), **kw)
    return eager, graph


def _assert_same_params(a, b, tol):
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=tol, atol=tol, msg=n)


@pytest.mark.gpu
@pytest.mark.parametrize("amp_bf16", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_replay_equals_eager(family, layout, amp_bf16):
    eager, graph = _gpu_pair(family, layout, amp_bf16)
    tol = 2e-2 if amp_bf16 else 1e-4
    b1 = _batch(layout, device="cuda")
    b2 = _same_sizes_other_values(b1.to("cpu"), 7).to("cuda")
    g1, g2 = graph.prepare(b1), graph.prepare(b2)
    assert g1.bucket == g2.bucket and len(graph.buckets) == 1  # two batches, one bucket
    graph.capture([g1, g2])
    _assert_same_params(eager.model, graph.model, 0)  # capture and its warm-up trained nothing
    for b, gb in ((b1, g1), (b2, g2), (b1, g1)):
        le, lg = eager.step(eager.prepare(b)), graph.step(gb)
        torch.testing.assert_close(lg, le, rtol=tol, atol=tol)
        _assert_same_params(eager.model, graph.model, tol)
    big = _batch(layout, requests=9, seed=11, device="cuda")  # larger: a second bucket, re-captured
    le, lg = eager.step(eager.prepare(big)), graph.step(big)
    assert len(graph.graphs) == 2
    torch.testing.assert_close(lg, le, rtol=tol, atol=tol)
    _assert_same_params(eager.model, graph.model, tol)
    graph.close()


@pytest.mark.gpu
def test_max_buckets_exceeded_is_one_clear_error():
    _, graph = _gpu_pair("dlrm_dot", "roo", False, max_buckets=1)
    graph.step(_batch("roo", requests=3, device="cuda"))
    with pytest.raises(UserError, match="fits none of the 1 CUDA-graph buckets"):
        graph.prepare(_batch("roo", requests=40, seed=9, device="cuda"))
    graph.close()


# --- the harness: --graph, PointConfig.graph ---------------------------------------------------------
@pytest.mark.parametrize("command", ["bench", "profile"])
def test_graph_on_cpu_is_a_clear_error(command, run_cli):
    r = run_cli(command, "--preset", "tiny", "--device", "cpu", "--graph", "--steps", "1")
    assert r.returncode == 2
    assert "--graph" in r.stderr and "CUDA" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_point_graph_setting_hash_and_cpu_error():
    from harness.measure import measure_preset
    from harness.run_point import PointConfig, run_point
    from harness.sweep import load_sweep

    eager, graph = PointConfig(preset="tiny"), PointConfig(preset="tiny", device="cuda", graph=True)
    assert "graph" not in eager.hash_dict() and graph.hash_dict()["graph"] is True
    assert PointConfig(preset="tiny", graph=False).config_hash() == eager.config_hash()
    with pytest.raises(UserError, match="graph=1 must be true or false"):
        PointConfig.from_dict({"preset": "tiny", "graph": 1})
    with pytest.raises(UserError, match="needs a CUDA device"):
        run_point({"preset": "tiny", "graph": True, "steps": 1, "nvml": False, "profile": False})
    with pytest.raises(UserError, match="needs a CUDA device"):
        measure_preset("tiny", ["roo"], "cpu", steps=1, warmup=0, dtype="fp32", graph=True)
    sw = load_sweep(ROOT / "harness" / "sweeps" / "h100-production.toml", device="cpu")
    assert sorted({p.config.graph for p in sw.points}) == [False, True]


@pytest.mark.gpu
def test_bench_and_point_run_with_graph():
    from harness.commands.bench import bench
    from harness.run_point import run_point

    res = bench("tiny", ["impression", "roo"], "cuda", steps=5, warmup=1, dtype="bf16", graph=True)
    assert res["graph"] is True and res["speedup"] > 0
    assert all(r["graph_buckets"] for r in res["layouts"].values())
    cfg = {"preset": "tiny", "device": "cuda", "graph": True, "steps": 5, "warmup": 1, "nvml": False}
    rec = run_point(cfg)
    assert rec["config"]["graph"] is True and rec["provenance"]["cuda_graph"] is True
    for L in rec["metrics"]["layouts"].values():
        assert L["graph_buckets"] and L["busy_ms"] > 0 and L["launches_per_step"] >= 1
        assert L["component_ms"] is None and "CUDA-graph" in L["component_reason"]
        assert L["flops_counted_per_step"] > 0
