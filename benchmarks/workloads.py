"""asv benchmarks of workloads/: generator, Parquet I/O, convert, storage ratio (fixed seeds).

- GeneratorThroughput: impressions/s and MB/s (tensor bytes produced) of `generate` per preset,
  on the CPU and on a torch device (CPU generation + one copy; CUDA skipped without a GPU).
  Target: >= 1M impressions/s on one core for early-ranking (run under `taskset -c 0`).
- ParquetIO: write/read time per layout x row order x codec.
- Convert: `workloads.convert.convert` on a generated impression-level file with ~70 MB row groups,
  in fresh subprocesses: its time over pyarrow alone reading that input and writing the same output
  (target <= 2), and its peak RSS above the post-import baseline over one row group in memory
  (target <= 3), beside pyarrow alone's.
- StorageRatio: measured vs predicted uncompressed ratio k(U+I)/(U+kI) (error in %, target < 5).

Every number comes from a real run; a broken build raises (never a made-up number).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import SEED, has_cuda, require

PRESET_NAMES = ["tiny", "retrieval", "early-ranking", "late-ranking", "hstu-ranking"]
TARGET_IMPRESSIONS = 60_000  # per generator run: large enough to amortize per-call costs


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class GeneratorThroughput:
    """Median of REPEAT timed `generate` calls (wall clock and CPU time) after one untimed call of the same size.

    The untimed call matters: the first full-size call grows the heap and first-touches its pages
    (the kernel zeroes them), which a streaming generator pays once, not per batch. Both tracks use
    the same timed runs, so impressions/s and MB/s describe one measurement."""

    params = (PRESET_NAMES, ["cpu", "cuda"])
    param_names = ["preset", "device"]
    timeout = 300
    REPEAT = 7

    def setup(self, preset, device):
        import torch

        from workloads.generator import generate
        from workloads.presets import get_preset

        if device == "cuda" and not has_cuda():
            raise NotImplementedError("no CUDA device")  # asv: skipped
        self.spec = get_preset(preset)
        self.n = max(64, int(TARGET_IMPRESSIONS / self.spec.impressions.mean()))
        self.device = device
        self.generate = generate
        self.torch = torch
        self._result = None
        warm = self._run()  # tables, allocator, first-touched pages
        warm.validate()

    def _run(self):
        b = self.generate(self.spec, self.n, seed=SEED, device=self.device)
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        return b

    def _measure(self):
        if self._result is None:
            times, cpu, b = [], [], None
            for _ in range(self.REPEAT):
                # the previous batch stays alive while the next is made (a double-buffered consumer)
                t0, c0 = time.perf_counter(), time.process_time()
                b = self._run()
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            require(b.num_requests == self.n and b.num_impressions_total > 0, "generator returned a wrong batch")
            self._result = (b.num_impressions_total, b.nbytes(), statistics.median(times), statistics.median(cpu))
        return self._result

    def track_impressions_per_s(self, preset, device):
        imps, _, dt, _ = self._measure()
        return imps / dt

    track_impressions_per_s.unit = "impressions/s"

    def track_impressions_per_cpu_s(self, preset, device):
        """The same runs per second of this process's CPU time (kernel time included): robust to
        other processes sharing the core, which wall-clock numbers are not."""
        imps, _, _, cpu = self._measure()
        return imps / cpu

    track_impressions_per_cpu_s.unit = "impressions/s"

    def track_mb_per_s(self, preset, device):
        _, nbytes, dt, _ = self._measure()
        return nbytes / 1e6 / dt

    track_mb_per_s.unit = "MB/s"


class ParquetIO:
    params = (["request/grouped", "impression/grouped", "impression/shuffled"], ["none", "snappy", "zstd"])
    param_names = ["layout_order", "codec"]
    timeout = 300

    def setup(self, layout_order, codec):
        import pyarrow.parquet as pq

        from workloads.generator import generate
        from workloads.layout import Layout
        from workloads.parquet_io import impression_table, parquet_compression, request_table, shuffle_perm
        from workloads.presets import get_preset

        spec = get_preset("early-ranking")
        b = generate(spec, 400, seed=SEED)
        layout, order = layout_order.split("/")
        if Layout.parse(layout) is Layout.ROO:
            self.table = request_table(b, spec)
        else:
            imp = b.to_impressions()
            if order == "shuffled":
                imp = imp.permute(shuffle_perm(imp.num_impressions_total, SEED))
            self.table = impression_table(imp, spec)
        self.dir = Path(tempfile.mkdtemp(prefix="roo-bench-pq-"))
        self.path = self.dir / "t.parquet"
        self.compression = parquet_compression(codec)
        self.pq = pq
        pq.write_table(self.table, self.path, compression=self.compression)

    def teardown(self, layout_order, codec):
        shutil.rmtree(self.dir, ignore_errors=True)

    def time_write(self, layout_order, codec):
        self.pq.write_table(self.table, self.dir / "w.parquet", compression=self.compression)

    def time_read(self, layout_order, codec):
        t = self.pq.read_table(self.path)
        require(t.num_rows == self.table.num_rows, "read back a different row count")

    def track_file_bytes(self, layout_order, codec):
        return self.path.stat().st_size

    track_file_bytes.unit = "bytes"


# One measured run in a fresh interpreter. The baseline (interpreter + numpy + pyarrow + torch +
# workloads imports, and for pyarrow alone the preloaded output table) is the RSS right before the
# work starts; VmHWM is reset there (clear_refs 5), so `growth` is the peak above that baseline.
_CHILD_SCRIPT = r"""
import json, sys, time
import numpy as np, pyarrow as pa, pyarrow.parquet as pq, torch  # noqa: F401  (the import baseline)
from workloads.convert import convert
from workloads.parquet_io import parquet_compression
src, out, mode, ref = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

pf = pq.ParquetFile(src)
if mode == "arrow":  # pyarrow alone: read every input row group, write the same output file
    req = pq.read_table(ref)
    bounds = [req.num_rows * i // pf.num_row_groups for i in range(pf.num_row_groups + 1)]
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    reset = True
except OSError:
    reset = False
before = status("VmRSS")
t0 = time.perf_counter()
if mode == "convert":
    rows_out = convert(src, out, "request_id").rows_out
else:
    w = pq.ParquetWriter(out, req.schema, compression=parquet_compression("zstd"))
    for i in range(pf.num_row_groups):
        t = pf.read_row_group(i)
        del t
        part = req.slice(bounds[i], bounds[i + 1] - bounds[i])
        w.write_table(part, row_group_size=max(1, part.num_rows))
    w.close()
    rows_out = req.num_rows
seconds = time.perf_counter() - t0
peak = status("VmHWM")
rg_bytes = max(pf.read_row_group(i).nbytes for i in range(pf.num_row_groups))  # after the peak is read
print(json.dumps({"seconds": seconds, "before": before, "peak": peak, "growth": peak - before,
                  "row_group_bytes": rg_bytes, "rows_out": rows_out, "hwm_reset": reset}))
"""


class Convert:
    """convert vs pyarrow alone on an early-ranking impression-level file with ~77 MB row groups.

    Four tracks only: under asv each track repeats setup and the runs (~30 s here).

    Each number is the median of RUNS alternating fresh-process runs (convert, pyarrow alone, ...):
    time ratio (target <= 2) and peak RSS growth above the post-import baseline over one row group
    in memory (Arrow bytes; target <= 3), with pyarrow alone's growth for context. Run it on one
    core: `taskset -c 1 python -m benchmarks.run_workloads --only Convert`."""

    timeout = 900
    param_names = ["preset"]
    params = [["early-ranking"]]
    REQUESTS = 4000
    ROW_GROUP_ROWS = 8192  # ~8.7 KB per impression row in memory: ~70 MB row groups
    RUNS = 3

    def setup(self, preset):
        import pyarrow.parquet as pq

        from workloads.convert import convert
        from workloads.generator import iter_request_batches
        from workloads.parquet_io import write_dataset
        from workloads.presets import get_preset

        self.dir = Path(tempfile.mkdtemp(prefix="roo-bench-conv-"))
        spec = get_preset(preset)
        write_dataset(
            self.dir / "imp",
            iter_request_batches(spec, self.REQUESTS, seed=SEED, chunk_requests=500),
            "impression",
            codec="zstd",
            row_group_size=self.ROW_GROUP_ROWS,
            spec=spec,
            seed=SEED,
        )
        self.src = self.dir / "imp" / "data.parquet"
        self.rows = pq.read_metadata(self.src).num_rows
        r = convert(self.src, self.dir / "ref", "request_id")  # the output pyarrow alone writes
        require(r.rows_out == self.REQUESTS and r.conflicts == 0, "convert lost requests")
        self.ref = self.dir / "ref" / "data.parquet"
        self.runs = 0
        self._runs = None

    def teardown(self, preset):
        shutil.rmtree(self.dir, ignore_errors=True)

    def _child(self, mode: str) -> dict:
        self.runs += 1
        out = self.dir / f"out{self.runs}" if mode == "convert" else self.dir / f"arrow{self.runs}.parquet"
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": str(root)}
        r = subprocess.run(
            [sys.executable, "-c", _CHILD_SCRIPT, str(self.src), str(out), mode, str(self.ref)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(r.stdout.strip().splitlines()[-1])
        require(res["rows_out"] == self.REQUESTS, f"{mode} wrote {res['rows_out']} rows")
        shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
        return res

    def _measure(self) -> dict:
        if self._runs is None:
            runs = {"convert": [], "arrow": []}
            for _ in range(self.RUNS):
                for mode in runs:
                    runs[mode].append(self._child(mode))
            self._runs = runs
        return self._runs

    def _median(self, mode: str, key: str) -> float:
        return statistics.median(r[key] for r in self._measure()[mode])

    def track_convert_rows_per_s(self, preset):
        return self.rows / self._median("convert", "seconds")

    track_convert_rows_per_s.unit = "impression rows/s"

    def track_convert_vs_pyarrow(self, preset):
        """convert time / (pyarrow reads the same input + writes the same output). Target <= 2."""
        return self._median("convert", "seconds") / self._median("arrow", "seconds")

    track_convert_vs_pyarrow.unit = "ratio"

    def track_convert_peak_rss_vs_row_group(self, preset):
        """Peak RSS above the post-import baseline / one input row group in memory. Target <= 3."""
        return self._median("convert", "growth") / self._median("convert", "row_group_bytes")

    track_convert_peak_rss_vs_row_group.unit = "x row group"

    def track_pyarrow_peak_rss_vs_row_group(self, preset):
        """The same for pyarrow alone (context: what reading + writing costs without convert)."""
        return self._median("arrow", "growth") / self._median("arrow", "row_group_bytes")

    track_pyarrow_peak_rss_vs_row_group.unit = "x row group"


class StorageRatio:
    params = [["tiny", "early-ranking", "late-ranking", "hstu-ranking"]]
    param_names = ["preset"]
    timeout = 300

    def setup_cache(self):
        # one measurement per preset shared by the five track_ methods (asv would otherwise repeat
        # the write/read of every format for each of them)
        from workloads.generator import generate
        from workloads.presets import get_preset
        from workloads.storage import measure

        out = {}
        for preset in self.params[0]:
            spec = get_preset(preset)
            n = max(200, int(30_000 / spec.impressions.mean()))
            out[preset] = measure(generate(spec, n, seed=SEED), spec, codecs=("zstd",))
        return out

    def setup(self, cache, preset):
        self.res = cache[preset]

    def track_measured_uncompressed_ratio(self, cache, preset):
        return self.res["measured_uncompressed_ratio"]

    def track_predicted_uncompressed_ratio(self, cache, preset):
        return self.res["predicted_uncompressed_ratio"]

    def track_ratio_error_pct(self, cache, preset):
        return 100 * abs(self.res["ratio_error"])

    track_ratio_error_pct.unit = "%"

    def track_file_ratio_grouped_zstd(self, cache, preset):
        return self.res["file_ratios"]["grouped/zstd"]

    def track_file_ratio_shuffled_zstd(self, cache, preset):
        return self.res["file_ratios"]["shuffled/zstd"]
