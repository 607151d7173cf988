"""`fit` on a log written by another pipeline (workloads.foreign_log): string request keys, `u_*`
columns of int/float/string/embedding types, a list history with its timestamps, shuffled rows,
a per-impression timestamp and planted RO conflicts. Roles are inferred (or given), every column
lands in the spec or is named as dropped, the count distributions and the storage ratio are
reproduced; plus the sketches the streaming fit relies on."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from harness.cli import main
from tests.harness_fixtures.foreign_bytes import USER, direct_bytes, py_bytes
from workloads.fit_log import fit_log
from workloads.foreign_log import CONFLICT_COLUMNS, HISTORY, HISTORY_TS, KEY, ForeignLogConfig, write_foreign_log
from workloads.generator import generate
from workloads.log_sketch import Distinct, Sample, hash64, row_bytes
from workloads.records import validate_record
from workloads.roles import RoleOptions
from workloads.spec import WorkloadSpec
from workloads.storage import measure, predicted_uncompressed_ratio

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_log(tmp_path, requests: int = 800, conflicts: int = 12, **kw):
    seed = random.randrange(1 << 30)
    cfg = ForeignLogConfig(requests=requests, seed=seed, conflicts=conflicts, row_group_rows=1500, chunk_requests=300)
    return write_foreign_log(tmp_path / "events.parquet", cfg, **kw)


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    return write_log(tmp_path_factory.mktemp("foreign"))


def test_the_fixture_is_foreign_shuffled_and_its_conflicts_are_real(log):
    t = pq.read_table(log.path)
    assert t.schema.field(KEY).type == pa.string() and pa.types.is_list(t.schema.field(HISTORY).type)
    assert {"u_score": pa.float64(), "u_country": pa.string()}.items() <= {f.name: f.type for f in t.schema}.items()
    keys = t.column(KEY).to_numpy(zero_copy_only=False)
    runs = 1 + int((keys[1:] != keys[:-1]).sum())
    assert runs > 2 * log.requests  # a request's rows are not adjacent
    g = t.group_by(KEY).aggregate([(c, "count_distinct") for c in CONFLICT_COLUMNS])
    varying = {c: int(pc.sum(pc.greater(g.column(f"{c}_count_distinct"), 1)).as_py() or 0) for c in CONFLICT_COLUMNS}
    assert varying == {c: Counter(col for _, col in log.conflicts).get(c, 0) for c in CONFLICT_COLUMNS}
    assert sum(varying.values()) == 12 == len(log.conflicts)


def test_auto_roles_infer_the_mapping(log):
    res = fit_log(log.path, KEY)
    r = res.roles
    varying = {col for _, col in log.conflicts}
    assert set(r.ro) == set(USER) - varying  # the user columns given a conflict vary: NRO
    assert r.labels == ("click", "like") and r.timestamp == "timestamp"
    assert r.history == (HISTORY, HISTORY_TS, "") and r.request_key == KEY
    assert all(any(c in n and "--on-conflict first" in n for n in r.notes) for c in varying)
    lines = res.mapping()
    assert len(lines) == 14 and all(any(line.startswith(c) for line in lines) for c in res.profile.columns)
    assert res.conflicts == {} and res.report["conflicts"]["total"] == 0


@pytest.mark.slow
def test_fitted_spec_reproduces_counts_and_storage_ratio(log, tmp_path):
    opts = RoleOptions(ro_columns=USER)
    res = fit_log(log.path, KEY, opts, "first")
    spec, rep = res.spec, res.report
    t = pq.read_table(log.path)
    k = np.asarray(t.group_by(KEY).aggregate([(KEY, "count")]).column(1))
    lengths = t.append_column("hl", pc.list_value_length(t.column(HISTORY)))
    hl = np.asarray(lengths.group_by(KEY).aggregate([("hl", "max")]).column(1))
    assert spec.impressions.mean() == pytest.approx(k.mean(), rel=0.03)
    assert spec.history.length.mean() == pytest.approx(hl.mean(), rel=0.03)
    for key in ("impressions", "history_length"):
        chosen = rep[key]["candidates"][rep[key]["chosen"]]
        assert 0 <= chosen["tv"] < 0.1 and 0 <= chosen["ks"] < 0.1
    imp, req = direct_bytes(log.path, USER)
    ratio = imp / req
    assert rep["storage"]["log_uncompressed_ratio"] == pytest.approx(ratio, rel=1e-9)
    assert predicted_uncompressed_ratio(spec) == pytest.approx(ratio, rel=0.05)
    generated = measure(generate(spec, 1500, seed=3), spec, codecs=("none",), orders=("grouped",))
    assert generated["measured_uncompressed_ratio"] == pytest.approx(ratio, rel=0.05)
    # every column placed or named as dropped, with the features their types call for
    assert set(rep["columns"]) == set(res.profile.columns)
    assert {g.name for g in spec.user_sparse} == {"u_user_id", "u_age", "u_country"}
    assert {g.name for g in spec.item_sparse} == {"i_category"}
    balance = (rep["storage"]["balance"] or {}).get("added", 0)
    side = (rep["storage"]["balance"] or {}).get("feature")
    assert spec.user_dense == 16 + 1 + (balance if side == "user_dense" else 0)  # embedding + u_score
    assert spec.item_dense == 1 + (balance if side == "item_dense" else 0)  # i_price
    assert [x.name for x in spec.tasks] == ["click", "like"]
    assert rep["dropped"] == ["timestamp: the event time is not a model feature; its bytes are counted"]
    assert res.conflicts == Counter(col for _, col in log.conflicts)


@pytest.mark.slow
def test_fit_cli_prints_the_mapping_and_a_deterministic_spec(log, tmp_path, capsys):
    outs = []
    for i in range(2):
        out = tmp_path / f"s{i}.toml"
        code = main(["fit", str(log.path), "--request-key", KEY, "--roles", "auto", "--out", str(out)])
        text, err = capsys.readouterr()
        assert code == 0, err
        outs.append(out.read_text())
    assert outs[0] == outs[1] and WorkloadSpec.from_file(tmp_path / "s0.toml").impressions.mean() > 1
    for c in ("u_user_id", "u_hist_items", "click", "timestamp"):
        assert any(line.strip().startswith(c) for line in text.splitlines()), text
    assert "history item ids" in text and "label" in text and "note: u_age varies within only" in text
    code = main(["fit", str(log.path), "--request-key", KEY, "--json"])
    rec = json.loads(capsys.readouterr().out)
    assert code == 0 and validate_record(rec) == [] and rec["kind"] == "fit"
    assert rec["metrics"]["roles"]["labels"] == ["click", "like"]
    assert rec["metrics"]["fit"]["storage"]["error"] == pytest.approx(0, abs=0.05)


@pytest.mark.slow
def test_explicit_roles_override_inference(log, capsys, tmp_path):
    argv = ["fit", str(log.path), "--request-key", KEY, "--roles", "explicit", "--ro-columns", ",".join(USER)]
    argv += ["--label-columns", "click", "--timestamp", "timestamp", "--sequence-columns", f"{HISTORY},{HISTORY_TS}"]
    code = main([*argv, "--on-conflict", "first", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    m = json.loads(out)["metrics"]
    assert m["roles"]["labels"] == ["click"] and m["roles"]["history"]["timestamps"] == HISTORY_TS
    assert "like" in [g["name"] for g in m["spec"]["item_sparse"]]  # no longer a label: a 0/1 item feature
    assert m["fit"]["conflicts"]["total"] == len(log.conflicts)


@pytest.mark.slow
def test_storage_and_fit_read_converts_output_without_a_traceback(log, tmp_path, capsys):
    code = main(["convert", str(log.path), "--request-key", KEY, "--out", str(tmp_path / "conv")])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    code = main(["storage", "--data", str(tmp_path / "conv"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err, err
    m = json.loads(out)["metrics"]
    assert m["requests"] == log.requests and m["impressions"] == log.rows
    assert m["measured_uncompressed_ratio"] > 1.5 and {f["layout"] for f in m["formats"]} == {"impression", "request"}
    code = main(["fit", str(tmp_path / "conv"), "--request-key", KEY, "--out", str(tmp_path / "s.toml")])
    assert code == 0 and "Traceback" not in capsys.readouterr().err
    assert WorkloadSpec.from_file(tmp_path / "s.toml").impressions.mean() == pytest.approx(
        log.rows / log.requests, 0.03
    )


# --- the sketches -------------------------------------------------------------------------------------------
def test_hash64_equal_values_equal_hashes_any_slice():
    rng = np.random.default_rng(random.randrange(1 << 30))
    words = [f"w{x}" for x in rng.integers(0, 50, 400)]
    a = pa.array(words)
    h = hash64(a)
    assert all((h[i] == h[j]) == (words[i] == words[j]) for i, j in rng.integers(0, 400, (300, 2)))
    assert np.array_equal(hash64(a.slice(37, 100)), h[37:137])
    ints = rng.integers(-(1 << 40), 1 << 40, 1000)
    assert np.unique(hash64(pa.array(ints))).size == np.unique(ints).size


def test_distinct_is_exact_below_k_and_close_above():
    rng = np.random.default_rng(random.randrange(1 << 30))
    small, large = Distinct(4096), Distinct(4096)
    vals = rng.integers(0, 3000, 20000)
    for part in np.array_split(vals, 7):
        small.add(hash64(pa.array(part)))
    assert small.estimate() == np.unique(vals).size
    big = rng.integers(0, 1 << 50, 200_000)
    for part in np.array_split(big, 5):
        large.add(hash64(pa.array(part)))
    assert large.estimate() == pytest.approx(np.unique(big).size, rel=0.08)


def test_sample_is_uniform_and_keeps_the_exact_mean():
    rng = np.random.default_rng(random.randrange(1 << 30))
    x = rng.geometric(0.2, 50_000)
    s = Sample(5000, 7)
    for part in np.array_split(x, 9):
        s.add(part)
    assert s.values.size == 5000 and s.mean == pytest.approx(x.mean(), rel=1e-12)
    assert s.values.mean() == pytest.approx(x.mean(), rel=0.06)
    small = Sample(10_000, 3)
    small.add(x[:999])
    assert np.array_equal(np.sort(small.values), np.sort(x[:999]))


def test_row_bytes_counts_strings_lists_and_fixed_widths():
    rng = np.random.default_rng(random.randrange(1 << 30))
    words = ["x" * int(n) for n in rng.integers(0, 9, 50)]
    lists = [list(rng.integers(0, 9, int(n))) for n in rng.integers(0, 6, 50)]
    t = pa.table({"s": words, "l": pa.array(lists, pa.list_(pa.int32())), "f": rng.normal(size=50)})
    for name in t.column_names:
        got = row_bytes(t.column(name).chunk(0).slice(5, 40))
        want = [py_bytes(v, t.schema.field(name).type) for v in t.column(name).to_pylist()[5:45]]
        assert np.allclose(got, want)
