"""asv benchmarks of the measurement harness itself (numpy/scipy style: setup, time_*/track_*).

- TimerStats: cost of the statistics and the bootstrap ratio interval reported with every point.
- ResultsStore: one fsync'd append and reading back a 200-record file.
- NvmlPerturbation (GPU only; skipped elsewhere by NotImplementedError in setup): the relative
  step-time difference of a compute-bound matmul chain with the NVML sampler on vs off, in percent
  (target < 1%), measured by harness.nvml_perturbation in one run with alternating blocks.
"""

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
