"""Peak memory and wall time of `roo-bench analyze` on a large foreign log, beside pyarrow reading
the same log once (`pyarrow.parquet.read_table`), each in a fresh subprocess.

The log is workloads.foreign_log's (string keys, `u_*` columns, a list history, rows shuffled
through a 64Ki-row buffer, so convert takes its external-sort path), written row group by row
group to about the size asked. Peak RSS is the child's own maximum resident set (getrusage of a
wrapper process that runs only that child); `import_baseline` is a child that only imports what
analyze imports, so the growth above it is what the data costs.

    python -m benchmarks.analyze_memory --gb 2 [--dir DIR] [--keep] [--json]

asv: `AnalyzeMemory` tracks the same numbers on a small log (about 20 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import SEED, require

ROOT = Path(__file__).resolve().parents[1]
# Runs argv[1:] as a child and prints its exit code, wall time and peak RSS (this wrapper has no
# other child, so RUSAGE_CHILDREN's maximum is that child's).
_WRAP = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"rc": r.returncode, "wall_s": wall, "peak_rss_bytes": rss, "stderr": r.stderr[-2000:]}))
"""
_ARROW = "import sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1]); assert t.num_rows > 0"
_IMPORTS = (
    "import harness.analyze, harness.analyze_stages, workloads.fit_log, roo_ref.cost, roo_ref.models, reports.render"
)


def write_log(path: Path, target_bytes: int, seed: int = SEED, progress: bool = False):
    """A foreign log of about `target_bytes` on disk (bytes per request from a small sample)."""
    from workloads.foreign_log import ForeignLogConfig, write_foreign_log

    sample = path.with_name(path.name + ".sample")
    n0 = 4000
    write_foreign_log(sample, ForeignLogConfig(requests=n0, seed=seed, row_group_rows=1 << 16))
    per_request = sample.stat().st_size / n0
    sample.unlink()
    requests = max(1000, int(target_bytes / per_request))
    cfg = ForeignLogConfig(
        requests=requests,
        seed=seed,
        conflicts=0,
        shuffle_window=1 << 16,
        row_group_rows=1 << 16,
        chunk_requests=16384,
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=requests, unit="req", desc="write log", file=sys.stderr)
    try:
        return write_foreign_log(path, cfg, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


def _child(cmd: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", _WRAP, *cmd], env=env, capture_output=True, text=True, check=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    require(res["rc"] == 0, f"{cmd[:4]} exited {res['rc']}: {res['stderr']}")
    return res


def measure(log: Path, work: Path) -> dict:
    """analyze, pyarrow alone and the import baseline on `log`, each in a fresh process."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(log)
    arrow = _child([sys.executable, "-c", _ARROW, str(log)])
    base = _child([sys.executable, "-c", _IMPORTS])
    out = work / "analyze-out"
    cmd = [sys.executable, "-m", "harness", "analyze", str(log), "--request-key", "req_key", "--out", str(out)]
    ana = _child([*cmd, "--json"])
    rec = json.loads((out / "analyze.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {
        "log_bytes": log.stat().st_size,
        "log_rows": meta.num_rows,
        "log_row_groups": meta.num_row_groups,
        "log_uncompressed_bytes": sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)),
        "requests": rec["metrics"]["log"]["requests"],
        "analyze": {k: ana[k] for k in ("wall_s", "peak_rss_bytes")} | {"stages_s": rec["metrics"]["seconds"]},
        "arrow_read_table": {k: arrow[k] for k in ("wall_s", "peak_rss_bytes")},
        "import_baseline": {k: base[k] for k in ("wall_s", "peak_rss_bytes")},
        "storage_ratio": rec["metrics"]["storage"]["measured_uncompressed_ratio"],
        "external_sort": (rec["metrics"]["convert"] or {}).get("external_sort"),
    }


class AnalyzeMemory:
    """analyze on a ~20 MB foreign log: peak RSS and wall time, and pyarrow reading it once."""

    timeout = 600
    TARGET = 20 << 20

    def setup(self):
        self.dir = Path(tempfile.mkdtemp(prefix="roo-bench-analyze-"))
        write_log(self.dir / "log.parquet", self.TARGET)
        self.res = measure(self.dir / "log.parquet", self.dir)

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def track_analyze_peak_rss_mb(self):
        return self.res["analyze"]["peak_rss_bytes"] / 1e6

    track_analyze_peak_rss_mb.unit = "MB"

    def track_arrow_read_peak_rss_mb(self):
        return self.res["arrow_read_table"]["peak_rss_bytes"] / 1e6

    track_arrow_read_peak_rss_mb.unit = "MB"

    def track_analyze_wall_s(self):
        return self.res["analyze"]["wall_s"]

    track_analyze_wall_s.unit = "s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.analyze_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, default=2.0, help="log size on disk in GB (default 2)")
    p.add_argument("--dir", default=None, help="work directory (default: a temp dir, removed)")
    p.add_argument("--keep", action="store_true", help="keep the log")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="roo-bench-analyze-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.parquet"
    try:
        if not log.exists():
            write_log(log, int(args.gb * 1e9), progress=True)
        res = measure(log, work)
    finally:
        if not args.keep:
            log.unlink(missing_ok=True)
            if not args.dir:
                shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    gb = 1e9
    print(f"log: {res['log_bytes'] / gb:.2f} GB on disk, {res['log_uncompressed_bytes'] / gb:.2f} GB uncompressed, ")
    print(f"     {res['log_rows']} rows, {res['requests']} requests, {res['log_row_groups']} row groups")
    for name in ("analyze", "arrow_read_table", "import_baseline"):
        r = res[name]
        print(f"{name:18s} peak RSS {r['peak_rss_bytes'] / gb:6.2f} GB   wall {r['wall_s']:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
