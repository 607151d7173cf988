"""Parquet I/O, convert, storage and fit (library level)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from workloads import parquet_io as P
from workloads.convert import convert
from workloads.errors import UserError
from workloads.fit import fit_file
from workloads.generator import generate, iter_request_batches
from workloads.presets import get_preset
from workloads.row_equality import row_equals_prev
from workloads.storage import measure, predicted_uncompressed_ratio, row_bytes, uncompressed_bytes_per_impression

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SPEC = get_preset("tiny")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    n = 1500
    out = {}
    for layout, order in [("request", "grouped"), ("impression", "grouped"), ("impression", "shuffled")]:
        d = root / f"{layout}-{order}"
        P.write_dataset(
            d,
            iter_request_batches(SPEC, n, seed=4, chunk_requests=400),
            layout,
            order=order,
            codec="zstd",
            row_group_size=700,
            spec=SPEC,
            seed=4,
        )
        out[(layout, order)] = d
    return root, out, generate(SPEC, n, seed=4)


def test_parquet_round_trip_both_layouts(datasets):
    _, ds, b = datasets
    assert P.read_dataset(ds[("request", "grouped")]).equal(b)
    imp = P.read_dataset(ds[("impression", "grouped")])
    assert isinstance(imp, type(b.to_impressions())) and imp.equal(b.to_impressions())
    sh = P.read_dataset(ds[("impression", "shuffled")])
    assert not torch.equal(sh.request_id, b.to_impressions().request_id)  # really shuffled
    assert sorted(sh.request_id.tolist()) == sorted(b.to_impressions().request_id.tolist())


def test_manifest_and_row_groups(datasets):
    _, ds, b = datasets
    for (layout, order), d in ds.items():
        m = json.loads((d / P.MANIFEST).read_text())
        meta = pq.read_metadata(d / "data.parquet")
        assert m["layout"] == layout and m["order"] == order and m["codec"] == "zstd" and m["seed"] == 4
        assert m["requests"] == b.num_requests and m["impressions"] == b.num_impressions_total
        assert m["file_bytes"] == (d / "data.parquet").stat().st_size
        assert m["rows"] == meta.num_rows == (b.num_requests if layout == "request" else b.num_impressions_total)
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert all(s == 700 for s in sizes[:-1]) and 0 < sizes[-1] <= 700
        assert m["spec"] == SPEC.to_dict()
        assert "request_id" in meta.schema.to_arrow_schema().names


@pytest.mark.parametrize("codec", ["none", "snappy", "zstd"])
def test_codecs_round_trip(tmp_path, codec):
    b = generate(SPEC, 200, seed=1)
    P.write_dataset(tmp_path / "d", [b], "impression", codec=codec, spec=SPEC)
    meta = pq.read_metadata(tmp_path / "d" / "data.parquet")
    assert meta.row_group(0).column(0).compression == {"none": "UNCOMPRESSED"}.get(codec, codec.upper())
    assert P.read_dataset(tmp_path / "d").equal(b.to_impressions())


def test_writer_is_atomic_and_refuses_existing(tmp_path):
    b = generate(SPEC, 50, seed=1)
    with pytest.raises(RuntimeError):
        with P.DatasetWriter(tmp_path / "d", "request", spec=SPEC) as w:
            w.write(b)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    P.write_dataset(tmp_path / "d", [b], "request")
    with pytest.raises(UserError, match=r"already exists; choose a new --out or remove it"):
        P.write_dataset(tmp_path / "d", [b], "request")
    with pytest.raises(UserError, match=r"order='shuffled' applies to the impression layout only"):
        P.DatasetWriter(tmp_path / "e", "request", order="shuffled")


def test_convert_recovers_request_level_exactly(datasets, tmp_path):
    _, ds, b = datasets
    r = convert(ds[("impression", "grouped")] / "data.parquet", tmp_path / "c", "request_id")
    assert (r.rows_in, r.rows_out, r.conflicts, r.external_sort) == (b.num_impressions_total, b.num_requests, 0, False)
    assert r.dedup_factor == pytest.approx(b.num_impressions_total / b.num_requests)
    assert set(r.ro_columns) == {
        "timestamp",
        "user_dense",
        "history_item_ids",
        "history_actions",
        "history_timestamps",
    } | {f"us.user_{i}" for i in range(4)}
    got = pq.read_table(tmp_path / "c" / "data.parquet")
    want = pq.read_table(ds[("request", "grouped")] / "data.parquet")
    assert got.equals(want)
    assert P.read_dataset(tmp_path / "c").equal(b)


def test_convert_streams_small_batches_exactly(datasets, tmp_path, monkeypatch):
    # batches of a few rows: requests cut by batch and row-group boundaries, carried across several batches
    import workloads.convert as C

    _, ds, b = datasets
    monkeypatch.setattr(C, "_BATCH_BYTES", 3000)
    r = convert(ds[("impression", "grouped")] / "data.parquet", tmp_path / "c", "request_id")
    assert (r.rows_in, r.rows_out, r.conflicts) == (b.num_impressions_total, b.num_requests, 0)
    got = pq.read_table(tmp_path / "c" / "data.parquet")
    assert got.equals(pq.read_table(ds[("request", "grouped")] / "data.parquet"))
    # one output row group per input row group
    assert (
        pq.ParquetFile(tmp_path / "c" / "data.parquet").num_row_groups
        == pq.ParquetFile(ds[("impression", "grouped")] / "data.parquet").num_row_groups
    )


def test_convert_drops_guessed_columns_that_vary_later(tmp_path, monkeypatch):
    # u and v are constant within every request of the first batch, then both vary in rid=40
    import workloads.convert as C

    rid = np.repeat(np.arange(50), 2)
    u = rid * 10
    v = rid.astype(float)
    u[81], v[81] = -1, -1.0
    t = pa.table({"rid": rid, "u": u, "v": v, "w": rid % 7, "x": np.arange(100)})
    pq.write_table(t, tmp_path / "in.parquet", row_group_size=30)
    monkeypatch.setattr(C, "_BATCH_BYTES", 200)
    r = convert(tmp_path / "in.parquet", tmp_path / "o", "rid")
    assert r.ro_columns == ["w"] and r.rows_out == 50 and r.conflicts == 0
    out = pq.read_table(tmp_path / "o" / "data.parquet")
    assert out.column("u").to_pylist()[40] == [400, -1]
    assert out.column("x").to_pylist()[49] == [98, 99]
    assert out.column("w").to_pylist() == [i % 7 for i in range(50)]


def test_convert_unsorted_input_by_external_sort(datasets, tmp_path):
    _, ds, b = datasets
    r = convert(ds[("impression", "shuffled")], tmp_path / "c", "request_id", memory_budget_bytes=100_000)
    assert r.external_sort and r.partitions > 1 and r.rows_out == b.num_requests
    got = P.read_dataset(tmp_path / "c")
    order = torch.argsort(got.request_id)
    assert torch.equal(got.request_id[order], b.request_id)
    assert torch.equal(got.num_impressions[order], b.num_impressions)
    assert torch.equal(got.timestamp[order], b.timestamp)
    assert sorted(got.item_id.tolist()) == sorted(b.item_id.tolist())


def test_convert_conflicts(tmp_path):
    t = pa.table({"rid": [1, 1, 2, 2, 3], "u": [5, 6, 7, 7, 8], "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    pq.write_table(t, tmp_path / "in.parquet")
    with pytest.raises(UserError, match=r"RO column 'u' differs within request rid=1 .*--on-conflict first"):
        convert(tmp_path / "in.parquet", tmp_path / "o1", "rid", ro_columns="u")
    assert not (tmp_path / "o1").exists()
    r = convert(tmp_path / "in.parquet", tmp_path / "o2", "rid", ro_columns="u", on_conflict="first")
    assert r.conflicts == 1 and r.rows_out == 3
    out = pq.read_table(tmp_path / "o2" / "data.parquet")
    assert out.column("u").to_pylist() == [5, 7, 8]
    assert out.column("x").to_pylist() == [[1.0, 2.0], [3.0, 4.0], [5.0]]
    assert out.column("request_id").to_pylist() == [1, 2, 3]
    r = convert(tmp_path / "in.parquet", tmp_path / "o3", "rid")  # auto: u is not constant in rid=1
    assert r.ro_columns == [] and r.conflicts == 0


def test_row_equality_on_nested_and_string_columns():
    a = pa.array([[1, 2], [1, 2], [1], None, None, [[3]] and [1]], type=pa.list_(pa.int64()))
    assert row_equals_prev(a).tolist() == [False, True, False, False, True, False]
    s = pa.array(["a", "a", None, None, "b"])
    assert row_equals_prev(s).tolist() == [False, True, False, True, False]
    n = pa.array([[[1], [2]], [[1], [2]], [[1, 2]]], type=pa.list_(pa.list_(pa.int64())))
    assert row_equals_prev(n).tolist() == [False, True, False]
    f = pa.array([float("nan"), float("nan"), 1.0])
    assert row_equals_prev(f).tolist() == [False, True, False]


def test_predicted_matches_measured_uncompressed_ratio_early_ranking():
    spec = get_preset("early-ranking")
    res = measure(generate(spec, 2000, seed=1), spec, codecs=("none",), orders=("grouped",))
    assert res["measured_uncompressed_ratio"] == pytest.approx(res["predicted_uncompressed_ratio"], rel=0.05)
    rb = row_bytes(spec)
    k = rb["impressions_per_request"]
    assert predicted_uncompressed_ratio(spec) == pytest.approx(
        k * (rb["user"] + rb["item"]) / (rb["user"] + rb["request_overhead"] + k * rb["item"])
    )
    assert uncompressed_bytes_per_impression(spec, "impression") == rb["user"] + rb["item"]


def test_storage_formats_cover_layout_order_codec():
    res = measure(generate(SPEC, 300, seed=1), SPEC)
    keys = {(f["layout"], f["order"], f["codec"]) for f in res["formats"]}
    assert keys == {("request", "grouped", c) for c in P.CODECS} | {
        ("impression", o, c) for o in P.ORDERS for c in P.CODECS
    }
    for f in res["formats"]:
        assert f["file_bytes"] > 0 and f["write_s"] > 0 and f["read_s"] > 0 and f["memory_bytes"] > 0
        assert f["bytes_per_impression"] == pytest.approx(f["file_bytes"] / res["impressions"])


def test_fit_recovers_means_and_storage_ratio(datasets, tmp_path):
    _, ds, b = datasets
    spec, rep = fit_file(ds[("impression", "shuffled")], "request_id")
    k = b.num_impressions.double().mean().item()
    h = b.history_lengths.double().mean().item()
    assert spec.impressions.mean() == pytest.approx(k, rel=0.05)
    assert spec.history.length.mean() == pytest.approx(h, rel=0.05)
    assert spec.n_user_sparse == SPEC.n_user_sparse and spec.n_item_sparse == SPEC.n_item_sparse
    assert (spec.user_dense, spec.item_dense, spec.n_tasks) == (SPEC.user_dense, SPEC.item_dense, SPEC.n_tasks)
    p = tmp_path / "fit.toml"
    p.write_text(spec.to_toml())
    from workloads.spec import WorkloadSpec

    again = WorkloadSpec.from_file(p)
    assert again == spec
    r_orig = measure(generate(SPEC, 3000, seed=7), SPEC, codecs=("none",), orders=("grouped",))
    r_fit = measure(generate(again, 3000, seed=7), again, codecs=("none",), orders=("grouped",))
    assert r_fit["measured_uncompressed_ratio"] == pytest.approx(r_orig["measured_uncompressed_ratio"], rel=0.05)
    assert np.isfinite(rep["impressions"]["candidates"][rep["impressions"]["chosen"]]["tv"])


def test_fit_early_ranking_parametric(tmp_path):
    spec = get_preset("early-ranking")
    b = generate(spec, 3000, seed=3)
    from workloads.fit import fit_batch

    fitted, rep = fit_batch(b)
    assert fitted.impressions.mean() == pytest.approx(b.num_impressions.double().mean().item(), rel=0.05)
    assert fitted.history.length.mean() == pytest.approx(b.history_lengths.double().mean().item(), rel=0.05)
    assert rep["history_length"]["chosen"] in ("lognormal", "empirical")


# --- the global shuffle (workloads.shuffle) ------------------------------------------------------------
def _random_table(rng, n):
    lens = rng.integers(0, 5, n)
    vals = rng.integers(-(10**9), 10**9, int(lens.sum()))
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    return pa.table(
        {
            "i": np.arange(n),
            "x": rng.normal(size=n),
            "seq": pa.ListArray.from_arrays(pa.array(off), pa.array(vals)),
        }
    )


@pytest.mark.parametrize("budget_rows, expected", [(10**9, None), (300, None), (500, "estimate"), (120, "estimate")])
def test_external_shuffle_is_the_in_memory_permutation(tmp_path, budget_rows, expected):
    # however the rows arrive and however many buckets / splits the budget asks for: one order
    from workloads.shuffle import ExternalShuffle, shuffle_permutation

    rng = np.random.default_rng()
    n, seed = int(rng.integers(2000, 4000)), int(rng.integers(0, 2**31))
    t = _random_table(rng, n)
    budget = max(1, t.nbytes * budget_rows // n)
    sh = ExternalShuffle(tmp_path, seed, budget, t.nbytes if expected else None)
    cuts = np.sort(rng.choice(np.arange(1, n), size=int(rng.integers(1, 30)), replace=False))
    for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
        sh.add(t.slice(lo, hi - lo))
    parts = list(sh.drain())
    sh.close()
    got = pa.concat_tables(parts)
    assert got.equals(t.take(pa.array(shuffle_permutation(n, seed))))
    assert sorted(got.column("i").to_pylist()) == list(range(n))
    assert 0 < sh.largest_bucket_bytes <= max(budget, t.nbytes // n * 8)  # the budget bounds what is held
    if budget_rows < n:
        assert sh.buckets > 1 or sh.splits > 0
    assert list(tmp_path.iterdir()) == []  # temp files removed


def test_shuffle_permutation_depends_on_the_seed_only():
    from workloads.shuffle import row_keys, shuffle_permutation

    rng = np.random.default_rng()
    n, seed = int(rng.integers(1000, 5000)), int(rng.integers(0, 2**31))
    p = shuffle_permutation(n, seed)
    assert sorted(p.tolist()) == list(range(n)) and not np.array_equal(p, np.arange(n))
    assert np.array_equal(p, shuffle_permutation(n, seed))
    assert not np.array_equal(p, shuffle_permutation(n, seed + 1))
    # a row's key depends on its global index alone, not on the block it is computed in
    k = int(rng.integers(1, n))
    assert np.array_equal(row_keys(seed, 0, n), np.concatenate([row_keys(seed, 0, k), row_keys(seed, k, n - k)]))
    assert len(np.unique(row_keys(seed, 0, n))) == n


def test_shuffled_dataset_bytes_do_not_depend_on_chunking(tmp_path):
    seed = int(np.random.default_rng().integers(0, 2**31))
    n = 1500
    files = []
    for i, (chunk, budget) in enumerate([(n, 1 << 30), (173, 150_000), (700, 400_000)]):
        d = tmp_path / f"d{i}"
        m = P.write_dataset(
            d,
            iter_request_batches(SPEC, n, seed=seed, chunk_requests=chunk),
            "impression",
            order="shuffled",
            row_group_size=500,
            spec=SPEC,
            seed=seed,
            shuffle_memory_bytes=budget,
        )
        assert m["order"] == "shuffled" and m["shuffle"]["scope"] == "dataset"
        assert (m["shuffle"]["splits"] > 0) == (budget < 1 << 30)  # a small budget took the external path
        files.append((d / P.DATA_FILE).read_bytes())
    assert files[0] == files[1] == files[2]
    b = generate(SPEC, n, seed=seed).to_impressions()
    got = P.read_dataset(tmp_path / "d1")
    assert got.equal(b.permute(P.shuffle_perm(b.num_impressions_total, seed)))


def test_shuffled_requests_are_spread_over_the_whole_file(datasets):
    # rows of one request sit as far apart as random positions do (mean gap N/3), not within a chunk
    _, ds, b = datasets
    rid = pq.read_table(ds[("impression", "shuffled")], columns=["request_id"]).column("request_id").to_numpy()
    n = rid.size
    gaps = []
    for r in np.unique(rid):
        pos = np.flatnonzero(rid == r)
        if pos.size > 1:
            gaps.append(np.abs(pos[:, None] - pos[None, :])[np.triu_indices(pos.size, 1)].mean())
    assert len(gaps) > 100
    assert 0.28 * n < np.mean(gaps) < 0.39 * n  # written in chunks of 400 requests (~1/4 of the file)
    # and the storage measurement's `shuffled` order is the same permutation
    perm = P.shuffle_perm(b.num_impressions_total, 4)
    assert np.array_equal(rid, b.to_impressions().request_id[perm].numpy())
