"""Every dataset directory roo-bench writes reads as a Parquet dataset in pyarrow, pandas and duckdb.

The directories: `generate`'s `request/` and `impression/` (grouped and shuffled), `convert`'s output
of sorted input and of unsorted input (the external sort). Each reader is given the directory as it
is, without filters, and must see every row; a reader that is not installed is skipped.
"""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from harness.cli import main
from workloads import parquet_io as P
from workloads.errors import UserError
from workloads.records import flat_view

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(*args) -> None:
    assert main([str(a) for a in args]) == 0


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """{name: (dataset dir, impressions it holds)} for every kind of dataset directory written."""
    root = tmp_path_factory.mktemp("eco")
    seed = int(np.random.default_rng().integers(1, 10_000))
    n = int(np.random.default_rng(seed).integers(300, 700))
    common = ("--preset", "tiny", "--requests", n, "--seed", seed, "--row-group-size", 97)
    _cli("generate", *common, "--out", root / "g")
    _cli("generate", *common, "--out", root / "s", "--layout", "impression", "--order", "shuffled")
    _cli("convert", root / "g" / "impression", "--request-key", "request_id", "--out", root / "c")
    _cli("convert", root / "s" / "impression", "--request-key", "request_id", "--out", root / "cs")
    found = {
        "generate/request": root / "g" / "request",
        "generate/impression": root / "g" / "impression",
        "generate/impression-shuffled": root / "s" / "impression",
        "convert": root / "c",
        "convert/external-sort": root / "cs",
    }
    assert P.read_manifest(root / "cs")["convert"]["external_sort"]  # the shuffled input really took that path
    return {k: (d, P.read_manifest(d)["impressions"]) for k, d in found.items()}


NAMES = ["generate/request", "generate/impression", "generate/impression-shuffled", "convert", "convert/external-sort"]


def _impressions(item_id) -> int:
    """Impressions in an `item_id` column: one per row (impression level) or per list element."""
    first = item_id[0]
    return sum(len(x) for x in item_id) if hasattr(first, "__len__") else len(item_id)


@pytest.mark.parametrize("name", NAMES)
def test_directory_holds_data_and_an_underscore_manifest(dirs, name):
    d, imps = dirs[name]
    assert sorted(p.name for p in d.iterdir()) == [P.MANIFEST, P.DATA_FILE]
    assert P.MANIFEST.startswith("_")
    m = P.read_manifest(d)
    assert m["impressions"] == imps > 0 and m["rows"] == pq.read_metadata(d / P.DATA_FILE).num_rows


@pytest.mark.parametrize("name", NAMES)
def test_pyarrow_read_table_of_the_directory(dirs, name):
    d, imps = dirs[name]
    t = pq.read_table(d)
    assert t.num_rows == P.read_manifest(d)["rows"]
    assert _impressions(t.column("item_id").to_pylist()) == imps
    assert t.equals(pq.read_table(d / P.DATA_FILE))


@pytest.mark.parametrize("name", NAMES)
def test_pyarrow_dataset_of_the_directory(dirs, name):
    import pyarrow.dataset as ds

    d, imps = dirs[name]
    dataset = ds.dataset(d, format="parquet")
    assert [f.rsplit("/", 1)[-1] for f in dataset.files] == [P.DATA_FILE]
    assert dataset.count_rows() == P.read_manifest(d)["rows"]
    assert _impressions(dataset.to_table(columns=["item_id"]).column("item_id").to_pylist()) == imps


@pytest.mark.parametrize("name", NAMES)
def test_pandas_read_parquet_of_the_directory(dirs, name):
    pd = pytest.importorskip("pandas")
    d, imps = dirs[name]
    df = pd.read_parquet(d)
    assert len(df) == P.read_manifest(d)["rows"]
    assert _impressions(list(df["item_id"])) == imps
    assert sorted(df["request_id"].unique().tolist()) == sorted(set(pq.read_table(d).column("request_id").to_pylist()))


@pytest.mark.parametrize("name", NAMES)
def test_duckdb_read_parquet_of_the_directory(dirs, name):
    duckdb = pytest.importorskip("duckdb")
    d, imps = dirs[name]
    con = duckdb.connect()
    rows, ids = con.execute(f"SELECT count(*), count(DISTINCT request_id) FROM read_parquet('{d}')").fetchone()
    assert rows == P.read_manifest(d)["rows"]
    assert ids == P.read_manifest(d)["requests"]
    is_list = con.execute(f"SELECT typeof(item_id) FROM read_parquet('{d}') LIMIT 1").fetchone()[0].endswith("[]")
    total = "sum(len(item_id))" if is_list else "count(item_id)"
    assert con.execute(f"SELECT {total} FROM read_parquet('{d}')").fetchone()[0] == imps


def test_datasets_with_the_old_manifest_name_still_load(dirs, tmp_path, capsys):
    src, _ = dirs["generate/request"]
    old = tmp_path / "old" / "request"
    shutil.copytree(src, old)
    (old / P.MANIFEST).rename(old / P.LEGACY_MANIFEST)  # as written before the rename
    want = P.read_dataset(src)
    assert P.read_manifest(old) == json.loads((src / P.MANIFEST).read_text())
    assert P.read_dataset(old).equal(want)
    assert P.dataset_dirs(old.parent) == [old] and P.dataset_dirs(old) == [old]
    assert main(["storage", "--data", str(old.parent), "--codecs", "none", "--json"]) == 0
    flat = flat_view(json.loads(capsys.readouterr().out))
    assert flat["requests"] == want.num_requests and flat["data"] == str(old)


def test_report_scan_skips_dataset_manifests(dirs):
    from reports.loader import find_result_files

    d, _ = dirs["generate/request"]
    with pytest.raises(UserError, match="no result files found"):  # the manifest is not taken for a result
        find_result_files([str(d)])
