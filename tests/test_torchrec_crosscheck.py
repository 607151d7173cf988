"""torchrec's sharded EmbeddingBagCollection against roo-bench's exchange, where torchrec imports.

Two gloo ranks on the CPU (torch.multiprocessing spawn) shard the tables of the tiny preset
table-wise with the owners of roo_ref.cost.comm.assign_tables, and run one training step per layout
through torchrec (fed roo_ref.torchrec_export's KJTs: a plain KJT for the impression layout, a VBE
KJT for ROO) and through roo_ref.sharded_embeddings (counted by harness.comm.CountingComm). The test
counts the bytes of every tensor torchrec hands to `torch.distributed.all_to_all_single` and asserts,
per rank and per layout, that they equal roo-bench's counted bytes after one documented adjustment:

- torchrec's KJTAllToAll first exchanges its split sizes (one int64 per destination for each of
  lengths, values and the stride: 8 * W * 3 bytes per rank), which roo-bench derives from the
  step's shape instead;
- with a VBE KJT it also sends each feature's batch size to the feature's owner (one int64 per key
  per rank: 8 * F bytes), which roo-bench likewise knows from the shape.

The lengths, ids, pooled embeddings and their gradients match roo-bench byte for byte. The ROO
KJT's pooled outputs, expanded by torchrec with `inverse_indices`, equal the impression KJT's per
impression bit for bit."""

from __future__ import annotations

import json
import os

import pytest
import torch

pytestmark = pytest.mark.slow

WORLD = 2
PRESET, REQUESTS, DIM, ROW_CAP, SEED = "tiny", 5, 8, 1000, 7
ID_BYTES = 8
FWD_ORDER = ("roo", "impression")  # VBE first: torchrec builds the VBE output dist on its first input


def _requests(batch, lo: int, hi: int):
    """Requests [lo, hi) of `batch` with their impressions (the rank's data-parallel slice)."""
    from workloads.batch import RequestBatch, _gather_nro, _gather_ro

    imp = batch.impression_offsets()
    return RequestBatch(
        num_impressions=batch.num_impressions[lo:hi],
        **_gather_ro(batch, torch.arange(lo, hi)),
        **_gather_nro(batch, torch.arange(int(imp[lo]), int(imp[hi]))),
    )


def _kjt(local, layout: str, tables):
    """roo_ref.torchrec_export's KJT of the rank's slice, ids taken modulo each table's rows (as
    roo_ref.sharded_embeddings.local_input does)."""
    from roo_ref.torchrec_export import kjt_parts, to_kjt

    p = kjt_parts(local, layout, [t.name for t in tables])
    bags = [s[0] for s in p["stride_per_key_per_rank"]] if layout == "roo" else [p["stride"]] * len(tables)
    bag_key = torch.repeat_interleave(torch.arange(len(tables)), torch.tensor(bags))
    rows = torch.tensor([t.rows for t in tables])
    p["values"] = p["values"] % rows[torch.repeat_interleave(bag_key, p["lengths"])]
    return to_kjt(p)


def _sharded_ebc(tables, owners):
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
    from torchrec.distributed.shard import shard
    from torchrec.distributed.sharding_plan import table_wise
    from torchrec.distributed.types import ShardingEnv

    cfgs = [
        EmbeddingBagConfig(
            name=t.name, embedding_dim=DIM, num_embeddings=t.rows, feature_names=[t.name], pooling=PoolingType.SUM
        )
        for t in tables
    ]
    ebc = EmbeddingBagCollection(tables=cfgs, device=torch.device("cpu"))
    # the fused (fbgemm TBE) kernel: torchrec's dense CPU kernel mis-sizes a VBE batch's pooled output
    plan = {t.name: table_wise(rank=o, compute_kernel="fused") for t, o in zip(tables, owners, strict=True)}
    env = ShardingEnv.from_process_group(torch.distributed.group.WORLD)
    return shard(ebc, plan, env=env, device=torch.device("cpu"))


def _roo_bench_step(batch, tables, owners, layout: str, rank: int) -> dict:
    """roo-bench's exchange of one step: bytes handed per component on this rank."""
    from harness.comm.collective import CountingComm
    from roo_ref.sharded_embeddings import ShardedEmbeddings, forward_backward, local_input

    cpu = torch.device("cpu")
    comm = CountingComm(rank, WORLD, cpu)
    emb = ShardedEmbeddings(tables, "table", owners, rank, WORLD, DIM, SEED, cpu, comm, torch.float32)
    inp = local_input(batch, layout, tables, rank, WORLD, cpu)
    fu, fi = batch.user_sparse_lengths.shape[0], batch.item_sparse_lengths.shape[0]
    head = torch.nn.Linear((fu + fi) * DIM, 1)
    forward_backward(emb, head, inp, fu, fi)
    return dict(comm.handed)


def _worker(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from roo_ref.cost import comm as cc
    from workloads.generator import generate
    from workloads.presets import get_preset

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=WORLD)
    spec = get_preset(PRESET)
    batch = generate(spec, REQUESTS * WORLD, seed=SEED)
    tables = cc.embedding_tables(spec, ROW_CAP)
    owners = cc.assign_tables(tables, WORLD)
    local = _requests(batch, *cc.rank_slices(batch.num_requests, WORLD)[rank])
    sebc = _sharded_ebc(tables, owners)
    calls: list[list] = []
    single, listed = dist.all_to_all_single, dist.all_to_all

    def counted(output, input, output_split_sizes=None, input_split_sizes=None, group=None, async_op=False):
        calls.append([input.numel() * input.element_size(), str(input.dtype).removeprefix("torch.")])
        return single(output, input, output_split_sizes, input_split_sizes, group, async_op)

    def counted_list(outputs, inputs, group=None, async_op=False):  # not expected: shows up as an extra call
        calls.append([sum(x.numel() * x.element_size() for x in inputs), "list"])
        return listed(outputs, inputs, group, async_op)

    dist.all_to_all_single, dist.all_to_all = counted, counted_list
    # forward only (the fused optimizer updates the tables in backward): the pooled outputs per impression
    pooled = {lay: sebc(_kjt(local, lay, tables)).values().detach() for lay in FWD_ORDER}
    res: dict = {
        "impressions": local.num_impressions_total,
        "keys": len(tables),
        "pooled_shape": list(pooled["roo"].shape),
    }
    res["pooled_equal"] = torch.equal(pooled["roo"], pooled["impression"])
    res["pooled_nonzero"] = bool((pooled["roo"] != 0).any())
    for lay in FWD_ORDER:  # one training step per layout, counted
        calls.clear()
        v = sebc(_kjt(local, lay, tables)).values()
        (v * torch.randn_like(v)).sum().backward()
        res[lay] = {"torchrec": list(calls)}
    dist.all_to_all_single, dist.all_to_all = single, listed
    for lay in FWD_ORDER:
        res[lay]["roo_bench"] = _roo_bench_step(batch, tables, owners, lay, rank)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(res, f)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    pytest.importorskip("torchrec")
    import torch.multiprocessing as mp

    tmp = tmp_path_factory.mktemp("torchrec")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD)
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(WORLD)]


def _torchrec_components(calls: list, layout: str) -> dict:
    """torchrec's all-to-alls of one step, in call order, named by what they carry."""
    names = ["splits", "ids_lengths", "ids_values"]
    names += ["stride_per_key"] if layout == "roo" else []
    names += ["pooled_fwd", "grad_bwd"]
    assert len(calls) == len(names), calls
    dtypes = ["int64"] * (len(names) - 2) + ["float32"] * 2
    assert [c[1] for c in calls] == dtypes
    return {n: c[0] for n, c in zip(names, calls, strict=True)}


@pytest.mark.parametrize("layout", ["impression", "roo"])
def test_torchrec_moves_roo_benchs_bytes(ranks, layout):
    from roo_ref.cost import comm as cc
    from workloads.generator import generate
    from workloads.presets import get_preset

    spec = get_preset(PRESET)
    n_keys = len(cc.embedding_tables(spec, ROW_CAP))
    total = dict.fromkeys(cc.COMPONENTS, 0)
    for res in ranks:
        tr, rb = _torchrec_components(res[layout]["torchrec"], layout), res[layout]["roo_bench"]
        for c in cc.COMPONENTS:  # lengths, ids, embeddings and gradients: byte for byte
            assert tr[c] == rb[c] > 0, (layout, c)
            total[c] += rb[c]
        # the documented difference: torchrec's split sizes (lengths, values, stride per destination)
        assert tr["splits"] == ID_BYTES * WORLD * 3
        if layout == "roo":  # and VBE's batch size of every key, sent to the key's owner
            assert tr["stride_per_key"] == ID_BYTES * n_keys
    exact = cc.exact_a2a_bytes(
        generate(spec, REQUESTS * WORLD, seed=SEED), layout, WORLD, "table", DIM, 4, ROW_CAP, spec=spec
    )
    assert total == exact.handed()


def test_roo_saves_bytes_in_torchrec_too(ranks):
    def step(lay):
        return sum(c[0] for res in ranks for c in res[lay]["torchrec"])

    assert step("roo") < step("impression")


def test_vbe_pooled_outputs_equal_the_impression_kjts(ranks):
    for res in ranks:
        assert res["pooled_shape"] == [res["impressions"], DIM * res["keys"]]  # every key, per impression
        assert res["pooled_nonzero"] and res["pooled_equal"]
