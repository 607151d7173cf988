"""`roo-bench analyze` end to end on a foreign log (workloads.foreign_log): the report, the analyze
record and the records it renders from; the storage ratio against a direct count; conflicts counted
exactly; and every bad input one line, exit 2, nothing written (for `fit` as well)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from harness.cli import main
from tests.harness_fixtures.foreign_bytes import USER, direct_bytes
from workloads.foreign_log import CONFLICT_COLUMNS, KEY, ForeignLogConfig, write_foreign_log
from workloads.records import from_dict, validate_record

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    d = tmp_path_factory.mktemp("analyze")
    cfg = ForeignLogConfig(
        requests=700, seed=random.randrange(1 << 30), conflicts=15, row_group_rows=1200, chunk_requests=250
    )
    return write_foreign_log(d / "events.parquet", cfg)


@pytest.fixture(scope="module")
def analyzed(log, tmp_path_factory):
    """analyze with the user columns named RO, keeping conflicts from the first row."""
    out = tmp_path_factory.mktemp("a") / "out"
    argv = ["analyze", log.path, "--request-key", KEY, "--ro-columns", ",".join(USER), "--on-conflict", "first"]
    code = main([str(a) for a in [*argv, "--model", "late-ranking", "--out", out, "--json"]])
    assert code == 0
    return out


def test_analyze_writes_the_report_the_record_and_the_dataset(analyzed, log, capsys):
    rec = json.loads((analyzed / "analyze.json").read_text())
    assert validate_record(rec) == [] and from_dict(rec).kind.value == "analyze"
    assert rec["config"]["model"] == "late-ranking" and rec["config"]["request_key"] == KEY
    m = rec["metrics"]
    assert m["log"]["requests"] == log.requests and m["log"]["rows"] == log.rows
    assert m["roles"]["ro"] == list(USER) and m["roles"]["labels"] == ["click", "like"]
    for name in ("storage", "model", "project"):
        r = json.loads((analyzed / "records" / f"{name}.json").read_text())
        assert validate_record(r) == [] and r["kind"] == name
    html = (analyzed / "report.html").read_text()
    assert "What ROO saves on events.parquet" in html and str(analyzed / "records" / "storage.json") in html
    assert "RO conflicts" in html and ".tmp-" not in html  # paths as they are after the rename
    req = pq.read_table(analyzed / "request" / "data.parquet")
    assert req.num_rows == log.requests and req.schema.field("u_age").type == pa.int32()
    assert pa.types.is_list(req.schema.field("item_id").type)
    assert sorted(p.name for p in analyzed.parent.iterdir()) == ["out"]  # no temp dir left beside it
    assert 0 < m["model"]["predicted_speedup"] and m["savings"]["storage_uncompressed"] > 0.5
    fmts = {
        (f["layout"], f["codec"])
        for f in json.loads((analyzed / "records" / "storage.json").read_text())["metrics"]["formats"]
    }
    assert fmts == {(lay, c) for lay in ("impression", "request") for c in ("none", "zstd")}
    # the request dataset reads back with the same roles: storage --data and fit run on it
    code, out, err = run(capsys, "storage", "--data", analyzed / "request", "--json")
    assert code == 0, err
    again = json.loads(out)["metrics"]
    assert again["uncompressed_bytes"]["request"] == m["storage"]["uncompressed_bytes"]["request"]
    # its impression rows repeat each request's first RO values: only the conflicting rows differ
    assert again["measured_uncompressed_ratio"] == pytest.approx(m["storage"]["measured_uncompressed_ratio"], rel=1e-3)


def test_storage_ratio_matches_a_direct_count(analyzed, log):
    m = json.loads((analyzed / "analyze.json").read_text())["metrics"]
    imp, req = direct_bytes(log.path, USER)
    assert m["storage"]["uncompressed_bytes"] == {"impression": imp, "request": req}
    assert m["storage"]["measured_uncompressed_ratio"] == pytest.approx(imp / req, rel=1e-12)
    assert m["storage"]["predicted_uncompressed_ratio"] == pytest.approx(imp / req, rel=0.05)
    files = m["storage"]["file_ratios"]
    st = json.loads((analyzed / "records" / "storage.json").read_text())["metrics"]
    by = {(f["layout"], f["codec"]): f["file_bytes"] for f in st["formats"]}
    assert files["shuffled/zstd"] == pytest.approx(by[("impression", "zstd")] / by[("request", "zstd")])
    assert by[("request", "zstd")] == (analyzed / "request" / "data.parquet").stat().st_size
    assert st["input"]["file_bytes"] == log.path.stat().st_size and st["input"]["rows"] == log.rows


def test_conflicts_are_counted_exactly(analyzed, log):
    m = json.loads((analyzed / "analyze.json").read_text())["metrics"]
    t = pq.read_table(log.path)
    g = t.group_by(KEY).aggregate([(c, "count_distinct") for c in CONFLICT_COLUMNS])
    direct = {c: int(pc.sum(pc.greater(g.column(f"{c}_count_distinct"), 1)).as_py() or 0) for c in CONFLICT_COLUMNS}
    direct = {c: n for c, n in direct.items() if n}
    assert m["conflicts"]["requests_by_column"] == direct == dict(Counter(c for _, c in log.conflicts))
    assert m["conflicts"]["total"] == 15 and m["conflicts"]["policy"] == "first"


def test_analyze_with_inferred_roles(log, tmp_path, capsys):
    code, out, err = run(capsys, "analyze", log.path, "--request-key", KEY, "--out", tmp_path / "o")
    assert code == 0, err
    assert "history item ids" in out and "note: " in out and "report: " in out
    m = json.loads((tmp_path / "o" / "analyze.json").read_text())["metrics"]
    assert m["conflicts"]["total"] == 0 and set(m["roles"]["nro"]) >= {c for _, c in log.conflicts}
    assert m["fit"]["impressions"]["tv"] < 0.1 and m["fit"]["history_length"]["ks"] < 0.1


# --- bad input ------------------------------------------------------------------------------------------
def _bad_logs(d: Path, log) -> dict[str, Path]:
    t = pq.read_table(log.path)
    keys = t.column(KEY).to_pylist()
    keys[3] = keys[10] = None
    pq.write_table(t.set_column(0, KEY, pa.array(keys, pa.string())), d / "null-keys.parquet")
    (d / "log.csv.parquet").write_text("req_key,u_age,item_id\nq1,20,5\nq1,20,6\n")
    mixed = d / "mixed"
    mixed.mkdir()
    pq.write_table(t.slice(0, 100), mixed / "part-0.parquet")
    pq.write_table(
        t.slice(100, 100).set_column(1, "u_user_id", pc.cast(t.column(1).slice(100, 100), pa.string())),
        mixed / "part-1.parquet",
    )
    return {"null": d / "null-keys.parquet", "csv": d / "log.csv.parquet", "mixed": mixed}


BAD = [
    (["--request-key", "session"], "request key column 'session' is not in"),
    (["{null}", "--request-key", KEY], f"request key column '{KEY}' has 2 null value(s)"),
    (["--request-key", KEY, "--ro-columns", "u_user_id,u_age,u_score"], "RO column 'u_"),
    (["--request-key", KEY, "--sequence-columns", "u_age"], "'u_age' is int32, not a list"),
    (["{csv}", "--request-key", KEY], "is a CSV file, so it is not a readable Parquet file"),
    (["{mixed}", "--request-key", KEY], "mixes schemas: in part-1.parquet, column 'u_user_id' is string"),
    (["--request-key", KEY, "--roles", "explicit"], "--roles explicit needs --ro-columns"),
    (["--request-key", KEY, "--label-columns", "u_hist_items"], "--label-columns ['u_hist_items']: a label column"),
]


@pytest.mark.parametrize("command", ["analyze", "fit"])
@pytest.mark.parametrize("args, msg", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_is_one_line_exit_2_nothing_written(log, tmp_path, capsys, command, args, msg):
    bad = _bad_logs(tmp_path, log)
    args = [a.format(**bad) for a in args]
    if args[0].startswith("--"):
        args = [str(log.path), *args]
    out = tmp_path / ("out" if command == "analyze" else "out.toml")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(capsys, command, *args, "--out", out)
    assert code == 2, err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not out.exists()
    if msg.startswith("RO column"):
        assert "differs within" in err and "--on-conflict first" in err
