"""roo_ref.comm_cost: the analytic all-to-all bytes, checked on cases computed by hand."""

import pytest
import torch

from roo_ref.cost import comm as cc
from workloads.batch import RequestBatch
from workloads.distributions import Dist
from workloads.errors import UserError
from workloads.generator import generate
from workloads.presets import get_preset
from workloads.spec import SparseGroup, WorkloadSpec

# Two user tables of 10 rows (2 ids per bag), one item table of 7 rows (1 id per bag).
SPEC = WorkloadSpec(
    user_sparse=(SparseGroup("u", 2, 10, Dist(kind="fixed", value=2)),),
    item_sparse=(SparseGroup("i", 1, 7, Dist(kind="fixed", value=1)),),
)


def _batch() -> RequestBatch:
    """3 requests with k = 2, 1, 3 impressions. W=2 cuts them [0,1) | [1,3): rank 0 holds request 0
    (2 impressions), rank 1 requests 1 and 2 (4 impressions)."""
    k = torch.tensor([2, 1, 3])
    user = {0: ([1, 6], [9, 0]), 1: ([5, 4], [3, 3]), 2: ([0, 0], [7, 8])}  # request: (u_0 ids, u_1 ids)
    user_values = [x for f in range(2) for r in range(3) for x in user[r][f]]  # feature-major
    items = [0, 4, 6, 3, 2, 5]
    n = 6
    return RequestBatch(
        request_id=torch.arange(3),
        timestamp=torch.zeros(3, dtype=torch.int64),
        num_impressions=k,
        user_dense=torch.zeros(3, 0),
        user_sparse_lengths=torch.full((2, 3), 2),
        user_sparse_values=torch.tensor(user_values),
        history_lengths=torch.zeros(3, dtype=torch.int64),
        history_item_ids=torch.zeros(0, dtype=torch.int64),
        history_actions=torch.zeros(0, dtype=torch.int64),
        history_timestamps=torch.zeros(0, dtype=torch.int64),
        item_id=torch.zeros(n, dtype=torch.int64),
        item_sparse_lengths=torch.ones(1, n, dtype=torch.int64),
        item_sparse_values=torch.tensor(items),
        item_dense=torch.zeros(n, 0),
        labels=torch.zeros(n, 1),
    )


def _d(lengths, values, pooled):
    """A component dict: bytes of lengths, ids, pooled rows forward and their gradients backward."""
    return {"ids_lengths": lengths, "ids_values": values, "pooled_fwd": pooled, "grad_bwd": pooled}


def _exact(layout, sharding):
    b = _batch()
    b.validate()
    return cc.exact_a2a_bytes(b, layout, 2, sharding=sharding, embedding_dim=4, emb_bytes=4, spec=SPEC)


def test_tables_plan_and_slices():
    tables = cc.embedding_tables(SPEC)
    assert [(t.name, t.side, t.rows, t.ids_per_row_mean) for t in tables] == [
        ("u_0", "user", 10, 2.0),
        ("u_1", "user", 10, 2.0),
        ("i_0", "item", 7, 1.0),
    ]
    assert [t.rows for t in cc.embedding_tables(SPEC, row_cap=8)] == [8, 8, 7]
    # greedy: largest first, each to the least-loaded rank: u_0 -> 0, u_1 -> 1, i_0 (7) -> 0 (tie: lowest)
    assert cc.assign_tables(tables, 2, "greedy") == (0, 1, 0)
    assert cc.assign_tables(tables, 2, "round_robin") == (0, 1, 0)
    big_last = (*tables[:2], cc.Table("x", "item", 100, 1.0))
    assert cc.assign_tables(big_last, 2, "greedy") == (1, 1, 0)
    assert cc.assign_tables(tables, 4) == (0, 1, 2)
    assert cc.rank_slices(3, 2) == [(0, 1), (1, 3)]
    assert cc.rank_slices(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert cc.row_block(10, 2) == 5 and cc.row_block(7, 2) == 4 and cc.row_block(7, 3) == 3


def test_table_wise_by_hand():
    # impression layout: bags per rank (u_0, u_1, i_0): rank 0 [2, 2, 2], rank 1 [4, 4, 4] -> 18 bags;
    # ids: rank 0 [4, 4, 2], rank 1 [8, 8, 4] -> 30. Owners (0, 1, 0): crossing are rank 0's u_1
    # (2 bags, 4 ids) and rank 1's u_0 + i_0 (8 bags, 12 ids). A pooled row is 4 dims * 4 B = 16 B.
    imp = _exact("impression", "table")
    assert imp.handed() == _d(8 * 18, 8 * 30, 16 * 18)
    assert imp.cross() == _d(8 * 10, 8 * 16, 16 * 10)
    assert imp.total == 960 and imp.cross_total == 528
    # ROO: user bags once per request: rank 0 [1, 1, 2], rank 1 [2, 2, 4] -> 12 bags, 18 ids;
    # crossing: rank 0's u_1 (1 bag, 2 ids), rank 1's u_0 + i_0 (6 bags, 8 ids)
    roo = _exact("roo", "table")
    assert roo.handed() == _d(8 * 12, 8 * 18, 16 * 12)
    assert roo.cross() == _d(8 * 7, 8 * 10, 16 * 7)
    assert cc.saving(imp, roo) == pytest.approx(1 - 624 / 960)
    assert cc.saving(imp, roo, cross=True) == pytest.approx(1 - 360 / 528)


def test_row_wise_by_hand():
    # blocks: user tables 5 rows, item table 4 rows. Every rank sends every bag's length to both ranks
    # and a partial pooled row for every bag to both ranks. Ids leaving their rank (home != rank):
    # request 0 (rank 0, k=2): 6, 9 -> 2 per copy; request 1 (rank 1, k=1): 4, 3, 3 -> 3;
    # request 2 (rank 1, k=3): 0, 0 -> 2; items 4 (rank 0), 3 and 2 (rank 1) -> 3.
    imp = _exact("impression", "row")
    assert imp.handed() == _d(8 * 2 * 18, 8 * 30, 16 * 2 * 18)
    assert imp.cross() == _d(8 * 18, 8 * (2 * 2 + 3 + 3 * 2 + 3), 16 * 18)
    roo = _exact("roo", "row")
    assert roo.handed() == _d(8 * 2 * 12, 8 * 18, 16 * 2 * 12)
    assert roo.cross() == _d(8 * 12, 8 * (2 + 3 + 2 + 3), 16 * 12)
    assert imp.total == 1680 and roo.total == 1104 and imp.cross_total == 848 and roo.cross_total == 560


def test_one_rank_crosses_nothing():
    for sharding in cc.SHARDINGS:
        b = cc.exact_a2a_bytes(_batch(), "impression", 1, sharding=sharding, embedding_dim=4, spec=SPEC)
        assert b.cross_total == 0 and b.total == 8 * 18 + 8 * 30 + 2 * 16 * 18


@pytest.mark.parametrize("sharding", cc.SHARDINGS)
@pytest.mark.parametrize("layout", cc.LAYOUTS)
def test_expected_equals_exact_for_fixed_distributions(layout, sharding):
    spec = WorkloadSpec(
        impressions=Dist(kind="fixed", value=3, min=1),
        user_sparse=(SparseGroup("u", 3, 50, Dist(kind="fixed", value=2)),),
        item_sparse=(SparseGroup("i", 2, 40, Dist(kind="fixed", value=1)),),
    )
    w, r = 3, 5
    exp = cc.expected_a2a_bytes(spec, layout, w, requests_per_rank=r, sharding=sharding, embedding_dim=8, emb_bytes=2)
    ex = cc.exact_a2a_bytes(
        generate(spec, w * r, seed=1), layout, w, sharding=sharding, embedding_dim=8, emb_bytes=2, spec=spec
    )
    assert exp.handed() == pytest.approx(ex.handed(), abs=0)
    if sharding == "table":
        assert exp.cross() == pytest.approx(ex.cross(), abs=0)
    else:  # which ids leave their rank is random; everything else is exact
        for c in ("ids_lengths", "pooled_fwd", "grad_bwd"):
            assert exp.cross()[c] == ex.cross()[c]


def test_expected_tracks_exact_on_a_random_preset():
    spec = get_preset("tiny")
    w, r = 2, 1500
    for layout in cc.LAYOUTS:
        exp = cc.expected_a2a_bytes(spec, layout, w, requests_per_rank=r, sharding="row", embedding_dim=16)
        ex = cc.exact_a2a_bytes(generate(spec, w * r, seed=3), layout, w, sharding="row", embedding_dim=16, spec=spec)
        assert ex.total == pytest.approx(exp.total, rel=0.05)
        assert ex.cross_ids_values == pytest.approx(exp.cross_ids_values, rel=0.1)


def test_roo_never_sends_more_and_saves_with_k():
    spec = get_preset("early-ranking")
    imp = cc.expected_a2a_bytes(spec, "impression", 4, embedding_dim=128)
    roo = cc.expected_a2a_bytes(spec, "roo", 4, embedding_dim=128)
    assert roo.total < imp.total
    # item side identical, user side divided by E[k]: saving = user share * (1 - 1/E[k])
    k = spec.impressions.mean()
    # same bag shapes (one vector per feature): pooled bytes split by table count (16 of 26 tables)
    user = spec.n_user_sparse / (spec.n_user_sparse + spec.n_item_sparse)
    assert user == 16 / 26
    assert 1 - roo.pooled_fwd / imp.pooled_fwd == pytest.approx(user * (1 - 1 / k))


def test_allreduce_and_time_models():
    assert cc.allreduce_bytes(100, 4) == 150.0
    assert cc.allreduce_bytes(100, 1) == 0.0
    assert cc.alltoall_time_s(1000, 4, 750.0) == pytest.approx(1.0)
    assert cc.allreduce_time_s(100, 2, 50.0, latency_s=0.5) == pytest.approx(2.5)
    b = cc.A2ABytes(1, 2, 3, 4, 10, 20, 30, 40)
    assert b.total == 10 and b.cross_total == 100
    assert cc.step_a2a_time_s(b, 2, 10.0, latency_s=1.0) == pytest.approx(4 + 5)


def test_bad_inputs_are_user_errors():
    with pytest.raises(UserError, match=r"world_size=0 must be an integer >= 1"):
        cc.assign_tables(cc.embedding_tables(SPEC), 0)
    with pytest.raises(UserError, match=r"layout='flat'; allowed: impression, roo"):
        cc.expected_a2a_bytes(SPEC, "flat", 2)
    with pytest.raises(UserError, match=r"sharding='column'; allowed: table, row"):
        cc.exact_a2a_bytes(_batch(), "roo", 2, sharding="column", spec=SPEC)
    with pytest.raises(UserError, match=r"assign='random'; allowed: greedy, round_robin"):
        cc.assign_tables(cc.embedding_tables(SPEC), 2, "random")
    with pytest.raises(UserError, match=r"row_cap=0 must be >= 1"):
        cc.embedding_tables(SPEC, 0)
