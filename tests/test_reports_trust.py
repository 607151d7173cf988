"""A report a user can trust: each defect found by reading the demo report as a new user would, on
the fixtures of tests/data/reports (make_fixtures.py) or on files laid out here.

- `report` reads the `--json` output of every command (bench, profile and validate shown where they
  belong, the others listed);
- the CPU roofline uses the CPU calibration of the same run ('cpu' vs 'cpu (x86_64)');
- no point is dropped from a roofline without a note (a point's bytes may sit in its `cost` block);
- rooflines use the calibration of the same campaign, never another campaign's or a superseded one;
- communication rows say their sharding;
- the storage headline names the bytes it compares, in memory and in files, and shows both;
- the summary quotes a run of the preset itself, not a point of a sweep;
- the first screen answers "what does ROO save here" in one chart, each bar with its source.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from reports import loader
from reports.loader import ResultSet
from reports.render import render_html
from reports.sections import rooflines
from reports.sections.common import layouts, preset_of, same_device
from workloads.records import KINDS, make_record

FIX = Path(__file__).resolve().parent / "data" / "reports"
H100 = "NVIDIA H100 80GB HBM3 (committed results)"


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("trust") / "report.html"
    assert main(["report", str(FIX), "--out", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}" class="report-section">(.*?)</section>', html, re.S)
    assert m, sid
    return m.group(1)


def _text(fragment: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed (SVG dropped)."""
    t = re.sub(r"<svg.*?</svg>", " ", fragment, flags=re.S)
    t = re.sub(r"<[^>]+>", " ", t)
    return re.sub(r"\s+", " ", t.replace("&amp;", "&").replace("&#39;", "'").replace("&gt;", ">")).strip()


def _rooflines(html: str) -> dict[str, str]:
    """{figure caption: its svg} of the sweeps section's rooflines."""
    sw = _section(html, "sweeps")
    figs = re.findall(r"<figure><figcaption>(Roofline — .*?)</figcaption>(<svg.*?</svg>)\s*</figure>", sw, re.S)
    return {_text(c): s for c, s in figs}


# --- every command's --json -------------------------------------------------------------------------
def test_every_kind_of_record_loads(tmp_path):
    f = tmp_path / "all.jsonl"
    point = json.loads((FIX / "points.jsonl").read_text().splitlines()[0])  # a point needs its layouts
    recs = [
        point if k == "point" else make_record(k, {"n": i}, {"x": i + 1}, provenance={"seed": i})
        for i, k in enumerate(KINDS)
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in recs) + json.dumps({**recs[0], "kind": "nope"}) + "\n")
    rs = loader.load([str(f)])
    assert [r["kind"] for r in rs.records] == list(KINDS)
    assert rs.warnings == [f"{f}:{len(KINDS) + 1}: skipped, unknown record kind 'nope' (known: {', '.join(KINDS)})"]
    page = render_html(rs, "all kinds")  # every section renders with a record of every kind
    others = sorted(set(KINDS) - set(loader.SECTION_KINDS))
    assert f"Records without a section of their own, listed above with their files: {others[0]}×1" in page


def test_bench_profile_validate_show_where_they_belong(html):
    summary = _text(_section(html, "summary"))
    # bench: per-layout median step with its IQR, the speedup with its interval
    assert re.search(
        r"Step time \(median\) CPU \(this run\); the preset at its own shape \(bench\) "
        r"— 2\.24 ms — 1\.91 ms — 1\.17× — IQR 0\.082 ms / 0\.11 ms; speedup CI \[1\.11, 1\.23\]",
        summary,
    ), summary
    # validate: analytic (predicted) next to counted (measured), per preset
    assert (
        "FLOPs per step, validate (reduced sizes, 4 requests, 38 impressions) CPU (this run); validate "
        "91.2 MFLOP 91.2 MFLOP 20.1 MFLOP 20.1 MFLOP 4.53× 4.53× +0.0%" in summary
    )
    compute = _text(_section(html, "compute"))
    # profile: host wall vs GPU busy, launches, syncs, aten ops; a host-bound step is marked
    assert (
        "early-ranking NVIDIA H100 80GB HBM3 (this run) impression 22.66 ms 7 ms 30.9% (host-bound) 340 4 1,299 5"
        in (compute)
    )
    assert "ROO 9.1 ms 5.2 ms 57.1% 352 4 1,342 5" in compute
    assert "Analytic FLOPs vs FlopCounterMode: max relative error exact; 1 components compared, 0 differ." in compute
    assert "tiny impression 62.1 kB 62.1 kB exact" in compute
    prov = _text(_section(html, "provenance"))
    assert "Records without a section of their own, listed above with their files: fit×1." in prov
    assert "tests/data/reports/cli/fit.json fit×1" in prov


# --- rooflines -----------------------------------------------------------------------------------------
def test_cpu_roofline_uses_the_calibration_of_the_same_run(html):
    assert same_device("cpu", "cpu (x86_64)") and same_device("CPU (arm)", "cpu")
    assert not same_device("NVIDIA H100 80GB HBM3", "NVIDIA H200")
    figs = _rooflines(html)
    (cap, svg) = next((c, s) for c, s in figs.items() if c.startswith("Roofline — CPU (this run)"))
    # the calibration names the CPU 'cpu', the point 'cpu (x86_64)': the same device, the same session
    assert cap.startswith("Roofline — CPU (this run) (roofs: cpu-run/results/calibration.json)")
    assert "roofs: the calibration " in cap and "(the same session: host and commit)" in cap
    assert "calibrated fp32: 0.187 TFLOP/s, 0.0314 TB/s" in svg


def test_h100_roofline_places_every_preset(html):
    figs = _rooflines(html)
    cap, svg = next((c, s) for c, s in figs.items() if c.startswith(f"Roofline — {H100}"))
    # retrieval and late-ranking carry their bytes per step only in the cost model's `cost` block
    for preset in ("early-ranking", "hstu-ranking", "retrieval", "late-ranking"):
        assert f"<!-- {preset} -->" in svg, preset  # the legend entry of its marker
    assert "not placed" not in cap


def test_no_layout_leaves_a_roofline_without_a_note(html):
    rs = loader.load([str(FIX)])
    ok = [p for p in rs.of("point") if p["status"] == "ok"]
    models = {preset_of(m): m for m in rs.of("model")}
    placed, _, _, dropped = rooflines._placements(ok, models)
    assert placed and dropped  # the fixtures hold both kinds
    assert len(placed) + sum(dropped.values()) == sum(len(layouts(p)) for p in ok)
    sweeps = _text(_section(html, "sweeps"))
    for (name, why), n in dropped.items():
        assert f"{name}: {n} layout(s), {why}" in sweeps


def _calibration(device: str, flops: float, prov: dict | None = None) -> dict:
    m = {"device_name": device, "matmul_dtype": "bfloat16", "matmul_flops": flops, "copy_bandwidth": 3e12}
    return make_record("calibration", {"device": "cuda"}, m, provenance=prov or {})


def _point_with_bytes(prov: dict) -> dict:
    """A fixture GPU point (its bytes per step recorded), with the provenance `prov`."""
    rec = json.loads((FIX / "data" / "h100" / "presets.jsonl").read_text().splitlines()[0])
    return {**rec, "provenance": prov}


def _roofs_of(paths: list[Path]) -> list[dict]:
    rs: ResultSet = loader.load([str(p) for p in paths])
    return rooflines.build(rs, [p for p in rs.of("point") if p["status"] == "ok"])


@pytest.mark.slow  # over a second on a shared CPU
def test_rooflines_use_the_calibration_of_the_same_campaign(tmp_path, html):
    gpu = "NVIDIA H100 80GB HBM3"
    run = {"device_name": gpu, "host": "node-1", "git_sha": "abc", "created_utc": "2025-06-02T08:00:00+00:00"}
    for name, flops in (("campaign1", 700e12), ("campaign2", 600e12)):
        (tmp_path / name / "sweep").mkdir(parents=True)
        (tmp_path / name / "calibration.json").write_text(json.dumps(_calibration(gpu, flops)))
        prov = {**run, "git_sha": name}
        (tmp_path / name / "sweep" / "results.jsonl").write_text(json.dumps(_point_with_bytes(prov)) + "\n")
    out = _roofs_of([tmp_path / "campaign1", tmp_path / "campaign2"])
    notes = {o["title"]: (o["note"], o["svg"]) for o in out}
    for name, flops in (("campaign1", "700"), ("campaign2", "600")):
        note, svg = notes[f"Roofline — {gpu} (this run) (roofs: {tmp_path.name}/{name}/calibration.json)"]
        assert f"{tmp_path / name / 'calibration.json'} (its folder holds the results)" in note
        assert f"calibrated bf16: {flops} TFLOP/s" in svg
    # a later campaign without a calibration of its own gets the datasheet, never another's roofs
    (tmp_path / "campaign3").mkdir()
    (tmp_path / "campaign3" / "results.jsonl").write_text(json.dumps(_point_with_bytes(run)) + "\n")
    out = _roofs_of([tmp_path / "campaign1", tmp_path / "campaign3"])
    (lone,) = [o for o in out if o["title"].endswith("(roofs: datasheet)")]
    assert "roofs: the datasheet's (no calibration of this campaign among the inputs)" in lone["note"]
    assert "datasheet bf16" in lone["svg"] and "calibrated" not in lone["svg"]
    # the committed-style fixtures: the H100 points use their folder's calibration, not the other campaign's
    cap, svg = next((c, s) for c, s in _rooflines(html).items() if c.startswith(f"Roofline — {H100}"))
    assert "(roofs: data/h100/calibration.jsonl)" in cap
    assert "calibrated bf16: 777 TFLOP/s" in svg and "512 TFLOP/s" not in svg


def test_a_superseded_calibration_is_never_used(tmp_path):
    gpu = "NVIDIA H100 80GB HBM3"
    run = {"device_name": gpu, "host": "node-1", "git_sha": "abc", "created_utc": "2025-06-02T08:00:00+00:00"}
    camp = tmp_path / "campaign"
    (camp / "old").mkdir(parents=True)
    (camp / "old" / "SUPERSEDED.md").write_text("re-measured in ../new\n")
    # the same session, and newer: it would win, but its folder is marked superseded
    newer = {**run, "created_utc": "2025-06-02T09:00:00+00:00"}
    (camp / "old" / "calibration.json").write_text(json.dumps(_calibration(gpu, 100e12, newer)))
    (camp / "calibration.json").write_text(json.dumps(_calibration(gpu, 700e12, run)))
    (camp / "results.jsonl").write_text(json.dumps(_point_with_bytes(run)) + "\n")
    (out,) = _roofs_of([camp])
    assert out["title"].endswith(f"(roofs: {tmp_path.name}/{camp.name}/calibration.json)")
    assert "calibrated bf16: 700 TFLOP/s" in out["svg"] and "100 TFLOP/s" not in out["svg"]


# --- communication, storage, summary ---------------------------------------------------------------------
def test_communication_rows_say_their_sharding(html):
    summary = _text(_section(html, "summary"))
    labels = re.findall(r"All-to-all bytes per step \((W=\d+, \w+, [\w -]+)\)", summary)
    assert "W=2, nccl, row-wise" in labels and "W=2, nccl, table-wise" in labels
    assert labels and all(x.endswith("-wise") for x in labels), labels
    comm = _text(_section(html, "communication"))
    assert "nccl 2 row-wise impression 39.3 MB" in comm and "nccl 2 table-wise impression 39.3 MB" in comm
    assert "gloo 2 table-wise ROO" in comm


def test_storage_headline_names_both_bytes(html):
    storage = _text(_section(html, "storage"))
    assert (
        "in memory (decoded Arrow columns, what the analytic ratio k(U+I)/(U+kI) models): predicted 5.99×, "
        "measured 5.90× (error -1.5%)" in storage
    )
    assert "Parquet files without a codec" in storage
    assert "impression rows grouped 3.35×, impression rows shuffled 3.42×" in storage
    summary = _text(_section(html, "summary"))
    assert "Storage, uncompressed in memory (Arrow, bytes / impression) CPU (this run) 3.71 kB 3.65 kB" in summary
    assert "5.99× 5.90×" in summary
    assert re.search(
        r"Storage, uncompressed Parquet files \(no codec, bytes / impression\) CPU \(this run\) "
        r"— \S+ kB — \S+ B — 3\.35×",
        summary,
    )


def test_summary_quotes_the_preset_itself_not_a_sweep_point(html):
    summary = _section(html, "summary")
    early = _text(summary.split("<h3>early-ranking</h3>", 1)[1].split("<h3>", 1)[0])
    # the preset's own run (12.05 ms / 3.729 ms), not the k=1 point of its sweep (2.462 ms ROO)
    assert f"Step time (median) {H100}; the preset at its own shape (point)" in early
    assert "12.05 ms" in early and "3.729 ms" in early and "2.462 ms" not in early
    assert "impressions_per_request=" not in _text(summary)
    hstu = _text(summary.split("<h3>hstu-ranking</h3>", 1)[1].split("<h3>", 1)[0])
    assert "no run of the preset at its own shape on this device; its 4 sweep point(s) are under Sweeps" in hstu


# --- the first screen ------------------------------------------------------------------------------------
def test_first_screen_chart_answers_what_roo_saves(html):
    summary = _section(html, "summary")
    head = summary.split("</h2>", 1)[1].split("<h3>", 1)[0]
    assert 'id="what-roo-saves"' in head and head.count('<svg class="plot"') == 1  # before any table
    svg = re.search(r"<svg.*?</svg>", head, re.S).group(0)
    for label in ("Stored bytes per impression", "FLOPs per step", "Measured step time", "Energy per 1M impressions"):
        assert label in svg, label
    text = _text(head)
    assert text.startswith(
        "On early-ranking, ROO needs 1.12× fewer stored bytes, 4.74× fewer FLOPs, 3.23× shorter training steps, "
        "3.23× less energy per impression than impression-level training."
    )
    # each quantity names its source: the record and the device that measured it
    assert (
        "Stored bytes per impression 264 B 235 B 1.12× 10.7% Parquet zstd files, impression rows grouped by request"
        in text
    )
    assert (
        "Measured step time (same impressions) 12.05 ms 3.729 ms 3.23× 69.0% median step, point — "
        f"{H100}, data/h100/presets.jsonl" in text
    )
    assert f"NVML over the timed steps — {H100}, data/h100/presets.jsonl" in text


def test_first_screen_says_what_is_missing(tmp_path):
    shutil.copy(FIX / "storage.json", tmp_path / "storage.json")
    page = render_html(loader.load([str(tmp_path)]), "storage only")
    head = _text(page.split('id="what-roo-saves"', 1)[1].split("<h3>", 1)[0])
    assert "not measured here: FLOPs, training steps, energy per impression." in head
    assert "no run of early-ranking at its own shape: `roo-bench bench --preset early-ranking --json`" in head
    assert "no FLOP count of early-ranking: `roo-bench model --preset early-ranking --json`" in head
    assert "no run of early-ranking measured energy (NVML needs a GPU)" in head


# --- single-run records carry provenance ------------------------------------------------------------------
@pytest.mark.slow  # runs calibrate and validate (seconds on a CPU)
def test_single_run_records_carry_provenance(tmp_path, capsys):
    import socket

    runs = {
        "model": ["model", "--preset", "tiny", "--json"],
        "project": ["project", "--preset", "tiny", "--requests-per-day", "1e9", "--gpus", "8", "--json"],
        "calibration": ["calibrate", "--json"],
        "validate": ["validate", "--preset", "tiny", "--no-storage", "--seed", "4", "--json"],
    }
    for kind, argv in runs.items():
        assert main(argv) == 0
        rec = json.loads(capsys.readouterr().out)
        assert rec["kind"] == kind
        prov = rec["provenance"]
        assert prov["host"] == socket.gethostname() and prov["created_utc"] and prov["device_name"].startswith("cpu")
        assert "git_sha" in prov and prov["roo_bench_version"], kind
        (tmp_path / f"{kind}.jsonl").write_text(json.dumps(rec) + "\n")
    assert json.loads((tmp_path / "validate.jsonl").read_text())["provenance"]["seed"] == 4
    page = render_html(loader.load([str(tmp_path)]), "single runs")
    prov_rows = _text(_section(page, "provenance"))
    for kind in runs:
        assert re.search(rf"{kind}\.jsonl {kind}×1 \S.*? {re.escape(socket.gethostname())} ", prov_rows), kind


@pytest.mark.slow  # the demo's calibrate and sweep stages (a CPU sweep of 4 tiny points)
def test_demo_cpu_roofline_uses_the_demos_calibration(tmp_path, capsys):
    out = tmp_path / "demo"
    skip = [a for s in ("generate", "storage", "model", "comm") for a in ("--skip", s)]
    assert main(["demo", "--out", str(out), *skip]) == 0, capsys.readouterr().err
    cal = json.loads((out / "results" / "calibration.json").read_text())
    assert cal["provenance"]["host"] and "git_sha" in cal["provenance"]  # the demo's records carry provenance
    figs = _rooflines((out / "report.html").read_text(encoding="utf-8"))
    cap, svg = next((c, s) for c, s in figs.items() if c.startswith("Roofline — CPU (this run)"))
    assert f"roofs: the calibration {out / 'results' / 'calibration.json'} (the same session: host and commit)" in cap
    assert "calibrated fp32:" in svg and "not placed" not in cap


def test_projection_header_reads_its_inputs_from_the_record(tmp_path, capsys):
    """`project --json` keeps requests/day, GPUs and device in config; the summary's head reads them."""
    assert main(["project", "--preset", "tiny", "--requests-per-day", "1e9", "--gpus", "16", "--json"]) == 0
    f = tmp_path / "project.json"
    f.write_text(capsys.readouterr().out)
    page = render_html(loader.load([str(f)]), "projection")
    assert "Projection: 1 G requests/day on 16 × NVIDIA H100" in _text(_section(page, "summary"))
    assert "on ? × ?" not in page
