"""The committed GPU results the demo folds into its report: every file is a record file that loads
without a warning, each comm run is counted once, and the recorded properties hold."""

import collections
import json

from harness.commands import demo
from reports.loader import COMPANIONS, legacy_kind, load


def _files():
    return demo.committed_record_files()


def test_superseded_folders_are_left_out(tmp_path):
    (tmp_path / "a" / "old").mkdir(parents=True)
    (tmp_path / "a" / "new").mkdir(parents=True)
    for d in ("old", "new"):
        (tmp_path / "a" / d / "results.jsonl").write_text("")
    (tmp_path / "a" / "old" / "deeper").mkdir()
    (tmp_path / "a" / "old" / "deeper" / "comm.jsonl").write_text("")
    (tmp_path / "a" / "new" / "bench_hstu.json").write_text("")  # not a record file
    (tmp_path / "a" / "old" / demo.SUPERSEDED_MARK).write_text("measured on code since fixed")
    assert demo.committed_record_files(tmp_path) == [tmp_path / "a" / "new" / "results.jsonl"]
    assert demo.committed_record_files(tmp_path / "missing") == []


def test_committed_superseded_campaigns_are_not_folded_in():
    files = {str(p.relative_to(demo.COMMITTED)) for p in _files()}
    assert "h100/campaign3/early-kxL/results.jsonl" in files
    assert "h100/campaign2/early-kxL/results.jsonl" not in files  # before the coalesce fix
    assert "h100/campaign/nvml_perturbation.jsonl" in files  # still the only NVML measurement
    assert "h100/campaign5/hstu-kxL/results.jsonl" in files  # the current attention kernel
    assert "h100/campaign4/hstu-kxL/results.jsonl" not in files  # per-pair time-gradient atomics
    assert "h100/campaign3/hstu-kxL/results.jsonl" not in files
    assert "h100/campaign5/hstu-preset/results.jsonl" in files
    assert "h100/campaign5/call5/hstu-preset-repeat/results.jsonl" not in files  # the same point again
    assert "h100/campaign4/hstu-preset/results.jsonl" not in files
    assert "h100/campaign4/hstu-preset-timegrad-atomic/results.jsonl" not in files


def test_each_committed_point_is_folded_in_once():
    """A rerun of a point supersedes the earlier run's folder; both in the report would count the
    point twice (and its speedup twice in the medians)."""
    rs = load([str(p) for p in _files()])
    points = collections.Counter(
        (r["config_hash"], (r.get("provenance") or {}).get("device_name"))
        for r in rs.records
        if r.get("kind") == "point"
    )
    assert points and max(points.values()) == 1, [k for k, n in points.items() if n > 1]


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


# Record counts per kind of everything committed under reports/data/, as the loader read it before
# every record carried its kind; the legacy reader path must give the same, with no new warning.
COMMITTED_KIND_COUNTS = {"calibration": 8, "point": 145, "comm": 8, "bench": 1}
FOLDED_IN_KIND_COUNTS = {"calibration": 7, "point": 67, "comm": 4}
# The bare `--json` outputs committed before records carried their kind, read by file name.
LEGACY_BARE_FILES = {
    "h100/campaign/calibration.json": "calibration",
    "h100/campaign2/calibration.json": "calibration",
    "h100/campaign3/calibration.json": "calibration",
    "h100/comm/comm_early-ranking_row_w2.json": "comm",
    "h100/comm/comm_early-ranking_table_w2.json": "comm",
    "h100/comm/comm_retrieval_row_w2.json": "comm",
    "h100/comm/comm_retrieval_table_w2.json": "comm",
}


def _committed(pattern: str) -> list:
    return sorted(p for p in demo.COMMITTED.rglob(pattern) if p.name not in COMPANIONS)


def test_every_committed_result_file_loads_with_its_kind_and_no_warning():
    typed = [p for p in _committed("*.json") if "schema" in json.loads(p.read_text())]  # records written whole
    results = _committed("*.jsonl") + [demo.COMMITTED / p for p in LEGACY_BARE_FILES] + typed
    counts = collections.Counter()
    for p in results:
        rs = load([str(p)])
        assert rs.warnings == [], p
        assert rs.records, p
        counts.update(r["kind"] for r in rs.records)
        rel = str(p.relative_to(demo.COMMITTED))
        if rel in LEGACY_BARE_FILES:
            assert [r["kind"] for r in rs.records] == [LEGACY_BARE_FILES[rel]]
            assert legacy_kind(p, json.loads(p.read_text())) == LEGACY_BARE_FILES[rel]
    assert dict(counts) == COMMITTED_KIND_COUNTS
    assert dict(collections.Counter(r["kind"] for r in load([str(p) for p in _files()]).records)) == (
        FOLDED_IN_KIND_COUNTS
    )


def test_committed_non_result_json_is_skipped_as_before():
    """Kernel tables, profiler summaries and asv output sit beside the results: each is one
    'not a roo-bench result' warning when a directory is scanned, and never a record."""
    rs = load([str(demo.COMMITTED)])
    assert dict(collections.Counter(r["kind"] for r in rs.records)) == COMMITTED_KIND_COUNTS
    others = [
        p
        for p in _committed("*.json")
        if str(p.relative_to(demo.COMMITTED)) not in LEGACY_BARE_FILES and "schema" not in json.loads(p.read_text())
    ]
    # kernel tables, profiler summaries, asv and benchmark output
    assert len(others) == len(rs.warnings) == 41
    for p, w in zip(others, rs.warnings, strict=True):
        assert w == f"{p}: skipped, not a roo-bench result (no `schema` field and no known key set)"
