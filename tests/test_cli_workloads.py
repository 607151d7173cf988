"""`roo-bench presets|generate|convert|storage|fit`: acceptance checks and bad input (exit 2, one line)."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from harness.cli import main
from workloads import parquet_io as P
from workloads.presets import get_preset
from workloads.records import SCHEMA, flat_view, validate_record

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def record(out: str, kind: str) -> dict:
    """The one result record a `--json` command printed, checked against the contract."""
    rec = json.loads(out)
    assert validate_record(rec) == [] and rec["schema"] == SCHEMA
    assert rec["kind"] == kind and rec["status"] == "ok"
    return rec


def test_presets_lists_names_and_descriptions(capsys):
    code, out, _ = run(capsys, "presets", "--json")
    names = [p["name"] for p in record(out, "presets")["metrics"]["presets"]]
    assert code == 0 and {"tiny", "retrieval", "early-ranking", "late-ranking", "hstu-ranking"} <= set(names)
    code, out, _ = run(capsys, "presets")
    assert code == 0 and all(line.split()[0] in names and len(line.split()) > 2 for line in out.strip().splitlines())


def test_generate_twice_gives_byte_identical_parquet(capsys, tmp_path):
    for d in ("D1", "D2"):
        code, _, err = run(
            capsys, "generate", "--preset", "tiny", "--requests", 1000, "--seed", 1, "--out", tmp_path / d
        )
        assert code == 0, err
    for layout in ("request", "impression"):
        a = (tmp_path / "D1" / layout / "data.parquet").read_bytes()
        b = (tmp_path / "D2" / layout / "data.parquet").read_bytes()
        assert a == b and len(a) > 1000
        m1, m2 = (tmp_path / d / layout / P.MANIFEST for d in ("D1", "D2"))
        assert m1.read_bytes() == m2.read_bytes()
    code, _, _ = run(capsys, "generate", "--preset", "tiny", "--requests", 1000, "--seed", 2, "--out", tmp_path / "D3")
    d1, d3 = (tmp_path / d / "request" / "data.parquet" for d in ("D1", "D3"))
    assert d3.read_bytes() != d1.read_bytes()


def test_generate_options_and_json(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "generate",
        "--preset",
        "tiny",
        "--requests",
        300,
        "--out",
        tmp_path / "g",
        "--layout",
        "impression",
        "--order",
        "shuffled",
        "--codec",
        "snappy",
        "--row-group-size",
        100,
        "--set",
        "impressions.mean=2",
        "--json",
    )
    assert code == 0, err
    rec = record(out, "generate")
    res = rec["metrics"]
    assert rec["config"] == {
        "out": str(tmp_path / "g"),
        "preset": "tiny",
        "seed": rec["config"]["seed"],
        "requests": 300,
    }
    m = P.read_manifest(tmp_path / "g" / "impression")
    assert list(res["datasets"]) == ["impression"] and m["order"] == "shuffled" and m["codec"] == "snappy"
    assert m["spec"]["impressions"]["mean"] == 2.0
    assert pq.read_metadata(tmp_path / "g" / "impression" / "data.parquet").row_group(0).num_rows == 100


def test_convert_cli_recovers_generated_request_level(capsys, tmp_path):
    run(capsys, "generate", "--preset", "tiny", "--requests", 800, "--seed", 3, "--out", tmp_path / "g")
    code, out, err = run(
        capsys,
        "convert",
        tmp_path / "g" / "impression" / "data.parquet",
        "--request-key",
        "request_id",
        "--out",
        tmp_path / "c",
        "--json",
    )
    assert code == 0, err
    res = record(out, "convert")["metrics"]
    assert {"rows_in", "rows_out", "dedup_factor", "bytes_in", "bytes_out", "conflicts"} <= set(res)
    assert res["rows_out"] == 800 and res["conflicts"] == 0
    got = pq.read_table(tmp_path / "c" / "data.parquet").sort_by("request_id")
    want = pq.read_table(tmp_path / "g" / "request" / "data.parquet").sort_by("request_id")
    assert got.equals(want)


def test_storage_cli_json_contract(capsys):
    code, out, err = run(capsys, "storage", "--preset", "tiny", "--requests", 4000, "--json")
    assert code == 0, err
    rec = record(out, "storage")
    res = rec["metrics"]
    assert rec["config"] == {"preset": "tiny", "seed": rec["config"]["seed"]}
    assert flat_view(rec) == {**res, **rec["config"]}  # the flat object the record wraps
    assert res["measured_uncompressed_ratio"] == pytest.approx(res["predicted_uncompressed_ratio"], rel=0.05)
    assert len(res["formats"]) == 9
    for f in res["formats"]:
        assert {
            "layout",
            "order",
            "codec",
            "file_bytes",
            "bytes_per_impression",
            "write_s",
            "read_s",
            "memory_bytes",
        } <= set(f)


def test_fit_cli_writes_a_spec_every_command_accepts(capsys, tmp_path):
    run(capsys, "generate", "--preset", "tiny", "--requests", 600, "--out", tmp_path / "g", "--layout", "impression")
    code, out, err = run(
        capsys, "fit", tmp_path / "g" / "impression", "--request-key", "request_id", "--out", tmp_path / "s.toml"
    )
    assert code == 0, err and (tmp_path / "s.toml").is_file()
    code, _, err = run(capsys, "generate", "--spec", tmp_path / "s.toml", "--requests", 100, "--out", tmp_path / "g2")
    assert code == 0, err
    code, out, err = run(
        capsys, "storage", "--spec", tmp_path / "s.toml", "--requests", 100, "--codecs", "zstd", "--json"
    )
    assert code == 0, err and record(out, "storage")["metrics"]["predicted_uncompressed_ratio"] > 1
    code, out, err = run(capsys, "storage", "--data", tmp_path / "g2", "--codecs", "none", "--json")
    assert code == 0, err
    rec = record(out, "storage")
    assert rec["metrics"]["requests"] == 100 and rec["config"] == {"data": str(tmp_path / "g2" / "request")}
    code, out, err = run(capsys, "fit", tmp_path / "g" / "impression", "--request-key", "request_id", "--json")
    assert code == 0, err
    rec = record(out, "fit")
    assert rec["config"] == {"out": None} and rec["metrics"]["spec"]["impressions"] and "fit" in rec["metrics"]


# --- bad input: one line naming the problem, exit 2, nothing left behind --------------------------------
@pytest.fixture
def files(tmp_path, capsys):
    run(capsys, "generate", "--preset", "tiny", "--requests", 50, "--out", tmp_path / "g", "--layout", "impression")
    (tmp_path / "empty.parquet").write_bytes(b"")
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1" + os.urandom(200) + b"PAR1")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty.toml").write_text("# a spec to fill in later\n")
    (tmp_path / "empty.json").write_text("{}")
    (tmp_path / "ignored.toml").write_text('[impressions]\nkind = "geometric"\nmean = 3.0\nvalue = 5\n')
    return tmp_path


BAD = [
    (["generate", "--preset", "nope", "--out", "{o}"], "unknown preset 'nope'; choose one of: tiny"),
    (["generate", "--preset", "tiny", "--set", "impressions.bogus=1", "--out", "{o}"], "unknown key 'bogus'"),
    (
        ["generate", "--preset", "tiny", "--set", "user_dense=abc", "--out", "{o}"],
        "spec.user_dense='abc' must be an integer",
    ),
    (["generate", "--preset", "tiny", "--requests", "0", "--out", "{o}"], "--requests=0 must be >= 1"),
    (["generate", "--preset", "tiny", "--requests", "-5", "--out", "{o}"], "--requests=-5 must be >= 1"),
    (["generate", "--preset", "tiny", "--row-group-size", "0", "--out", "{o}"], "--row-group-size=0 must be >= 1"),
    (
        ["generate", "--preset", "tiny", "--set", "impressions.max=0", "--out", "{o}"],
        "impressions.max=0 is below impressions.min=1; set max >= min",
    ),
    (["generate", "--preset", "tiny", "--codec", "lz9", "--out", "{o}"], "--codec 'lz9' is not allowed"),
    (["generate", "--spec", "{t}/missing.toml", "--out", "{o}"], "does not exist"),
    (["generate", "--preset", "tiny", "--out", "{t}/afile/sub"], "does not exist; create it first"),
    (["convert", "{t}/empty.parquet", "--request-key", "request_id", "--out", "{o}"], "is empty (0 bytes)"),
    (
        ["convert", "{t}/corrupt.parquet", "--request-key", "request_id", "--out", "{o}"],
        "is not a readable Parquet file",
    ),
    (
        ["convert", "{t}/g/impression/data.parquet", "--request-key", "nope", "--out", "{o}"],
        "request key column 'nope' is not in",
    ),
    (
        [
            "convert",
            "{t}/g/impression/data.parquet",
            "--request-key",
            "request_id",
            "--ro-columns",
            "zz",
            "--out",
            "{o}",
        ],
        "--ro-columns names unknown column(s) ['zz']",
    ),
    (["convert", "{t}/g/impression/data.parquet", "--request-key", "request_id", "--out", "{t}/g"], "already exists"),
    (["convert", "{t}/missing.parquet", "--request-key", "request_id", "--out", "{o}"], "does not exist"),
    (
        ["fit", "{t}/corrupt.parquet", "--request-key", "request_id", "--out", "{o}.toml"],
        "is not a readable Parquet file",
    ),
    (
        ["fit", "{t}/empty.parquet", "--request-key", "request_id", "--out", "{o}.toml"],
        "is not a readable Parquet file",
    ),
    (["fit", "{t}/g/impression", "--request-key", "nope", "--out", "{o}.toml"], "request key column 'nope' is not in"),
    (
        ["fit", "{t}/g/impression", "--request-key", "request_id", "--out", "{t}/afile/s.toml"],
        "is not a writable directory",
    ),
    (["storage", "--preset", "nope"], "unknown preset 'nope'"),
    (["storage", "--preset", "tiny", "--requests", "0"], "--requests=0 must be >= 1"),
    (["storage", "--data", "{t}/afile"], "holds no roo-bench dataset"),
    (
        ["generate", "--preset", "tiny", "--shuffle-memory-mb", "0", "--out", "{o}"],
        "--shuffle-memory-mb=0 must be >= 1",
    ),
    # overrides the distribution does not read, or that its bounds would clip to a constant
    (
        ["generate", "--preset", "tiny", "--set", "impressions.value=50", "--out", "{o}"],
        "--set impressions.value=50: impressions is a geometric distribution, which does not read 'value'; "
        "it reads mean (and min, max, which clip every kind); to switch kinds, also --set impressions.kind=fixed",
    ),
    (
        [
            "generate",
            "--preset",
            "tiny",
            "--set",
            "impressions.kind=fixed",
            "--set",
            "impressions.value=50",
            "--out",
            "{o}",
        ],
        "impressions.value=50 is above impressions.max=8: the fixed distribution would be clipped to 8",
    ),
    (
        ["generate", "--preset", "tiny", "--set", "impressions.kind=fixed", "--out", "{o}"],
        "--set impressions.kind=fixed: a fixed distribution reads value (and min, max, which clip every kind); "
        "also give --set impressions.value=...",
    ),
    (
        ["storage", "--preset", "tiny", "--set", "user_sparse.0.pooling.mean=2"],
        "user_sparse.0.pooling is a uniform distribution, which does not read 'mean'; it reads low, high",
    ),
    (
        ["model", "--preset", "hstu-ranking", "--set", "impressions.mean=40"],
        "impressions is a fixed distribution, which does not read 'mean'; it reads value",
    ),
    (
        ["generate", "--spec", "{t}/ignored.toml", "--out", "{o}"],
        "impressions.value: impressions is a geometric distribution, which does not read 'value'; it reads mean",
    ),
    (["generate", "--spec", "{t}/empty.toml", "--out", "{o}"], "empty.toml is empty (it sets nothing)"),
    (["storage", "--spec", "{t}/empty.json"], "empty.json is empty (it sets nothing)"),
]


@pytest.mark.parametrize("argv, msg", BAD, ids=[" ".join(a[:2]) + f"#{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_is_one_line_exit_2_nothing_written(files, capsys, argv, msg):
    o = files / "out"
    before = sorted(p.name for p in files.iterdir())
    code, out, err = run(capsys, *[a.format(o=o, t=files) for a in argv])
    assert code == 2
    assert msg in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not o.exists() and not (files / "out.toml").exists()
    assert sorted(p.name for p in files.iterdir()) == before  # no temp dirs left either


@pytest.mark.slow
def test_bad_input_through_the_module_entry_point(run_cli, tmp_path):
    r = run_cli("generate", "--preset", "nope", "--out", tmp_path / "x")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "roo-bench generate: error: unknown preset 'nope'" in r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_non_writable_output_dir(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err = run(capsys, "generate", "--preset", "tiny", "--requests", 10, "--out", ro / "x")
        assert code == 2 and "is not writable" in err and err.count("\n") == 1
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_clipped_override_warns_and_runs(capsys, tmp_path):
    # a geometric tail cut by the preset's max is intended, but an override it moves is reported
    code, _, err = run(
        capsys,
        "generate",
        "--preset",
        "tiny",
        "--requests",
        200,
        "--set",
        "impressions.mean=20",
        "--out",
        tmp_path / "g",
    )
    assert code == 0, err
    want = get_preset("tiny").with_overrides(["impressions.mean=20"], warn=lambda m: None).impressions.mean()
    assert err == (
        "roo-bench: warning: impressions: the geometric distribution (mean=20) is clipped to [1, 8], "
        f"so its draws average {want:.3g}, not 20; widen impressions.min/max to keep the mean\n"
    )
    m = P.read_manifest(tmp_path / "g" / "request")
    assert m["spec"]["impressions"] == {"kind": "geometric", "mean": 20.0, "min": 1, "max": 8}
    assert m["impressions"] / m["requests"] == pytest.approx(want, rel=0.1)
    code, _, err = run(  # within the bounds: no word
        capsys, "generate", "--preset", "tiny", "--requests", 50, "--set", "impressions.mean=2", "--out", tmp_path / "h"
    )
    assert code == 0 and err == ""


def test_sweep_over_a_key_the_distribution_ignores_is_refused(capsys, tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[base]\npreset = "tiny"\n[grid.spec]\nimpressions.value = [1, 2, 4]\n')
    code, _, err = run(capsys, "sweep", f, "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1
    assert "impressions is a geometric distribution, which does not read 'value'; it reads mean" in err
    assert not (tmp_path / "out").exists()
    f.write_text(f.read_text().replace("[grid.spec]", '[base.spec]\nimpressions.kind = "fixed"\n[grid.spec]'))
    from harness.sweep import load_sweep

    values = sorted(p.config.resolve_spec().impressions.value for p in load_sweep(f).points)
    assert values == [1, 2, 4]  # three different workloads, as the grid says


def test_generate_shuffled_bytes_do_not_depend_on_chunk_requests(capsys, tmp_path):
    seed = int(np.random.default_rng().integers(0, 2**31))
    for d, chunk in (("a", 3000), ("b", 111)):
        code, _, err = run(
            capsys,
            "generate",
            "--preset",
            "tiny",
            "--requests",
            3000,
            "--seed",
            seed,
            "--layout",
            "impression",
            "--order",
            "shuffled",
            "--chunk-requests",
            chunk,
            "--shuffle-memory-mb",
            1,
            "--out",
            tmp_path / d,
        )
        assert code == 0, err
    a, b = ((tmp_path / d / "impression" / P.DATA_FILE).read_bytes() for d in "ab")
    assert a == b and len(a) > 100_000
    m = P.read_manifest(tmp_path / "a" / "impression")
    assert m["order"] == "shuffled" and m["shuffle"]["buckets"] > 1  # 1 MiB of a ~3 MB dataset: external
    assert sorted(p.name for p in (tmp_path / "a" / "impression").iterdir()) == [P.MANIFEST, P.DATA_FILE]


def test_generate_help_says_what_shuffled_means(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "every impression of the dataset in one seeded random order" in text
    assert "do not depend on --chunk-requests" in text and "--shuffle-memory-mb" in text


def test_single_run_records_carry_provenance(capsys):
    """storage/presets --json records say where and with what they were made."""
    from harness.cli import main

    for argv in (["storage", "--preset", "tiny", "--requests", "8", "--json"], ["presets", "--json"]):
        assert main(argv) == 0
        prov = json.loads(capsys.readouterr().out)["provenance"]
        assert {"git_sha", "host", "torch_version", "python_version", "created_utc"} <= set(prov), argv
