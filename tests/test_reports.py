"""`roo-bench report`: every section from the fixtures, self-containment, size, bad input (exact
messages and exit codes), atomic writes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from reports import loader, render

FIX = Path(__file__).resolve().parent / "data" / "reports"
SECTION_IDS = ["summary", "storage", "compute", "sweeps", "communication", "energy", "provenance"]
H100 = "NVIDIA H100 80GB HBM3 (committed results)"


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "report.html"
    rc = main(["report", str(FIX), "--out", str(out), "--title", "Fixture <report>"])
    assert rc == 0
    return out.read_text(encoding="utf-8")


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}" class="report-section">(.*?)</section>', html, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def test_every_section_renders_from_fixtures(full_report):
    html = full_report
    assert [m for m in re.findall(r'<section id="([a-z]+)"', html)] == SECTION_IDS
    for sid in SECTION_IDS:
        body = _section(html, sid)
        assert "<h2>" in body
        assert 'class="empty"' not in body.split("<h2>")[1][:400] or sid == "sweeps", sid
    # Title is escaped (user text), plots are inline SVG.
    assert "<title>Fixture &lt;report&gt;</title>" in html
    assert html.count('<svg class="plot"') >= 10
    summary = _section(html, "summary")
    for preset in ("early-ranking", "hstu-ranking", "tiny", "retrieval"):
        assert f"<h3>{preset}</h3>" in summary
    for metric in (
        "Storage, uncompressed",
        "FLOPs per step",
        "All-to-all bytes per step",
        "Step time (median)",
        "Throughput (impressions / s)",
        "Energy per 1M impressions",
    ):
        assert metric in summary, metric
    # Storage: predicted vs measured ratio with error; grouped vs shuffled finding visible.
    storage = _section(html, "storage")
    assert "predicted 5.99×, measured 5.90× (error -1.5%)" in storage
    assert "grouped by request cost 1.12× the request-level bytes" in storage
    assert "they cost 7.70×" in storage
    compute = _section(html, "compute")
    assert "request→impression expansion" in compute and "ROO only" in compute
    sweeps = _section(html, "sweeps")
    assert "speedup vs impressions per request (k)" in sweeps and "speedup vs history length (L)" in sweeps
    assert "Roofline — " + H100 in sweeps
    assert "Not placed on a roofline: CPU (this run)" in sweeps
    comm = _section(html, "communication")
    assert comm.count("<td>exact</td>") == 14  # 7 comm records x 2 layouts, counted == analytic
    energy = _section(html, "energy")
    assert "NVMLError_LibraryNotFound" in energy and "540 W" in energy


def test_gpu_results_labelled_with_device_and_origin(full_report):
    assert H100 in full_report
    assert "CPU (this run)" in full_report
    assert "cost model (this run)" in full_report


def test_provenance_warns_noisy_and_failed_points(full_report):
    prov = _section(full_report, "provenance")
    assert (
        "points.jsonl:9: tiny [history_length=64, impressions_per_request=4] on CPU (this run): noisy — roo "
        "step IQR/median = 24% &gt; 10%" in prov
    )
    assert (
        "points.jsonl:10: tiny [history_length=512, impressions_per_request=64] on CPU (this run): FAILED "
        "(oom): RuntimeError: DefaultCPUAllocator" in prov
    )
    assert "points.jsonl:11:" in prov and "FAILED (error): RuntimeError: shape mismatch" in prov
    for col in ("9f3e2d1b7a6c", "570.124.06", "torch 2.11.0+cu130", "2025-06-02T08:30:00Z", "gpu-node-7"):
        assert col in prov, col


def test_self_contained_and_small(full_report):
    html = full_report
    refs = re.findall(r'(?:src|href)\s*=\s*["\']?\s*(https?:|//)', html, re.I)
    assert refs == []
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(\s*['\"]?https?:", html, re.I)
    assert "<!DOCTYPE svg" not in html  # the DTD URL of matplotlib's prolog is stripped
    assert len(html.encode()) < 5_000_000


def test_fixture_json_classified_by_keys():
    kinds = {p.name: loader.legacy_kind(p, json.loads(p.read_text())) for p in FIX.glob("*.json")}
    assert kinds == {
        "storage.json": "storage",
        "model-early-ranking.json": "model",
        "comm-w2.json": "comm",
        "comm-w4.json": "comm",
        "calibration.json": "calibration",
        "project.json": "project",
    }
    rs = loader.load([str(FIX)])
    assert rs.warnings == []
    assert {r["device_label"] for r in rs.of("point")} == {"CPU (this run)", H100}


# --- bad input ---------------------------------------------------------------------------------
GOOD = json.loads((FIX / "points.jsonl").read_text().splitlines()[0])


def _run(capsys, *argv):
    rc = main(["report", *map(str, argv)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_no_result_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    rc, out, err = _run(capsys, tmp_path, "--out", tmp_path / "r.html")
    assert (rc, out) == (2, "")
    assert err == f"roo-bench report: error: no result files found in {tmp_path} (looked for *.jsonl and *.json)\n"
    assert not (tmp_path / "r.html").exists()


def test_missing_path(tmp_path, capsys):
    rc, out, err = _run(capsys, tmp_path / "nope.jsonl", "--out", tmp_path / "r.html")
    assert rc == 2
    assert err == (
        f"roo-bench report: error: results path {str(tmp_path / 'nope.jsonl')!r} does not exist; pass "
        "result files (*.jsonl, *.json) or directories holding them\n"
    )


def test_bad_lines_warn_and_show_in_report(tmp_path, capsys):
    f = tmp_path / "mixed.jsonl"
    v2 = dict(GOOD, schema="roo-bench/result/2")
    f.write_text(
        json.dumps(GOOD)
        + "\n"
        + json.dumps({"hello": "world"})
        + "\n"
        + json.dumps(v2)
        + "\n"
        + '{"schema": "roo-bench/result/1", "kind": "poi\n'
    )
    out_html = tmp_path / "r.html"
    rc, out, err = _run(capsys, f, "--out", out_html)
    assert rc == 0
    assert out == f"{out_html}\n"
    assert err.splitlines() == [
        f"roo-bench report: warning: {f}:2: skipped, not a roo-bench result (no `schema` field and no known key set)",
        f"roo-bench report: warning: {f}:3: skipped, incompatible schema version 'roo-bench/result/2' "
        "(this report reads roo-bench/result/1)",
        f"roo-bench report: warning: {f}:4: skipped, truncated or not JSON (column 42: unterminated "
        "string starting at)",
    ]
    html = out_html.read_text()
    assert f"{f}:3: skipped, incompatible schema version &#39;roo-bench/result/2&#39;" in html
    assert f"{f}:4: skipped, truncated or not JSON" in html
    # Sections without data say so plainly instead of disappearing.
    assert "No storage results: run `roo-bench storage --preset NAME --json`" in html
    assert "No cost-model results" in html and "No communication results" in html
    assert "No NVML energy measurements in these results — CPU (this run): NVML unavailable" in html
    assert re.findall(r'<section id="([a-z]+)"', html) == SECTION_IDS


def test_nothing_usable_exits_2_and_keeps_old_report(tmp_path, capsys):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"schema": "roo-bench/result/9", "kind": "point", "metrics": {}}\n{"trunc\n')
    out_html = tmp_path / "r.html"
    out_html.write_text("previous report")
    rc, out, err = _run(capsys, f, "--out", out_html)
    assert (rc, out) == (2, "")
    assert err == (
        f"roo-bench report: error: no usable results in 1 file(s); first problem: {f}:1: skipped, "
        "incompatible schema version 'roo-bench/result/9' (this report reads roo-bench/result/1)\n"
    )
    assert out_html.read_text() == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "r.html"]


def test_foreign_json_file_and_bad_out(tmp_path, capsys):
    (tmp_path / "other.json").write_text(json.dumps({"spec": {}, "counts": {}}))
    (tmp_path / "sweep.meta.json").write_text("{}")  # a known companion: skipped quietly
    rc, _, err = _run(capsys, tmp_path, "--out", tmp_path / "r.html")
    assert rc == 2
    assert err == (
        f"roo-bench report: error: no usable results in 1 file(s); first problem: "
        f"{tmp_path / 'other.json'}: skipped, not a roo-bench result (no `schema` field and no known "
        "key set)\n"
    )
    rc, _, err = _run(capsys, FIX / "storage.json", "--out", tmp_path / "missing" / "r.html")
    assert rc == 2
    assert err == (
        f"roo-bench report: error: --out {str(tmp_path / 'missing' / 'r.html')!r}: directory "
        f"{str(tmp_path / 'missing')!r} does not exist; create it or choose another path\n"
    )
    rc, _, err = _run(capsys, FIX / "storage.json", "--out", tmp_path)
    assert rc == 2
    assert err.startswith(f"roo-bench report: error: --out {str(tmp_path)!r} is a directory;")


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "r.html"
    target.write_text("old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(render.os, "replace", boom)
    with pytest.raises(OSError):
        render.write_atomic(target, "<html>new</html>")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temp file left behind


def test_committed_label_follows_reports_data_path(tmp_path):
    d = tmp_path / "reports" / "data" / "h100"
    d.mkdir(parents=True)
    shutil.copy(FIX / "data" / "h100" / "points.jsonl", d / "points.jsonl")
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(FIX / "data" / "h100" / "points.jsonl", other / "points.jsonl")
    a = loader.load([str(d)])
    b = loader.load([str(other)])
    assert {r["device_label"] for r in a.records} == {H100}
    assert {r["device_label"] for r in b.records} == {"NVIDIA H100 80GB HBM3 (this run)"}


# --- demo (fast paths only: the full demo takes minutes and is what `make demo` runs) -------------
DEMO_STAGES = ["calibrate", "generate", "storage", "model", "sweep", "comm", "comm-project"]


def test_demo_with_every_stage_skipped_still_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out)] + [a for s in DEMO_STAGES for a in ("--skip", s)]
    rc = main(argv)
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert "skipped: generate not available (--skip on the command line)" in lines
    assert "skipped: model (tiny) not available (--skip on the command line)" in lines
    assert lines[-1] == str((out / "report.html").resolve())
    html = (out / "report.html").read_text()
    assert "demo stage sweep: skipped — --skip on the command line" in html
    assert re.findall(r'<section id="([a-z]+)"', html) == SECTION_IDS
    # A re-run into the demo's own directory is allowed (it replaces its own subdirectories).
    assert main(argv) == 0


def test_demo_refuses_foreign_out_dir_and_missing_cuda(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("user data")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"roo-bench demo: error: --out {str(tmp_path)!r} exists and was not made by "
        "`roo-bench demo`; choose a new or empty directory\n"
    )
    assert (tmp_path / "mine.txt").read_text() == "user data"
    import torch

    if not torch.cuda.is_available():
        assert main(["demo", "--out", str(tmp_path / "d"), "--device", "cuda"]) == 2
        assert capsys.readouterr().err == (
            "roo-bench demo: error: --device cuda: no CUDA device is available "
            "(torch.cuda.is_available() is False); use --device cpu\n"
        )
        assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_demo_comm_stage_runs(tmp_path, capsys):
    """The demo's comm stage calls the comm command's library functions (2 gloo ranks on the CPU)."""
    out = tmp_path / "demo"
    keep = ("comm", "comm-project")
    argv = ["demo", "--out", str(out)] + [a for s in DEMO_STAGES if s not in keep for a in ("--skip", s)]
    assert main(argv) == 0, capsys.readouterr().err
    rec = json.loads((out / "results" / "comm-tiny-w2.json").read_text())
    assert rec["kind"] == "comm" and rec["status"] == "ok"
    layouts = rec["metrics"]["layouts"]
    assert layouts["roo"]["counted_bytes_per_step"] < layouts["impression"]["counted_bytes_per_step"]
    # the projection to large W beside the measured W = 2 points, in the report
    proj = json.loads((out / "results" / "comm-project-tiny.json").read_text())
    assert proj["metrics"]["projection"] is True and proj["metrics"]["rows"][-1]["world_size"] == 1024
    comm = _section((out / "report.html").read_text(), "communication")
    assert "tiny, table-wise: projected (8 GPUs a node" in comm
    fig = re.search(r"<figure><figcaption>tiny, table-wise: projected.*?</figure>", comm, re.S)
    assert fig and "<svg" in fig.group(0)
