"""asv benchmarks of the measurement harness itself (numpy/scipy style: setup, time_*/track_*).

- TimerStats: cost of the statistics and the bootstrap ratio interval reported with every point.
- ResultsStore: one fsync'd append and reading back a 200-record file.
- CliStartup: `roo-bench --help` and `roo-bench bench --help` in a fresh interpreter (interpreter
  start included): the parser is built without torch & co., so this stays well under 0.5 s.
- NvmlPerturbation (GPU only; skipped elsewhere by NotImplementedError in setup): the relative
  step-time difference of a compute-bound matmul chain with the NVML sampler on vs off, in percent
  (target < 1%), measured by harness.nvml_perturbation in one run with alternating blocks.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import SEED, has_cuda, require


class TimerStats:
    params = [20, 200]
    param_names = ["n"]

    def setup(self, n):
        rng = np.random.default_rng(SEED)
        self.a = 10.0 * np.exp(rng.normal(0, 0.05, n))
        self.b = 5.0 * np.exp(rng.normal(0, 0.05, n))

    def time_stats(self, n):
        from harness.timers import Stats

        Stats.from_samples(self.a)

    def time_ratio_interval(self, n):
        from harness.timers import ratio_interval

        ratio_interval(self.a, self.b, seed=0)

    def track_ratio_ci_width(self, n):
        from harness.timers import ratio_interval

        r = ratio_interval(self.a, self.b, seed=0)
        require(r["lo"] <= r["ratio"] <= r["hi"], "ratio outside its interval")
        return r["hi"] - r["lo"]


class ResultsStore:
    def setup(self):
        from harness.results import append_record, make_record

        self.tmp = tempfile.TemporaryDirectory()
        self.rec = make_record("point", {"preset": "tiny", "i": 0}, {"speedup": 1.5}, provenance={"seed": 0})
        self.path = Path(self.tmp.name) / "results.jsonl"
        self.read_path = Path(self.tmp.name) / "read.jsonl"
        for i in range(200):
            append_record(self.read_path, dict(self.rec, config_hash=f"{i:016x}"))

    def teardown(self):
        self.tmp.cleanup()

    def time_append_record(self):
        from harness.results import append_record

        append_record(self.path, self.rec)

    def time_read_results_200(self):
        from harness.results import read_results

        recs, warnings = read_results(self.read_path)
        require(len(recs) == 200 and not warnings, "read back all records")


class CliStartup:
    """Wall time of a `roo-bench` help text, as a user waits for it: a new Python process."""

    timeout = 120

    def setup(self):
        import harness

        # the child runs the code this suite imports, not whatever `harness` is installed
        root = str(Path(harness.__file__).resolve().parents[1])
        path = [root, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        self._help([])  # fails here (not in the timing) when the CLI is broken

    def _help(self, argv):
        r = subprocess.run(
            [sys.executable, "-m", "harness", *argv, "--help"],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        require(r.returncode == 0 and "usage:" in r.stdout, f"roo-bench {argv} --help failed: {r.stderr[-300:]}")

    def time_roo_bench_help(self):
        self._help([])

    def time_bench_help(self):
        self._help(["bench"])


class NvmlPerturbation:
    timeout = 600
    unit = "%"

    def setup(self):
        if not has_cuda():
            raise NotImplementedError("needs a CUDA device with NVML")
        from harness.nvml import nvml_status

        if not nvml_status()["available"]:
            raise NotImplementedError("NVML not available")

    def track_sampler_perturbation_pct(self):
        from harness.nvml_perturbation import measure

        res = measure("cuda", "matmul", steps=50, blocks=6, interval_ms=20.0)
        require(res["nvml_samples"] > 0, "the sampler took samples")
        return 100.0 * res["rel_diff"]

    track_sampler_perturbation_pct.unit = "%"
