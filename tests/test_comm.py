"""The distributed all-to-all benchmark on 2 and 4 gloo ranks (CPU), launched by torchrun.

Asserts, on the tiny preset (table-wise, through `roo-bench comm --json`) and a reduced early-ranking
(table- and row-wise, torchrun directly), both layouts: the bytes
counted at all_to_all_single equal roo_ref.cost.comm's exact bytes (recomputed here from the same
global batch), and the ROO exchange expanded to impressions equals the impression-level exchange
bit for bit; at W = 4 too, and with an HSTU history sequence (hstu-ranking, --max-history) whose
per-event rows the ROO exchange delivers once per request. Bad input: one line, exit 2, no rank left running."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.results import read_results
from roo_ref.cost import comm as cc
from workloads.generator import generate
from workloads.presets import get_preset, resolve_spec
from workloads.records import flat_view

# The module's fixture launches torchrun with 2 gloo ranks per layout and sharding.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MARK = "31.337"  # an --init-timeout no one else uses: finds our ranks in /proc
SMALL = ["--embedding-dim", "16", "--row-cap", "1000", "--steps", "3", "--warmup", "1"]
TINY = ["--preset", "tiny", "--requests", "8", *SMALL, "--init-timeout", MARK]
EARLY = [
    "--preset",
    "early-ranking",
    "--requests",
    "3",
    "--embedding-dim",
    "8",
    "--row-cap",
    "512",
    "--steps",
    "2",
    "--warmup",
    "1",
    "--init-timeout",
    MARK,
]
HSTU_SET = ("impressions.value=3", "history.length.max=24")
HSTU = [
    "--preset",
    "hstu-ranking",
    "--requests",
    "2",
    *(a for o in HSTU_SET for a in ("--set", o)),
    "--max-history",
    "10",
    "--embedding-dim",
    "8",
    "--row-cap",
    "700",
    "--steps",
    "2",
    "--warmup",
    "1",
    "--init-timeout",
    MARK,
]


def _flat(rec: dict, kind: str) -> dict:
    """The flat object a `--json` record wraps, after checking it is a record of `kind`."""
    assert rec["schema"] == "roo-bench/result/1" and rec["kind"] == kind, rec.get("kind")
    return flat_view(rec)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _ranks_alive() -> list[str]:
    """Command lines of live rank processes (harness.commands.comm) started by these tests."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "harness.commands.comm" in cmd and MARK in cmd:
            out.append(cmd)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """All launches at once (they mostly wait on imports and rendezvous): finished results by name."""
    tmp = tmp_path_factory.mktemp("comm")
    cli = [sys.executable, "-m", "harness", "comm", "--nproc", "2", "--device", "cpu"]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "0",
        "-m",
        "harness.commands.comm",
    ]
    torchrun4 = [*torchrun[:5], "4", *torchrun[6:]]
    cmds = {
        "tiny_cli": [*cli, *TINY, "--sharding", "table", "--json", "--out", str(tmp / "out.jsonl")],
        "early": [*torchrun, *EARLY, "--sharding", "table", "row", "--record-file", str(tmp / "early.json")],
        "early_w4": [*torchrun4, *EARLY, "--sharding", "table", "row", "--record-file", str(tmp / "early4.json")],
        "hstu_w4": [*torchrun4, *HSTU, "--sharding", "table", "row", "--record-file", str(tmp / "hstu4.json")],
        "mpi": [*cli, *TINY, "--backend", "mpi"],
        "timeout": [*cli, *TINY, "--timeout", "1"],
    }
    procs = {
        k: subprocess.Popen(c, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k, c in cmds.items()
    }
    res = {}
    for k, p in procs.items():
        out, err = p.communicate(timeout=300)
        res[k] = (p.returncode, out, err)
    res["tmp"] = tmp
    return res


def _check_record(
    rec: dict, preset: str, requests: int, dim: int, row_cap: int, world: int = 2, history: int = 0, sets=()
):
    assert rec["schema"] == "roo-bench/result/1" and rec["kind"] == "comm" and rec["status"] == "ok"
    c, m = rec["config"], rec["metrics"]
    assert c["world_size"] == world and c["backend"] == "gloo" and c["device"] == "cpu"
    assert c["model"]["max_history"] == history
    spec = resolve_spec(preset, None, list(sets)) if sets else get_preset(preset)
    batch = generate(spec, requests * world, seed=c["seed"])
    for layout in cc.LAYOUTS:
        L = m["layouts"][layout]
        exact = cc.exact_a2a_bytes(
            batch,
            layout,
            world,
            sharding=c["model"]["sharding"],
            embedding_dim=dim,
            emb_bytes=4,
            row_cap=row_cap,
            spec=spec,
            history_cap=history,
        )
        assert (exact.seq_bytes > 0) == (history > 0)
        assert L["counted"] == exact.handed()  # every component, bytes handed to the collective
        assert L["counted_cross"] == exact.cross()  # and the part addressed to the other rank
        assert L["counted_bytes_per_step"] == L["analytic_bytes_per_step"] == exact.total
        assert L["cross_bytes_per_step"] == exact.cross_total
        assert L["bytes_match"] and L["bytes_same_every_step"]
        # lengths, ids, embeddings, grads on each rank: the history rides in the same four
        assert L["collective_calls_per_step"] == cc.COLLECTIVES_PER_STEP * world == 4 * world
        assert L["step_ms"]["n"] == c["steps"] and L["step_ms_median"] > 0
        assert L["impressions_per_step"] == int(batch.num_impressions.sum())
        assert L["requests_per_step"] == world * requests
    imp, roo = m["layouts"]["impression"], m["layouts"]["roo"]
    assert m["saving"] == pytest.approx(1 - roo["counted_bytes_per_step"] / imp["counted_bytes_per_step"])
    assert m["saving"] > 0.2  # k > 1 impressions per request: user bytes shrink
    v = m["verify"]
    assert v["embeddings_equal"] and v["embeddings_max_abs_diff"] == 0.0  # bit for bit
    assert v["grad_rows_equal"] and v["grads_close"]
    assert rec["provenance"]["torch_version"] == torch.__version__ and rec["provenance"]["seed"] == c["seed"]


def test_cli_json_tiny_table_wise(runs):
    rc, out, err = runs["tiny_cli"]
    assert rc == 0, err
    s = _flat(json.loads(out), "comm")  # exactly one JSON object on stdout
    assert s["world_size"] == 2 and s["sharding"] == "table" and s["backend"] == "gloo"
    for layout in ("impression", "roo"):
        L = s["layouts"][layout]
        for k in ("counted_bytes_per_step", "analytic_bytes_per_step", "step_ms_median", "bus_bw_gbps"):
            assert k in L
        assert L["counted_bytes_per_step"] == L["analytic_bytes_per_step"]
    assert s["bytes_match"] and s["embeddings_equal"]
    imp, roo = s["layouts"]["impression"], s["layouts"]["roo"]
    assert s["saving"] == pytest.approx(1 - roo["counted_bytes_per_step"] / imp["counted_bytes_per_step"])
    records, warnings = read_results(runs["tmp"] / "out.jsonl")
    assert warnings == [] and len(records) == 1
    assert records[0]["config_hash"] == s["config_hash"]
    _check_record(records[0], "tiny", 8, 16, 1000)


def test_torchrun_early_ranking_both_shardings(runs):
    rc, out, err = runs["early"]
    assert rc == 0, err
    recs = json.loads((runs["tmp"] / "early.json").read_text())
    assert [r["config"]["model"]["sharding"] for r in recs] == ["table", "row"]
    for rec in recs:
        _check_record(rec, "early-ranking", 3, 8, 512)
    assert "bytes match: True" in out  # rank 0's summary line


@pytest.mark.parametrize("name", ["early_w4", "hstu_w4"])
def test_torchrun_four_ranks_both_shardings(runs, name):
    rc, out, err = runs[name]
    assert rc == 0, err
    recs = json.loads((runs["tmp"] / f"{name.split('_')[0]}4.json").read_text())
    assert [r["config"]["model"]["sharding"] for r in recs] == ["table", "row"]
    for rec in recs:
        if name == "early_w4":
            _check_record(rec, "early-ranking", 3, 8, 512, world=4)
        else:
            _check_record(rec, "hstu-ranking", 2, 8, 700, world=4, history=10, sets=HSTU_SET)
            layouts = rec["metrics"]["layouts"]
            # k = 3 impressions per request: the impression layout sends every history event 3 times
            seq = {lay: layouts[lay]["analytic"]["seq_bytes"] for lay in cc.LAYOUTS}
            assert seq["impression"] > 2 * seq["roo"] > 0


def test_backend_that_fails_to_initialize(runs):
    rc, out, err = runs["mpi"]
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    # whichever rank failed first: both fail alike
    assert re.match(r"roo-bench comm: error: backend 'mpi' failed to initialize on rank [01]: \S", lines[0])


def test_timeout_kills_every_rank(runs):
    rc, out, err = runs["timeout"]
    assert rc == 2
    assert err.strip() == (
        "roo-bench comm: error: the run exceeded --timeout=1 s; every rank was killed "
        "(raise --timeout, or lower --steps/--requests)"
    )


def test_no_rank_left_running(runs):
    deadline = time.time() + 10
    while _ranks_alive() and time.time() < deadline:
        time.sleep(0.5)
    assert _ranks_alive() == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nproc", "0"], "--nproc=0 must be >= 1 (ranks to launch)"),
        (["--nproc", "-3"], "--nproc=-3 must be >= 1 (ranks to launch)"),
        (["--sharding", "column"], "--sharding='column'; allowed: table, row"),
        (["--embedding-dim", "0"], "--embedding-dim=0 must be >= 1"),
        (["--requests", "0"], "--requests=0 must be >= 1 (requests per rank per step)"),
        (
            ["--preset", "nope"],
            "unknown preset 'nope'; choose one of: tiny, retrieval, early-ranking, "
            "late-ranking, hstu-ranking (see `roo-bench presets`)",
        ),
    ],
)
def test_bad_arguments(argv, message, capsys):
    assert main(["comm", *argv]) == 2
    err = capsys.readouterr().err
    assert err == f"roo-bench comm: error: {message}\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize("argv", [["--device", "cuda"], ["--backend", "nccl"]])
def test_nccl_on_a_cpu_only_machine(argv, capsys):
    assert main(["comm", "--nproc", "2", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "NCCL needs CUDA GPUs, but none is visible on this machine" in err[0]
    assert err[0].endswith("use --device cpu (gloo)")


def test_more_ranks_than_gpus(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert main(["comm", "--nproc", "4", "--device", "cuda"]) == 2
    assert capsys.readouterr().err == (
        "roo-bench comm: error: --nproc=4 ranks but only 2 CUDA devices visible; use --nproc <= 2\n"
    )


def test_nccl_backend_needs_cuda_device(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert main(["comm", "--nproc", "2", "--device", "cpu", "--backend", "nccl"]) == 2
    assert capsys.readouterr().err == (
        "roo-bench comm: error: --backend=nccl needs --device cuda (NCCL runs on GPUs); use gloo on CPU\n"
    )
