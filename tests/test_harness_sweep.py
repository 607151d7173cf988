"""`roo-bench sweep`: bad input (one line, exit 2, nothing written), failures recorded as oom/error
and skipped on resume, resume after `kill -9` of the whole sweep process group with no lost or
duplicated point, one writer per output directory, and no point temp directory left behind.
Points are stand-ins (tests/harness_fixtures/points.py) run in subprocesses."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.results import read_results
from harness.sweep import load_sweep
from workloads.records import flat_view

ROOT = Path(__file__).resolve().parents[1]
SLOW = "tests.harness_fixtures.points:slow_point"


def _sweep_json(stdout: str) -> dict:
    """`sweep --json` prints one record of kind sweep; its flat view holds the point counts."""
    rec = json.loads(stdout)
    assert rec["kind"] == "sweep", rec.get("kind")
    return flat_view(rec)


def _write(tmp_path, body, name="s.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


def _sweep_cli(*args, timeout=300, tmpdir=None, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if tmpdir is not None:  # where the points' temp directories go
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        [sys.executable, "-m", "harness", "sweep", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def _bad(capsys, args, expected):
    rc = main(["sweep", *map(str, args)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1, err
    assert err.startswith("roo-bench sweep: error: ") and expected in err, err


GOOD = f"""
[sweep]
point = "{SLOW}"
[base]
preset = "tiny"
[base.spec]
impressions.kind = "fixed"
[grid.spec]
impressions.value = [1, 2]
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[grid\n", "is not valid TOML"),
        ("[extra]\n[grid]\nseed=[1]\n", "unknown table(s) ['extra']; allowed: ['sweep', 'base', 'grid']"),
        ("[sweep]\ncolour = 1\n[grid]\nseed=[1]\n", "[sweep] unknown key(s) ['colour']"),
        ("[base]\nstepz = 3\n[grid]\nseed=[1]\n", "unknown key(s) ['stepz']"),
        ("[base]\npreset='tiny'\n", "no [grid] table"),
        ("[grid]\n", "[grid] is empty"),
        ("[grid.spec]\nimpressions.value = []\n", "grid.spec.impressions.value is empty"),
        ("[grid]\nseed = 3\n", "grid.seed = 3 must be a list of values"),
        ("[grid.spec]\nimpressions.kind = ['nope']\n", "impressions.kind='nope' is not a distribution"),
        ("[grid]\ndtype = ['fp32', 'fp8']\n", "dtype='fp8'; allowed: fp32, bf16"),
        ("[grid]\nsteps = [20, 20]\n", "are the same configuration"),
        ("[sweep]\npoint = 'no_such_mod:f'\n[grid]\nseed=[1]\n", "point='no_such_mod:f' cannot be imported"),
        (
            "[base]\npreset='tiny'\n[grid.model]\nembedding_dimm = [4]\n",
            "--set embedding_dimm: unknown model key",
        ),
        (
            "[grid.spec]\nimpressions = [{ value = 2 }]\n",
            'point {"spec.impressions": {"value": 2}}: unknown key(s) [\'value\']',
        ),
    ],
)
def test_bad_sweep_files_exit_2_and_write_nothing(tmp_path, capsys, body, expected):
    f = _write(tmp_path, body)
    out = tmp_path / "out"
    _bad(capsys, [f, "--out", out], expected)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_device_exit_2(tmp_path, capsys):
    f = _write(tmp_path, GOOD)
    out = tmp_path / "out"
    _bad(capsys, [f, "--out", out, "--device", "cuda"], "device 'cuda' is not available here")
    _bad(capsys, [f, "--out", out, "--device", "tpu"], "allowed: cpu, cuda, cuda:N")
    assert not out.exists()
    _bad(capsys, [tmp_path / "missing.toml", "--out", out], "does not exist")
    assert not out.exists()


def test_out_dir_of_another_sweep(tmp_path, capsys):
    f = _write(tmp_path, GOOD)
    out = tmp_path / "out"
    r = _sweep_cli(f, "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # the same sweep again without --resume: refused (it would duplicate points)
    _bad(capsys, [f, "--out", out], "already holds 2 result(s) of this sweep; pass --resume")
    g = _write(tmp_path, GOOD.replace("[1, 2]", "[3]"), "other.toml")
    _bad(capsys, [g, "--out", out], "holds results of another sweep")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written


@pytest.mark.slow
def test_failures_recorded_and_skipped_on_resume(tmp_path):
    f = _write(
        tmp_path,
        f"""
        [sweep]
        point = "{SLOW}"
        [base]
        preset = "tiny"
        [grid.model]
        behave = ["none", "oom", "oom_msg", "error", "sigkill", "exit"]
        """,
    )
    out = tmp_path / "out"
    r = _sweep_cli(f, "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    counts = _sweep_json(r.stdout)
    assert counts == {
        **counts,
        "points_total": 6,
        "points_done": 6,
        "points_skipped": 0,
        "points_failed": 5,
        "points_ok": 1,
        "points_oom": 2,
    }
    recs, warnings = read_results(out)
    assert warnings == [] and len(recs) == 6
    by = {r["config"]["axes"]["model.behave"]: r for r in recs}
    assert by["none"]["status"] == "ok" and by["none"]["error"] is None
    assert by["oom"]["status"] == "oom"
    assert by["oom"]["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (stand-in)"
    assert by["oom_msg"]["status"] == "oom"
    assert by["oom_msg"]["error"].startswith("RuntimeError: CUDA out of memory.")
    assert by["error"]["status"] == "error" and by["error"]["error"] == "ValueError: stand-in failure"
    assert by["sigkill"]["status"] == "error"
    assert by["sigkill"]["error"].startswith("the point's process was killed by signal SIGKILL")
    assert by["exit"]["status"] == "error"
    assert by["exit"]["error"].startswith("the point's process exited with status 3")
    meta = json.loads((out / "sweep.meta.json").read_text())
    assert {p["config_hash"] for p in meta["points"]} == {r["config_hash"] for r in recs}
    for r in recs:  # failure records still carry the config and provenance of the point
        assert r["config"]["preset"] == "tiny" and "seed" in r["provenance"]
    r2 = _sweep_cli(f, "--out", out, "--resume", "--json")
    assert r2.returncode == 0, r2.stderr
    c2 = _sweep_json(r2.stdout)
    assert (c2["points_skipped"], c2["points_done"], c2["points_failed"]) == (6, 0, 0)
    assert read_results(out)[0] == recs


@pytest.mark.slow
def test_point_timeout(tmp_path):
    f = _write(
        tmp_path,
        f"""
        [sweep]
        point = "{SLOW}"
        [base]
        preset = "tiny"
        [grid.model]
        behave = ["hang"]
        """,
    )
    out = tmp_path / "out"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    t0 = time.monotonic()
    r = _sweep_cli(f, "--out", out, "--timeout", "4", "--json", tmpdir=tmp)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 120
    (rec,), _ = read_results(out)
    assert rec["status"] == "error"
    assert rec["error"] == "timeout: the point ran past timeout_s=4 and was killed"
    assert list(tmp.iterdir()) == []  # the killed point's temp directory went with it


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path):
    n = 8
    f = _write(
        tmp_path,
        f"""
        [sweep]
        point = "{SLOW}"
        [base]
        preset = "tiny"
        model_overrides = ["sleep=0.4"]
        [grid]
        seed = {list(range(n))}
        """,
    )
    out = tmp_path / "out"
    res = out / "results.jsonl"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp))
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "sweep", str(f), "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if res.exists() and res.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its running point, mid-sweep
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before, warnings = read_results(out)
    assert warnings == [] and 3 <= len(before) < n
    # what a kill during the write itself leaves: a truncated last line
    with open(res, "a") as fh:
        fh.write('{"schema": "roo-bench/result/1", "kind": "poi')
    r = _sweep_cli(f, "--out", out, "--resume", "--json", tmpdir=tmp)
    assert r.returncode == 0, r.stderr
    assert list(tmp.iterdir()) == []  # the killed point's temp directory is removed by the resume
    c = _sweep_json(r.stdout)
    assert (c["points_total"], c["points_skipped"], c["points_done"]) == (n, len(before), n - len(before))
    assert "line skipped" in r.stderr  # the fragment was reported (file:line), not fatal
    recs, warnings = read_results(out)
    assert len(warnings) == 1 and warnings[0].startswith(f"{res}:{len(before) + 1}: malformed JSON")
    hashes = [x["config_hash"] for x in recs]
    expected = [p.config_hash for p in load_sweep(f).points]
    assert len(hashes) == len(set(hashes)) == n  # no duplicate
    assert set(hashes) == set(expected)  # no lost point
    assert all(x["status"] == "ok" for x in recs)
    assert recs[: len(before)] == before


def _locked_message(out, pid) -> str:
    return (
        f"roo-bench sweep: error: {out} is being written by another roo-bench sweep (pid {pid}); "
        "wait for it or choose another --out\n"
    )


@pytest.mark.slow
def test_second_writer_is_refused_while_the_first_runs(tmp_path):
    # Each point sleeps long enough that the second writer starts, is refused and exits while the
    # first still runs, even on a loaded 2-core machine (its start-up imports take seconds there).
    n = 3
    f = _write(
        tmp_path,
        f"""
        [sweep]
        point = "{SLOW}"
        [base]
        preset = "tiny"
        model_overrides = ["sleep=3.0"]
        [grid]
        seed = {list(range(n))}
        """,
    )
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first = subprocess.Popen(
        [sys.executable, "-m", "harness", "sweep", str(f), "--out", str(out), "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        res = out / "results.jsonl"
        while time.monotonic() < deadline and not (res.exists() and res.read_text().count("\n") >= 1):
            time.sleep(0.05)
        assert first.poll() is None, "the first sweep ended before the second started"
        second = _sweep_cli(f, "--out", out, "--resume", "--json")  # e.g. a resume started too early
        assert first.poll() is None, "the first sweep ended while the second ran; the test proves nothing"
    finally:
        stdout, _ = first.communicate(timeout=300)
    assert (second.returncode, second.stdout) == (2, "")
    assert second.stderr == _locked_message(out, first.pid)
    assert first.returncode == 0 and _sweep_json(stdout)["points_done"] == n
    recs, warnings = read_results(out)
    hashes = [r["config_hash"] for r in recs]
    assert warnings == [] and len(hashes) == len(set(hashes)) == n  # every point once
    assert len({r["metrics"]["pid"] for r in recs}) == n  # each run by its own child
    assert (out / ".lock").read_text() == ""  # released: no pid left behind


@pytest.mark.slow
def test_locked_out_dir_is_refused_and_untouched(tmp_path, capsys):
    import fcntl

    f = _write(tmp_path, GOOD)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # another writer, as far as the sweep can tell
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"{os.getpid()}\n")
        held.flush()
        rc = main(["sweep", str(f), "--out", str(out)])
        assert (out / ".lock").read_text() == f"{os.getpid()}\n"
    assert rc == 2
    assert capsys.readouterr().err == _locked_message(out, os.getpid())
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # no meta, no results
    # once the holder is gone, the same command runs
    r = _sweep_cli(f, "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    assert _sweep_json(r.stdout)["points_done"] == 2


def test_shipped_sweep_files_parse():
    d = ROOT / "harness" / "sweeps"
    sizes = {p.stem: len(load_sweep(p, device="cpu").points) for p in sorted(d.glob("*.toml"))}
    assert {"ci-tiny", "h100-hstu", "h100-early", "all-presets"} <= set(sizes)
    assert sizes["ci-tiny"] == 4 and sizes["all-presets"] == 5
    assert sizes["dlrm-presets"] + sizes["hstu-preset"] == sizes["all-presets"]  # the split covers it
    assert sizes["h100-hstu"] == 7 * 5 and sizes["h100-early"] == 7 * 5
    # the production campaign: every preset but tiny, eager and CUDA-graph; the k x L grids
    # k in {1, 4, 16, 64}, L in {256, 1024, 4096}
    assert sizes["h100-production"] == 4 * 2 and sizes["h100-kxl-hstu"] == 4 * 3
    assert sizes["h100-kxl-early"] == 4 * 3 * 2  # eager and replayed
    for name in ("h100-production", "h100-kxl-early", "h100-kxl-hstu"):
        sw = load_sweep(d / f"{name}.toml", device="cpu")
        assert all(p.config.profile and p.config.steps >= 10 for p in sw.points) and sw.timeout_s <= 300


@pytest.mark.slow
def test_ci_tiny_sweep_runs_on_cpu(tmp_path):
    t0 = time.monotonic()
    r = _sweep_cli(ROOT / "harness" / "sweeps" / "ci-tiny.toml", "--out", tmp_path / "o", "--json")
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    c = _sweep_json(r.stdout)
    assert (c["points_total"], c["points_done"], c["points_failed"]) == (4, 4, 0)
    recs, warnings = read_results(tmp_path / "o")
    assert warnings == [] and all(x["status"] == "ok" and x["metrics"]["speedup"] > 0 for x in recs)
    assert elapsed < 120


@pytest.mark.slow  # over a second on a shared CPU
def test_a_fitted_spec_runs_as_a_sweep_point(tmp_path, capsys):
    """`spec = FILE` (relative to the sweep file) with `model = NAME`: the point runs the file's
    workload on that model; its identity is the spec's content; a spec naming no model needs one."""
    from harness.run_point import run_point
    from tests.harness_fixtures.fitted import fitted_spec

    spec_file = fitted_spec(tmp_path)
    base = 'spec = "fitted.toml"\ndevice = "cpu"\nwarmup = 1\nsteps = 2\nthreads = 1\ncount_flops = false\n'
    f = _write(
        tmp_path, f'[base]\n{base}model = "tiny"\nspec_overrides = ["requests_per_batch=6"]\n[grid]\nseed = [0, 1]\n'
    )
    sw = load_sweep(f)
    assert len(sw.points) == 2
    pc = sw.points[0].config
    assert pc.preset == "tiny" and pc.workload["name"] == "fitted"
    rec = run_point(pc)
    assert rec["status"] == "ok" and rec["config"]["spec"]["name"] == "fitted"
    assert rec["metrics"]["layouts"]["roo"]["requests_per_step"] == 6
    assert rec["config"]["model"]["embedding_dim"] == 16  # the tiny model preset's
    # the same settings in another folder with an edited copy of the spec: another point identity
    other = tmp_path / "other"
    other.mkdir()
    text = spec_file.read_text().replace("seed = 0", "seed = 5")
    assert text != spec_file.read_text()
    (other / "fitted.toml").write_text(text)
    g = _write(other, f.read_text())
    assert load_sweep(g).points[0].config_hash != sw.points[0].config_hash
    # a grid over spec files is an axis like any other
    h = _write(
        tmp_path, f'[base]\n{base}model = "tiny"\n[grid]\nspec = ["fitted.toml", "other/fitted.toml"]\n', "h.toml"
    )
    assert [p.axes for p in load_sweep(h).points] == [{"spec": "fitted.toml"}, {"spec": "other/fitted.toml"}]
    # mistakes: one line, nothing written
    out = tmp_path / "out"
    _bad(
        capsys,
        [_write(tmp_path, f"[base]\n{base}[grid]\nseed = [0]\n", "m.toml"), "--out", out],
        "(workload 'fitted') names no model preset; add model = \"NAME\", one of: tiny,",
    )
    _bad(
        capsys,
        [_write(tmp_path, f'[base]\n{base}preset = "tiny"\n[grid]\nseed = [0]\n', "p.toml"), "--out", out],
        "give either preset or spec = 'fitted.toml', not both",
    )
    _bad(
        capsys,
        [_write(tmp_path, '[base]\nspec = "nope.toml"\nmodel = "tiny"\n[grid]\nseed = [0]\n', "n.toml"), "--out", out],
        "nope.toml does not exist",
    )
    _bad(
        capsys,
        [_write(tmp_path, f'[base]\n{base}model = "gpt"\n[grid]\nseed = [0]\n', "g.toml"), "--out", out],
        "unknown model preset 'gpt'",
    )
    assert not out.exists()
