"""The committed GPU results the demo folds into its report: every file is a record file that loads
without a warning, each comm run is counted once, and the recorded properties hold."""

import collections

from harness.commands import demo
from reports.loader import load


def _files():
    return sorted(p for p in demo.COMMITTED.rglob("*") if p.name in demo.COMMITTED_RECORD_FILES)


def test_committed_record_files_load_cleanly_once_each():
    files = _files()
    assert files, "no committed results under reports/data"
    rs = load([str(p) for p in files])
    assert rs.warnings == []
    comm = [r for r in rs.records if r.get("kind") == "comm"]
    keys = collections.Counter((r["config_hash"], r["provenance"].get("created_utc")) for r in comm)
    assert comm and max(keys.values()) == 1  # the comm --json summaries are not folded in twice


def test_committed_comm_runs_counted_bytes_equal_analytic():
    rs = load([str(p) for p in _files() if p.name == "comm.jsonl"])
    for r in rs.records:
        for lay in r["metrics"]["layouts"].values():
            assert lay["counted_bytes_per_step"] == lay["analytic_bytes_per_step"]
