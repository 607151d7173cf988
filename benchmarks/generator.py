"""asv + CLI: impressions/s of making a batch: generating the request batch, then to_impressions().

Paths (what makes the batch, and where):
  numpy-cpu       workloads.generator.generate (the numpy reference, the CPU default)
  torch-cpu       workloads.generator_torch.generate_on(device="cpu")
  torch-cuda      generate_on(device="cuda"): generated and expanded on the GPU
  numpy-cpu+copy  the numpy batch copied to the GPU, expanded there (the "data_device=cpu" option)

A run times, per preset and request count, `REPEAT` back-to-back iterations of generate +
to_impressions (a fresh seed each, as a data loader makes them), after an untimed warm-up of the
same size: on a GPU between two CUDA events (the steady-state rate of a producer), on the CPU by
perf_counter and process_time. `impressions_per_s` is the impressions made over that time;
`gen_ms` / `expand_ms` split one iteration (medians of separately timed calls). On CUDA the
expansion is checked sync-free (torch.cuda.set_sync_debug_mode("error") over to_impressions) and
the generator's host syncs are counted.

    PYTHONPATH=. python -m benchmarks.generator --device cuda --json
    PYTHONPATH=. taskset -c 0 python -m benchmarks.generator --device cpu --json   # one core

Targets: >= 100M impressions/s on an H100 (torch-cuda, generation + to_impressions); >= 1M/s per
core on the CPU for generation (numpy-cpu, the CPU default). A broken build raises.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

from benchmarks.common import SEED, has_cuda, require

PRESETS = ["early-ranking", "hstu-ranking"]
REQUESTS = [2048, 8192]
PATHS = ["numpy-cpu", "torch-cpu", "torch-cuda", "numpy-cpu+copy"]
REPEAT = 10
ASV_REQUESTS = 2048  # asv: one size, early-ranking-shaped batches


def _maker(path: str):
    """(make(spec, n, seed) -> RequestBatch, device)."""
    from workloads.generator import generate
    from workloads.generator_torch import generate_on

    if path == "numpy-cpu":
        return (lambda spec, n, seed: generate(spec, n, seed=seed)), "cpu"
    if path == "torch-cpu":
        return (lambda spec, n, seed: generate_on(spec, n, seed=seed, device="cpu")), "cpu"
    if path == "torch-cuda":
        return (lambda spec, n, seed: generate_on(spec, n, seed=seed, device="cuda")), "cuda"
    if path == "numpy-cpu+copy":
        return (lambda spec, n, seed: generate(spec, n, seed=seed).to("cuda")), "cuda"
    raise ValueError(f"unknown path {path!r}; allowed: {', '.join(PATHS)}")


class _Clock:
    """Wall time of a region: CUDA events on a GPU (host waits only at the end), perf_counter else."""

    def __init__(self, device: str):
        import torch

        self.cuda = device == "cuda"
        self.torch = torch

    def __enter__(self):
        if self.cuda:
            self.torch.cuda.synchronize()
            self.e0, self.e1 = (self.torch.cuda.Event(enable_timing=True) for _ in range(2))
            self.e0.record()
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.e1.record()
            self.e1.synchronize()
            self.s = self.e0.elapsed_time(self.e1) / 1e3
        else:
            self.s = time.perf_counter() - self.t0
        self.cpu_s = time.process_time() - self.c0


def _sync_report(make, spec, n: int) -> dict:
    """On CUDA: the generator's host syncs (counted) and whether to_impressions has none."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            b = make(spec, n, SEED + 999)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        b.to_impressions()
        free = True
    except RuntimeError:
        free = False
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return {"generation_syncs": syncs, "to_impressions_sync_free": free}


def measure(path: str, preset: str, n: int, repeat: int = REPEAT) -> dict:
    """One path x preset x request count: throughput and the per-stage split (see the docstring)."""
    from workloads.presets import get_preset

    make, device = _maker(path)
    spec = get_preset(preset)
    warm = make(spec, n, SEED)  # tables, allocator pools, Triton compilation
    warm.validate()
    imp = warm.to_impressions()
    imp.validate()
    require(imp.num_impressions_total == warm.num_impressions_total, "to_impressions lost rows")
    del warm, imp
    imps = 0
    with _Clock(device) as loop:
        for i in range(repeat):
            b = make(spec, n, SEED + i)
            imps += b.num_impressions_total
            b.to_impressions()
    gen, exp = [], []
    for i in range(min(repeat, 5)):
        with _Clock(device) as c:
            b = make(spec, n, SEED + i)
        gen.append(c.s)
        with _Clock(device) as c:
            b.to_impressions()
        exp.append(c.s)
    out = {
        "path": path,
        "preset": preset,
        "requests": n,
        "impressions_per_batch": imps / repeat,
        "impressions_per_s": imps / loop.s,
        "impressions_per_cpu_s": imps / loop.cpu_s if loop.cpu_s > 0 else None,
        "ms_per_batch": loop.s / repeat * 1e3,
        "gen_ms": statistics.median(gen) * 1e3,
        "expand_ms": statistics.median(exp) * 1e3,
        "gen_impressions_per_s": imps / repeat / statistics.median(gen),
    }
    if device == "cuda":
        out.update(_sync_report(make, spec, n))
    return out


class GeneratorImpressions:
    """asv: impressions/s of generate + to_impressions at ASV_REQUESTS requests (CUDA skipped without a GPU)."""

    params = (PRESETS, ["numpy-cpu", "torch-cpu", "torch-cuda"])
    param_names = ["preset", "path"]
    timeout = 600

    def setup(self, preset, path):
        if path.endswith("cuda") and not has_cuda():
            raise NotImplementedError("no CUDA device")  # asv: skipped
        n = ASV_REQUESTS if preset != "hstu-ranking" or path.endswith("cuda") else ASV_REQUESTS // 8
        self.result = measure(path, preset, n, repeat=3)

    def track_impressions_per_s(self, preset, path):
        return self.result["impressions_per_s"]

    track_impressions_per_s.unit = "impressions/s"

    def track_gen_impressions_per_s(self, preset, path):
        return self.result["gen_impressions_per_s"]

    track_gen_impressions_per_s.unit = "impressions/s"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m benchmarks.generator", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="cpu: numpy-cpu and torch-cpu; cuda: the GPU paths"
    )
    ap.add_argument("--paths", nargs="+", choices=PATHS, help="override the device's paths")
    ap.add_argument("--presets", nargs="+", default=PRESETS)
    ap.add_argument("--requests", nargs="+", type=int, default=REQUESTS)
    ap.add_argument("--repeat", type=int, default=REPEAT)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU (default 1: per core)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress on stderr)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    paths = args.paths or (["numpy-cpu", "torch-cpu"] if args.device == "cpu" else ["torch-cuda", "numpy-cpu+copy"])
    rows = []
    for preset in args.presets:
        for n in args.requests:
            for path in paths:
                r = measure(path, preset, n, args.repeat)
                rows.append(r)
                print(
                    f"{path:15s} {preset:14s} {n:6d} req {r['impressions_per_batch']:9.0f} imp: "
                    f"{r['impressions_per_s'] / 1e6:8.2f} M imp/s "
                    f"(gen {r['gen_ms']:.2f} ms, expand {r['expand_ms']:.2f} ms)",
                    file=sys.stderr,
                    flush=True,
                )
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    out = {"benchmark": "generator", "device": args.device, "device_name": device_name, "results": rows}
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
