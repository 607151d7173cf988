"""The asv suite's CI gate and tooling: benchmarks/ci_check.sh fails exactly on benchmarks that
raised (on a deliberately broken suite in a temp git repo), benchmarks/seed_history.sh measures each
commit's own code and skips commits without a suite, the model benchmarks raise on a broken build,
and `python -m benchmarks.gpu --json` runs every track_ method without asv."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Every test here runs asv or a benchmark runner in a subprocess.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _asv() -> str:
    pytest.importorskip("asv")  # not on the GPU machine
    exe = Path(sys.executable).with_name("asv")
    return str(exe) if exe.exists() else shutil.which("asv") or pytest.skip("asv executable not found")


def _git(repo: Path, *args: str) -> str:
    env = dict(
        os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t"
    )
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


SAMPLE_OK = """
class Ok:
    params = [[1, 2]]
    param_names = ["n"]

    def time_ok(self, n):
        sum(range(100))

    def track_val(self, n):
        return n * 1.5


class Skipped:
    def setup(self):
        raise NotImplementedError("no gpu")

    def teardown(self):
        pass

    def track_x(self):
        return 1.0
"""

SAMPLE_BROKEN = """

class BrokenParam:
    params = [[1, 2, 3]]
    param_names = ["n"]

    def track_x(self, n):
        if n == 2:
            raise RuntimeError("broken for n=2")
        return float(n)


class BrokenCache:
    def setup_cache(self):
        raise RuntimeError("cache broke")

    def track_y(self, c):
        return 1.0


def time_broken():
    raise ValueError("broken build")
"""


def _suite_repo(tmp_path: Path, sample: str) -> Path:
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    shutil.copy(ROOT / "asv.conf.json", repo / "asv.conf.json")
    for f in ("ci_check.sh", "seed_history.sh", "__init__.py", "common.py"):
        if (ROOT / "benchmarks" / f).exists():
            shutil.copy(ROOT / "benchmarks" / f, repo / "benchmarks" / f)
    (repo / "benchmarks" / "sample.py").write_text(sample)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "suite")
    return repo


def _run_ci(repo: Path, tmp_path: Path, **env):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    full = dict(os.environ, ASV=_asv(), PYTHON=sys.executable, HOME=str(home), **env)
    return subprocess.run(
        ["bash", str(repo / "benchmarks" / "ci_check.sh")],
        cwd=repo,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _failed_lines(stderr: str) -> list[str]:
    part = stderr.split("== FAILED", 1)[1] if "== FAILED" in stderr else ""
    return [ln.strip() for ln in part.splitlines()[1:] if ln.strip() and not ln.strip().startswith("log:")]


def test_ci_check_fails_exactly_on_the_broken_benchmarks(tmp_path):
    repo = _suite_repo(tmp_path, SAMPLE_OK + SAMPLE_BROKEN)
    r = _run_ci(repo, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert _failed_lines(r.stderr) == [
        "sample.BrokenCache.track_y failed",
        "sample.BrokenParam.track_x failed for params [('2',)]",
        "sample.time_broken failed",
        "asv run exited with status 2",
    ], r.stderr
    # ok and skipped benchmarks are recorded, not reported: Ok 2+2 values, BrokenParam 2, 1 skipped
    assert "== 6 benchmarks recorded: 6 values, 1 skipped" in r.stdout, r.stdout


def test_ci_check_passes_a_clean_suite_with_skips(tmp_path):
    repo = _suite_repo(tmp_path, SAMPLE_OK)
    r = _run_ci(repo, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "== 3 benchmarks recorded: 4 values, 1 skipped" in r.stdout
    assert "== asv CI check passed" in r.stdout
    assert not (repo / ".asv").exists()  # quick-run results never reach the history


def test_ci_check_fails_on_a_module_that_does_not_import(tmp_path):
    repo = _suite_repo(tmp_path, SAMPLE_OK)
    (repo / "benchmarks" / "bad_import.py").write_text("import not_a_module_xyz\n\ndef track_z():\n    return 1.0\n")
    r = _run_ci(repo, tmp_path)
    assert r.returncode != 0
    assert "not_a_module_xyz" in r.stdout + r.stderr


def test_ci_check_only_filter(tmp_path):
    repo = _suite_repo(tmp_path, SAMPLE_OK + SAMPLE_BROKEN)
    r = _run_ci(repo, tmp_path, ASV_CI_BENCH=r"^sample\.Ok\.")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "== 2 benchmarks recorded: 4 values, 0 skipped" in r.stdout


def test_seed_history_measures_each_commits_code_and_skips_commits_without_a_suite(tmp_path):
    asv = _asv()
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "projcode.py").write_text("VALUE = 1\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "before the suite")
    c1 = _git(repo, "rev-parse", "HEAD").strip()
    suite = _suite_repo(tmp_path / "s", "import projcode\n\n\ndef track_value():\n    return float(projcode.VALUE)\n")
    shutil.copytree(suite / "benchmarks", repo / "benchmarks")
    shutil.copy(suite / "asv.conf.json", repo / "asv.conf.json")
    (repo / "projcode.py").write_text("VALUE = 2\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "suite")
    c2 = _git(repo, "rev-parse", "HEAD").strip()
    (repo / "projcode.py").write_text("VALUE = 3\n")
    _git(repo, "commit", "-qam", "value 3")
    c3 = _git(repo, "rev-parse", "HEAD").strip()
    (repo / "projcode.py").write_text("VALUE = 99\n")  # uncommitted: must not be what is measured
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, ASV=asv, HOME=str(home), ASV_MACHINE="seedtest")
    r = subprocess.run(
        ["bash", "benchmarks/seed_history.sh", "-n", "3"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"== {c1[:8]}: no benchmarks/ in this commit (older than the suite): skipped" in r.stdout
    assert "== ran 2 commit(s) (0 with failed benchmarks), skipped 1 without a suite" in r.stdout
    got = {}
    for f in (repo / ".asv" / "results" / "seedtest").glob("*.json"):
        if f.name == "machine.json":
            continue
        d = json.loads(f.read_text())
        got[d["commit_hash"]] = d["results"]["sample.track_value"][0]
    assert got == {c2: [2.0], c3: [3.0]}  # asv stores a list of values
    assert (repo / ".asv" / "html" / "index.html").exists()
    assert _git(repo, "worktree", "list").count("\n") == 1  # temporary worktrees removed


def test_model_benchmarks_raise_on_a_broken_build(monkeypatch):
    pytest.importorskip("torch")
    from benchmarks import models
    from roo_ref.models.dlrm import DLRM

    orig = DLRM.forward

    def wrong_loss(self, batch, layout):
        out = dict(orig(self, batch, layout))
        if layout == "roo":
            out["loss"] = out["loss"] * 1.001
        return out

    monkeypatch.setattr(DLRM, "forward", wrong_loss)
    with pytest.raises(RuntimeError, match=r"ROO loss .* != impression loss"):
        models.TinyStep().setup("roo", "dlrm")

    def wrong_grad(self, batch, layout):
        out = dict(orig(self, batch, layout))
        if layout == "roo":  # same loss value, a different gradient of the last (dense) parameter
            p = list(self.parameters())[-1]
            extra = 1e-2 * p.float().sum()
            out["loss"] = out["loss"] + (extra - extra.detach())
        return out

    monkeypatch.setattr(DLRM, "forward", wrong_grad)
    with pytest.raises(RuntimeError, match=r"gradient of .* differs between layouts"):
        models.TinySpeedup().setup("dlrm")


def test_model_benchmarks_measure_a_working_build():
    pytest.importorskip("torch")
    from benchmarks import models

    b = models.TinySpeedup()
    b.rounds, b.steps = 1, 3
    b.setup("hstu")
    v = b.track_roo_speedup("hstu")
    assert v > 0 and v == v
    s = models.TinyStep()
    s.setup("impression", "dlrm")
    s.time_step("impression", "dlrm")


def _gpu_runner(tmp_path, **env):
    full = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--json"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_gpu_runner_smoke_on_cpu(tmp_path):
    pytest.importorskip("torch")
    r = _gpu_runner(tmp_path, ROO_BENCH_GPU_DEVICE="cpu")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # exactly one JSON object on stdout
    assert out["errors"] == 0
    rows = {(x["benchmark"], tuple(sorted(x["params"].items()))): x for x in out["results"]}
    assert rows[("GpuTraining.track_roo_speedup", (("point", "tiny"),))]["value"] > 0
    for layout in ("impression", "roo"):
        key = (("layout", layout), ("point", "tiny"))
        assert rows[("GpuTrainingLayout.track_step_ms", key)]["value"] > 0
        assert "not a CUDA device" in rows[("GpuEnergy.track_j_per_1m_impressions", key)]["skipped"]
    assert rows[("HstuAttention.track_fwdbwd_tflops", (("L", 32), ("provider", "torch")))]["value"] > 0
    assert out["training_points"]["tiny"]["metrics"]["layouts"]["roo"]["timer"] == "perf_counter"
    assert "[benchmarks.gpu" in r.stderr  # progress goes to stderr


def test_gpu_runner_without_cuda_skips_everything(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    r = _gpu_runner(tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["errors"] == 0 and out["measured"] == 0 and out["skipped"] == len(out["results"]) > 0
    assert all(re.search("CUDA", x["skipped"]) for x in out["results"])
