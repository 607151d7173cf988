"""harness.results + workloads.records + harness.provenance: record schema, typed records, config
hash, fsync'd appends, --json helpers, legacy kinds, tolerant reading (truncated, foreign and
future-schema lines), pyarrow readability, provenance fields."""

import dataclasses
import datetime as dt
import json
import platform
import subprocess
from pathlib import Path

import pyarrow.json as pj
import pytest

from harness import provenance
from harness.results import (
    SCHEMA,
    append_record,
    config_hash,
    make_record,
    read_results,
    to_table,
    validate_record,
    write_record,
)
from workloads import records

ROOT = Path(__file__).resolve().parents[1]


def _rec(i, status="ok"):
    return make_record(
        "point",
        {"preset": "tiny", "i": i},
        {"speedup": 1.0 + i, "nan": float("nan")},
        status=status,
        error=None if status == "ok" else "CUDA out of memory",
        provenance={"seed": i},
    )


def test_config_hash_is_canonical():
    a = {"b": 1, "a": {"y": [1, 2], "x": "s"}}
    b = {"a": {"x": "s", "y": [1, 2]}, "b": 1}
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16 and int(config_hash(a), 16) >= 0
    assert config_hash(a) != config_hash({**a, "b": 2})
    assert config_hash({"x": 1}) != config_hash({"x": 1.5})


def test_record_schema():
    r = _rec(0)
    assert set(r) == {"schema", "kind", "config_hash", "status", "error", "config", "metrics", "provenance"}
    assert r["schema"] == SCHEMA == "roo-bench/result/1"
    assert r["metrics"]["nan"] is None  # strict JSON: NaN becomes null
    assert r["config_hash"] == config_hash({"preset": "tiny", "i": 0})
    h = make_record("point", {"a": 1, "spec": {}}, {}, hash_config={"a": 1})["config_hash"]
    assert h == config_hash({"a": 1})
    with pytest.raises(ValueError, match="status='oom' needs an error message"):
        make_record("point", {}, {}, status="oom")
    with pytest.raises(ValueError, match="kind='nope'"):
        make_record("nope", {}, {})
    assert validate_record({"schema": SCHEMA})[0] == "missing key 'kind'"


def test_append_and_read_round_trip(tmp_path):
    p = tmp_path / "results.jsonl"
    recs = [_rec(i) for i in range(3)] + [_rec(3, "oom")]
    for r in recs:
        append_record(p, r)
    assert p.read_text().count("\n") == 4
    got, warnings = read_results(tmp_path)  # a directory means its results.jsonl
    assert got == recs and warnings == []
    assert read_results([p], kind="storage") == ([], [])


def test_truncated_last_line_is_skipped_and_next_append_survives(tmp_path):
    p = tmp_path / "results.jsonl"
    append_record(p, _rec(0))
    append_record(p, _rec(1))
    line = json.dumps(_rec(2))
    with open(p, "a") as f:
        f.write(line[: len(line) // 2])  # what a writer killed mid-line leaves
    got, warnings = read_results(p)
    assert [r["config"]["i"] for r in got] == [0, 1]
    assert warnings == [f"{p}:3: truncated record (writer killed mid-line?); line skipped"]
    append_record(p, _rec(3))  # must not be glued onto the fragment
    got, warnings = read_results(p)
    assert [r["config"]["i"] for r in got] == [0, 1, 3]
    assert warnings == [f"{p}:3: malformed JSON; line skipped"]


def test_foreign_and_future_lines(tmp_path):
    p = tmp_path / "r.jsonl"
    good = _rec(0)
    future = dict(good, schema="roo-bench/result/99")
    invalid = dict(good, status="weird")
    p.write_text(
        "\n".join(
            [
                json.dumps({"foo": 1}),
                "[1, 2]",
                json.dumps(future),
                json.dumps(good),
                json.dumps(invalid),
                "",
                "not json",
            ]
        )
        + "\n"
    )
    got, warnings = read_results([p, tmp_path / "missing.jsonl"])
    assert got == [good]
    assert warnings[0] == f"{p}:1: not a roo-bench result record; line skipped"
    assert warnings[1] == f"{p}:2: not a roo-bench result record; line skipped"
    assert warnings[2].startswith(f"{p}:3: schema 'roo-bench/result/99' is not one this roo-bench reads")
    assert warnings[3].startswith(f"{p}:5: invalid record (status='weird'")
    assert warnings[4] == f"{p}:7: malformed JSON; line skipped"
    assert warnings[5].startswith(f"{tmp_path / 'missing.jsonl'}: cannot read")
    assert len(warnings) == 6


def test_readable_with_pyarrow(tmp_path):
    from harness_fixtures.points import standin_point

    p = tmp_path / "results.jsonl"
    ok = standin_point({"preset": "tiny", "warmup": 1, "steps": 3, "threads": 1})
    append_record(p, ok)
    append_record(p, make_record("point", {"preset": "tiny"}, {}, status="oom", error="CUDA out of memory"))
    t = pj.read_json(p)
    assert t.num_rows == 2
    assert t.column("status").to_pylist() == ["ok", "oom"]
    assert t.column("config_hash").to_pylist()[0] == ok["config_hash"]
    flat = to_table(read_results(p)[0])
    assert flat.num_rows == 2
    assert flat.column("metrics.layouts.roo.step_ms.n").to_pylist() == [3.0, None]
    assert flat.column("provenance.git_sha").to_pylist()[0] == ok["provenance"]["git_sha"]


def test_provenance_fields(monkeypatch):
    from roo_ref.kernels.options import HstuKernelOptions

    env = {"ROO_HSTU_TIME_GRAD": "reduce", "ROO_HSTU_BWD_CONFIG": "32,128,8,2", "ROO_BENCH_OTHER": "x"}
    p = provenance.collect(seed=5, device="cpu", kernel_options=HstuKernelOptions.from_env(env))
    assert set(provenance.FIELDS) == set(p)
    want = {**HstuKernelOptions().to_dict(), "time_grad": "reduce", "bwd_config": [32, 128, 8, 2]}
    assert p["kernel_options"] == want
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert p["git_sha"] == head.stdout.strip() and isinstance(p["git_dirty"], bool)
    assert p["seed"] == 5 and p["python_version"] == platform.python_version()
    assert p["torch_version"] and p["numpy_version"] and p["pyarrow_version"]
    assert p["device_name"].startswith("cpu") and p["roo_bench_version"] == "0.1.0"
    created = dt.datetime.fromisoformat(p["created_utc"])
    assert created.tzinfo is not None and abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 60


def test_provenance_without_git(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)  # not a git checkout
    provenance.git_state.cache_clear()
    try:
        p = provenance.collect(seed=0)
        assert p["git_sha"] is None and p["git_dirty"] is None
    finally:
        provenance.git_state.cache_clear()


# --- workloads.records: the typed envelope and the --json helpers -------------------------------------
def test_every_kind_has_a_typed_record_class():
    assert set(records.RECORD_TYPES) == set(records.Kind) and records.KINDS == tuple(k.value for k in records.Kind)
    assert {"point", "storage", "calibration", "comm", "model", "project", "validate", "bench", "profile"} <= set(
        records.KINDS
    )
    for kind, cls in records.RECORD_TYPES.items():
        rec = records.new_record(kind.value, {"a": 1}, {})
        assert type(rec) is cls and rec.kind is kind and rec.status is records.Status.OK
        assert records.to_dict(rec)["kind"] == kind.value == str(kind)


def test_record_dataclass_round_trip_and_typed_views():
    d = make_record("storage", {"preset": "tiny"}, {"formats": [{"codec": "zstd"}], "measured_uncompressed_ratio": 2.5})
    rec = records.from_dict(d)
    assert isinstance(rec, records.StorageRecord)
    assert rec.formats == [{"codec": "zstd"}] and rec.measured_uncompressed_ratio == 2.5
    assert rec.predicted_uncompressed_ratio is None and rec.ok
    assert records.to_dict(rec) == d and rec.config_hash == config_hash({"preset": "tiny"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.status = "oom"  # type: ignore[misc]


def test_record_construction_validates():
    with pytest.raises(records.RecordError, match=r"kind='nope'; allowed: point, storage"):
        records.new_record("nope", {}, {})
    with pytest.raises(records.RecordError, match=r"status='weird'; allowed: ok, oom, error"):
        records.Record(kind="point", config={}, metrics={}, status="weird")  # type: ignore[arg-type]
    with pytest.raises(records.RecordError, match=r"metrics must be an object"):
        records.new_record("model", {}, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(records.RecordError, match=r"kind='point' in a StorageRecord"):
        records.StorageRecord(kind=records.Kind.POINT, config={}, metrics={})
    with pytest.raises(records.RecordError, match=r"is not one this roo-bench reads"):
        records.from_dict(dict(_rec(0), schema="roo-bench/result/7"))
    assert issubclass(records.RecordError, ValueError)


def test_flat_json_outputs_wrap_without_changing_numbers(capsys):
    summary = {
        "preset": "tiny",
        "world_size": 2,
        "layouts": {"roo": {"counted_bytes_per_step": 7}},
        "saving": 0.45,
        "config_hash": "e04a6885c000f02c",
        "out": None,
    }
    config, metrics, h = records.split_flat("comm", summary)
    assert config == {"preset": "tiny", "world_size": 2} and h == "e04a6885c000f02c"
    assert metrics == {"layouts": {"roo": {"counted_bytes_per_step": 7}}, "saving": 0.45, "out": None}
    rec = records.emit_flat("comm", summary)
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and json.loads(printed) == rec and validate_record(rec) == []
    assert rec["config_hash"] == "e04a6885c000f02c" and records.flat_view(rec) == summary
    assert records.flat_view(summary) == summary  # a flat object reads as it is
    rec = records.emit("presets", {}, {"presets": [], "x": float("nan")})
    assert json.loads(capsys.readouterr().out) == rec and rec["metrics"]["x"] is None
    demo = {"kind": "demo", "device": "cpu", "stages": []}
    assert records.record_from_flat("demo", demo)["config"] == {"device": "cpu"}
    assert records.flat_view(records.record_from_flat("demo", demo)) == {"device": "cpu", "stages": []}


def test_legacy_kinds_come_from_the_file_name_table():
    storage = {"formats": [], "measured_uncompressed_ratio": 2.0}
    assert records.legacy_kind("storage-early-ranking.json", storage) == "storage"
    assert records.legacy_kind("out.json", storage) is None  # not a legacy name: no guessing
    assert records.legacy_kind("storage.json", {"formats": []}) is None  # the name, but not the keys
    assert records.legacy_kind("comm_retrieval_row_w2.json", {"layouts": {"roo": {"counted_bytes_per_step": 1}}})
    assert records.legacy_kind("anything.json", {"kind": "demo"}) == "demo"
    assert records.legacy_kind("model-x.json", [1]) is None


def test_write_record_replaces_the_file_whole(tmp_path):
    p = tmp_path / "calibration.json"
    p.write_text("old")
    rec = make_record("calibration", {}, {"matmul_flops": 1e9, "copy_bandwidth": 2e9, "device_name": "cpu"})
    write_record(p, rec)
    assert json.loads(p.read_text()) == rec and [q.name for q in tmp_path.iterdir()] == ["calibration.json"]
    with pytest.raises(records.RecordError, match="missing key"):
        write_record(p, {"kind": "calibration"})
    assert json.loads(p.read_text()) == rec
