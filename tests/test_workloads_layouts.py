"""Both layouts: exact round trips (hypothesis), shuffled rows, generator determinism and streaming,
and to_impressions() (every workloads.expand backend) equal to an expansion built from the
workloads.jagged primitives."""

import hashlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workloads.batch import ImpressionBatch, RequestBatch
from workloads.distributions import Dist
from workloads.generator import BLOCK, generate, iter_request_batches
from workloads.generator_torch import generate_on
from workloads.jagged import jagged_index_select, keyed_index_select
from workloads.presets import get_preset
from workloads.spec import HistorySpec, SparseGroup, Task, WorkloadSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def select_requests(b: RequestBatch, idx: torch.Tensor) -> RequestBatch:
    """Requests `idx` of b (an independent reference for slicing / reordering)."""
    usv, usl = keyed_index_select(b.user_sparse_values, b.user_sparse_lengths, idx)
    hl = b.history_lengths
    h_ids, h_len = jagged_index_select(b.history_item_ids, hl, idx)
    h_act, _ = jagged_index_select(b.history_actions, hl, idx)
    h_ts, _ = jagged_index_select(b.history_timestamps, hl, idx)
    off = torch.zeros(b.num_requests + 1, dtype=torch.int64)
    off[1:] = torch.cumsum(b.num_impressions, 0)
    ranges = [torch.arange(int(off[i]), int(off[i + 1])) for i in idx.tolist()]
    rows = torch.cat(ranges) if ranges else torch.zeros(0, dtype=torch.int64)
    isv, isl = keyed_index_select(b.item_sparse_values, b.item_sparse_lengths, rows)
    return RequestBatch(
        request_id=b.request_id[idx],
        timestamp=b.timestamp[idx],
        num_impressions=b.num_impressions[idx],
        user_dense=b.user_dense[idx],
        user_sparse_lengths=usl,
        user_sparse_values=usv,
        history_lengths=h_len,
        history_item_ids=h_ids,
        history_actions=h_act,
        history_timestamps=h_ts,
        item_id=b.item_id[rows],
        item_sparse_lengths=isl,
        item_sparse_values=isv,
        item_dense=b.item_dense[rows],
        labels=b.labels[rows],
    )


def _d(**kw):
    if "mean" in kw:
        kw["mean_"] = kw.pop("mean")
    return Dist(**kw)


@st.composite
def specs(draw):
    k = draw(
        st.sampled_from(
            [
                _d(kind="fixed", value=1, min=1),
                _d(kind="geometric", mean=2.0, min=1, max=5),
                _d(kind="uniform", low=1, high=4, min=1),
            ]
        )
    )
    hl = draw(
        st.sampled_from([_d(kind="fixed", value=0), _d(kind="uniform", low=0, high=6), _d(kind="poisson", mean=1.0)])
    )
    pool = draw(st.sampled_from([_d(kind="fixed", value=1), _d(kind="uniform", low=0, high=3)]))
    n_user = draw(st.integers(0, 2))
    n_item = draw(st.integers(0, 2))
    pop = draw(st.sampled_from(["uniform", "zipf"]))
    return WorkloadSpec(
        impressions=k,
        history=HistorySpec(length=hl, item_cardinality=50, action_types=draw(st.integers(1, 5))),
        user_sparse=(SparseGroup("u", n_user, 30, pool, pop, 1.1),) if n_user else (),
        user_dense=draw(st.integers(0, 2)),
        item_sparse=(SparseGroup("i", n_item, 40, pool, pop, 1.2),) if n_item else (),
        item_dense=draw(st.integers(0, 2)),
        tasks=tuple(Task(f"t{j}", 0.3) for j in range(draw(st.integers(1, 2)))),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), n=st.integers(1, 12), seed=st.integers(0, 2**31), shuffle_seed=st.integers(0, 2**31))
def test_round_trip_request_impression_request(spec, n, seed, shuffle_seed):
    b = generate(spec, n, seed=seed)
    b.validate()
    imp = b.to_impressions()
    imp.validate()
    assert imp.num_impressions_total == b.num_impressions_total
    back = imp.to_requests()
    assert back.equal(b)

    # shuffled rows: grouping restores the original exactly once requests are put back in id order,
    # provided the shuffle keeps each request's impressions in order (an interleaving) ...
    rng = np.random.default_rng(shuffle_seed)
    req = imp.request_id.numpy()
    # random priority per row, sorted within each request: a random interleaving of requests
    pri = rng.random(req.size)
    pri_sorted = pri.copy()
    for r in np.unique(req):
        rows = np.nonzero(req == r)[0]
        pri_sorted[rows] = np.sort(pri[rows])
    perm = torch.from_numpy(np.argsort(pri_sorted, kind="stable"))
    inter = imp.permute(perm).to_requests()
    assert select_requests(inter, torch.argsort(inter.request_id)).equal(b)

    # ... and with a full shuffle, each request keeps its RO features and the multiset of its rows
    full = imp.permute(torch.from_numpy(rng.permutation(req.size)))
    rb = full.to_requests()
    rb.validate()
    g_perm, _, _ = full.request_grouping()
    assert rb.to_impressions().equal(full.permute(g_perm))
    by_id = select_requests(rb, torch.argsort(rb.request_id))
    for f in (
        "timestamp",
        "user_dense",
        "user_sparse_lengths",
        "user_sparse_values",
        "history_lengths",
        "history_item_ids",
        "history_actions",
        "history_timestamps",
        "num_impressions",
    ):
        assert torch.equal(getattr(by_id, f), getattr(b, f)), f
    assert sorted(by_id.labels.sum(1).tolist()) == sorted(b.labels.sum(1).tolist())


def test_requests_with_one_impression_and_empty_histories():
    spec = WorkloadSpec(
        impressions=_d(kind="fixed", value=1, min=1), history=HistorySpec(length=_d(kind="fixed", value=0))
    )
    b = generate(spec, 50, seed=0)
    assert (b.num_impressions == 1).all() and b.history_item_ids.numel() == 0
    imp = b.to_impressions()
    assert torch.equal(imp.request_id, b.request_id)
    assert imp.to_requests().equal(b)


def test_to_requests_rejects_inconsistent_ro_features():
    b = generate(get_preset("tiny"), 20, seed=0)
    imp = b.to_impressions()
    dense = imp.user_dense.clone()
    multi = int(torch.nonzero(b.num_impressions > 1)[0])
    row = int(b.num_impressions[:multi].sum()) + 1
    dense[row, 0] += 1
    bad = ImpressionBatch(**{**imp.tensors(), "user_dense": dense})
    with pytest.raises(Exception, match=r"RO feature 'user_dense' differs between impressions of the same request"):
        bad.to_requests()


@pytest.mark.parametrize("name", ["tiny", "early-ranking"])
def test_generator_is_deterministic(name):
    spec = get_preset(name)
    a = generate(spec, 300, seed=5)
    assert a.equal(generate(spec, 300, seed=5))
    assert not torch.equal(a.history_item_ids, generate(spec, 300, seed=6).history_item_ids)
    a.validate()


@pytest.mark.parametrize("chunk", [1, 7, 1000, BLOCK, BLOCK + 3, 3 * BLOCK])
def test_chunked_streaming_matches_one_shot(chunk):
    spec = get_preset("tiny")
    n = 2 * BLOCK + 17
    full = generate(spec, n, seed=9)
    lo = 0
    parts = list(iter_request_batches(spec, n, seed=9, chunk_requests=chunk)) if chunk > 1 else None
    if parts is None:  # chunk=1 over 8k requests is slow to compare one by one; check a prefix
        it = iter_request_batches(spec, n, seed=9, chunk_requests=1)
        parts = [next(it) for _ in range(40)]
    for p in parts:
        p.validate()
        ref = select_requests(full, torch.arange(lo, lo + p.num_requests))
        assert p.equal(ref), (chunk, lo)
        lo += p.num_requests
    if chunk > 1:
        assert lo == n


def test_generated_values_respect_the_spec():
    spec = get_preset("tiny")
    b = generate(spec, 3000, seed=2)
    h = spec.history
    assert int(b.history_item_ids.min()) >= 0 and int(b.history_item_ids.max()) < h.item_cardinality
    assert int(b.history_actions.max()) < h.action_types
    assert int(b.user_sparse_values.max()) < spec.user_sparse[0].cardinality
    k = b.num_impressions.double().mean().item()
    assert abs(k / spec.impressions.mean() - 1) < 0.05
    assert abs(b.history_lengths.double().mean().item() / h.length.mean() - 1) < 0.05
    assert abs(b.labels.mean().item() - spec.tasks[0].base_rate) < 0.02
    # history timestamps ascend within a request and end before it
    hl = b.history_lengths.numpy()
    ts = b.history_timestamps.numpy()
    ends = np.cumsum(hl)
    for r in range(0, 3000, 97):
        seg = ts[ends[r] - hl[r] : ends[r]]
        if seg.size:
            assert (np.diff(seg) >= 1).all() and seg[-1] < int(b.timestamp[r])
    # Zipf(a) ids: P(id=0) matches the bounded continuous power law it samples
    c1 = h.item_cardinality + 1
    e = 1 - h.zipf_a
    p0 = (2**e - 1) / (c1**e - 1)
    assert abs((b.history_item_ids == 0).double().mean().item() - p0) < 0.02


def expand_reference(b: RequestBatch) -> ImpressionBatch:
    """to_impressions() as it was: one row index, then workloads.jagged's index selects per field."""
    idx = torch.repeat_interleave(torch.arange(b.num_requests), b.num_impressions)
    usv, usl = keyed_index_select(b.user_sparse_values, b.user_sparse_lengths, idx)
    hist = {f: jagged_index_select(getattr(b, f), b.history_lengths, idx) for f in HISTORY}
    return ImpressionBatch(
        request_id=b.request_id[idx],
        timestamp=b.timestamp[idx],
        user_dense=b.user_dense[idx],
        user_sparse_lengths=usl,
        user_sparse_values=usv,
        history_lengths=hist["history_item_ids"][1],
        **{f: v for f, (v, _) in hist.items()},
        item_id=b.item_id,
        item_sparse_lengths=b.item_sparse_lengths,
        item_sparse_values=b.item_sparse_values,
        item_dense=b.item_dense,
        labels=b.labels,
    )


HISTORY = ("history_item_ids", "history_actions", "history_timestamps")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), n=st.integers(1, 40), seed=st.integers(0, 2**31), torch_gen=st.booleans())
def test_to_impressions_equals_the_jagged_reference_for_every_backend(spec, n, seed, torch_gen):
    b = generate_on(spec, n, seed=seed) if torch_gen else generate(spec, n, seed=seed)
    ref = expand_reference(b)
    ref.validate()
    for backend in ("auto", "torch", "numpy"):
        assert b.to_impressions(backend).equal(ref), backend
    # a batch made by hand carries no totals: they are computed (the same) on first use
    bare = RequestBatch(**b.tensors())
    assert bare.expanded_totals() == b.expanded_totals()
    assert bare.to_impressions().equal(ref)


def test_to_impressions_on_long_and_short_rows_and_empty_fields():
    """Long histories (the numpy backend's rows), short pooled ids (torch's), no features at all."""
    for spec in (
        WorkloadSpec(
            impressions=_d(kind="uniform", low=1, high=30, min=1),
            history=HistorySpec(length=_d(kind="lognormal", mean=300.0, sigma=0.8, max=3000), item_cardinality=10**7),
            user_sparse=(SparseGroup("u", 5, 100, _d(kind="uniform", low=0, high=3), "zipf", 1.1),),
            tasks=(Task("a", 0.2),),
        ),
        WorkloadSpec(history=HistorySpec(length=_d(kind="fixed", value=0))),
    ):
        b = generate(spec, 300, seed=4)
        ref = expand_reference(b)
        for backend in ("auto", "torch", "numpy"):
            assert b.to_impressions(backend).equal(ref), backend


@pytest.mark.slow
def test_triton_expansion_equals_the_reference():
    """The Triton kernel (through the interpreter without a GPU): tiles of several rows, rows longer
    than a tile, empty rows, three value tensors at once."""
    spec = WorkloadSpec(
        impressions=_d(kind="uniform", low=1, high=5, min=1),
        history=HistorySpec(length=_d(kind="uniform", low=0, high=40), item_cardinality=1000),
        user_sparse=(SparseGroup("u", 3, 50, _d(kind="uniform", low=0, high=6), "zipf", 1.1),),
    )
    for seed in (1, 2):
        b = generate(spec, 24, seed=seed)
        assert b.to_impressions("triton").equal(expand_reference(b))


def _batch_digest(b: RequestBatch) -> str:
    """sha256 (first 16 hex digits) over every field's name, dtype, shape and bytes."""
    m = hashlib.sha256()
    for name, t in sorted(b.tensors().items()):
        a = t.numpy()
        m.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        m.update(np.ascontiguousarray(a).tobytes())
    return m.hexdigest()[:16]


def _mixed_spec() -> WorkloadSpec:
    """Every code path of the numpy generator: uniform and Zipf groups, random and fixed pooling,
    several groups per side, non-power-of-two action types, two tasks."""
    return WorkloadSpec(
        impressions=_d(kind="uniform", low=1, high=4, min=1),
        history=HistorySpec(length=_d(kind="poisson", mean=5.0), item_cardinality=50, action_types=5),
        user_sparse=(
            SparseGroup("u", 2, 30, _d(kind="uniform", low=0, high=3), "uniform", 1.1),
            SparseGroup("u2", 3, 3000, _d(kind="geometric", mean=2.0, max=9), "zipf", 1.3),
        ),
        user_dense=3,
        item_sparse=(
            SparseGroup("i", 2, 40, _d(kind="uniform", low=0, high=3), "zipf", 1.2),
            SparseGroup("i2", 1, 400, _d(kind="fixed", value=2), "uniform", 1.2),
        ),
        item_dense=2,
        tasks=(Task("a", 0.3), Task("b", 0.1)),
    )


# Digests of batches the numpy generator made before its speed work: a faster generator must give
# the same bytes for the same seed. numpy's Generator may change its distribution algorithms in a
# new version (NEP 19); a mismatch after a numpy upgrade alone means that, not a generator bug.
GOLDEN = {
    ("early-ranking", 300, 5): "961956a700eb7472",
    ("hstu-ranking", 300, 5): "bbf9f3d6f27d9323",
    ("late-ranking", 300, 5): "ee4903d68cdf9a25",
    ("retrieval", 300, 5): "961956a700eb7472",
    ("tiny", 300, 5): "39281371ceb13036",
    ("tiny", 2 * BLOCK + 17, 9): "0ec65eb89ec18aec",
    ("early-ranking", 5000, 11): "339244a4acd32092",
    ("mixed", 2 * BLOCK + 5, 3): "0f541081b2b431a1",
}
GOLDEN_MIXED_CHUNKS = ("3ffd35121814e492", "1627619d4b0b23dd", "18992f1ab0a2b341")


@pytest.mark.parametrize(("name", "n", "seed"), list(GOLDEN))
def test_generator_output_is_byte_identical_to_the_golden_digests(name, n, seed):
    spec = _mixed_spec() if name == "mixed" else get_preset(name)
    assert _batch_digest(generate(spec, n, seed=seed)) == GOLDEN[(name, n, seed)]


def test_streamed_chunks_are_byte_identical_to_the_golden_digests():
    parts = iter_request_batches(_mixed_spec(), 2 * BLOCK + 5, seed=3, chunk_requests=3000)
    assert tuple(_batch_digest(b) for b in parts) == GOLDEN_MIXED_CHUNKS


@pytest.mark.parametrize("cardinality", [1, 2, 50, 40_000_000, (1 << 31) - 1])
@pytest.mark.parametrize("a", [1.0, 1.1, 1.3, 2.5])
def test_fast_zipf_ids_equal_the_reference_on_random_and_edge_draws(cardinality, a):
    from workloads.generator import _zipf_from_bits, _zipf_from_bits_fast, _zipf_offsets, _zipf_table

    rng = np.random.default_rng([cardinality, int(a * 10)])
    bucket_edges = np.arange(4096, dtype=np.uint64) << 20
    edges = np.concatenate([bucket_edges, bucket_edges + (1 << 20) - 1, [0, (1 << 32) - 1]]).astype(np.uint32)
    bits = np.concatenate([rng.integers(0, 1 << 32, 50_000, dtype=np.uint64).astype(np.uint32), edges])
    table = _zipf_table(cardinality, a)
    ref, fast = np.empty(bits.size, np.int64), np.empty(bits.size, np.int64)
    _zipf_from_bits(bits, table, ref)
    _zipf_from_bits_fast(bits, table[1], _zipf_offsets(cardinality, a), fast)
    assert np.array_equal(fast, ref)
    assert ref.min() >= 0 and ref.max() < cardinality


def test_pooled_output_memory_never_overwrites_a_live_batch():
    import workloads.generator as gen

    spec = get_preset("tiny")
    kept = generate(spec, 500, seed=1)
    snapshot = {k: v.clone() for k, v in kept.tensors().items()}
    for s in range(2, 8):  # more batches than the pool holds, some dropped, some kept
        b = generate(spec, 500, seed=s)
        if s % 3 == 0:
            snapshot_b = b
    assert all(torch.equal(v, snapshot[k]) for k, v in kept.tensors().items())
    assert snapshot_b.equal(generate(spec, 500, seed=6))
    # a dropped batch's memory is reused, and what is made there equals a fresh batch
    gen.release_pooled_memory()
    first = generate(spec, 500, seed=3)
    ptr = first.history_item_ids.data_ptr()
    fresh = {k: v.clone() for k, v in first.tensors().items()}
    del first
    again = generate(spec, 500, seed=3)
    assert again.history_item_ids.data_ptr() == ptr
    assert all(torch.equal(v, fresh[k]) for k, v in again.tensors().items())
    assert len(gen._tls.arenas) <= gen._POOL_ARENAS
