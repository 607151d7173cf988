"""asv + CLI: impressions/s of making a batch: generating the request batch, and to_impressions().

Paths (what makes the batch, and where):
  numpy-cpu       workloads.generator.generate (the numpy reference, the CPU default)
  torch-cpu       workloads.generator_torch.generate_on(device="cpu") (backend "torch")
  triton-cuda     generate_on(device="cuda", backend="triton"): counter-based draws, three kernels
  torch-cuda      generate_on(device="cuda", backend="torch"): torch.Generator ops on the GPU
  numpy-cpu+copy  the numpy batch copied to the GPU, expanded there (the "data_device=cpu" option)

Per path, preset and request count, after an untimed warm-up of the same size: `REPEAT`
back-to-back generations (a fresh seed each, as a data loader makes them), then `REPEAT`
back-to-back to_impressions() of one batch, each loop timed as a whole (CUDA events on a GPU: the
steady-state rate of a producer; perf_counter and process_time on the CPU). The two are reported
apart, because their floors differ: generation writes the request batch (bytes per impression
shrink as impressions share a request), expansion writes the impression layout, which copies each
request's history into every one of its impressions by design, so at long histories its bytes cap
it far below generation. Each is quoted with its bytes per impression, the bytes it moves per
second, and the rate the device's copy bandwidth (COPY_BYTES_PER_S, read + write) would allow.
Expansion is skipped where the impression layout would not fit (EXPAND_MAX_BYTES); the CPU paths
run only the sizes up to CPU_MAX_IMPRESSIONS. On CUDA the expansion is checked sync-free and the
generator's host syncs are counted.

    PYTHONPATH=. python -m benchmarks.generator --device cuda --json   # all paths, presets, sizes
    PYTHONPATH=. taskset -c 0 python -m benchmarks.generator --device cpu --json   # one core

Targets: >= 100M impressions/s on an H100 for generation (triton-cuda); expansion against its byte
floor; >= 1M/s per core on the CPU for generation (numpy-cpu, the CPU default). A broken build raises.
"""

from __future__ import annotations

import sys
import time
import warnings

from benchmarks.common import SEED, has_cuda, require

PRESETS = ["early-ranking", "hstu-ranking"]
# per preset: request counts up to what a data loader making big chunks would (hstu-ranking's
# histories are ~3k events: 32,768 requests are ~2.4 GB of request batch)
REQUESTS = {"early-ranking": [2048, 8192, 65536, 262144], "hstu-ranking": [512, 2048, 8192, 32768]}
DEFAULT_REQUESTS = [2048, 8192]
CPU_PATHS = ["numpy-cpu", "torch-cpu"]
CUDA_PATHS = ["triton-cuda", "torch-cuda", "numpy-cpu+copy"]
PATHS = CPU_PATHS + CUDA_PATHS
REPEAT = 10
ASV_REQUESTS = 2048  # asv: one size, early-ranking-shaped batches
COPY_BYTES_PER_S = 2.97e12  # H100 device-to-device copy, bytes read + written per second
EXPAND_MAX_BYTES = 24e9  # the impression layout (plus its request batch) must fit beside the loop
CPU_MAX_IMPRESSIONS = 100_000  # host-made batches beyond this take seconds each: not timed
ALL_CPU_MAX_IMPRESSIONS = 30_000  # --device all: the host paths at their smallest sizes, 3 repeats


def _maker(path: str):
    """(make(spec, n, seed) -> RequestBatch, device)."""
    from workloads.generator import generate
    from workloads.generator_torch import generate_on

    if path == "numpy-cpu":
        return (lambda spec, n, seed: generate(spec, n, seed=seed)), "cpu"
    if path == "torch-cpu":
        return (lambda spec, n, seed: generate_on(spec, n, seed=seed, device="cpu", backend="torch")), "cpu"
    if path == "triton-cuda":
        return (lambda spec, n, seed: generate_on(spec, n, seed=seed, device="cuda", backend="triton")), "cuda"
    if path == "torch-cuda":
        return (lambda spec, n, seed: generate_on(spec, n, seed=seed, device="cuda", backend="torch")), "cuda"
    if path == "numpy-cpu+copy":
        return (lambda spec, n, seed: generate(spec, n, seed=seed).to("cuda")), "cuda"
    raise ValueError(f"unknown path {path!r}; allowed: {', '.join(PATHS)}")


def _host_made(path: str) -> bool:
    return path.startswith(("numpy", "torch-cpu"))


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


def _sync_report(make, spec, n: int, expand: bool) -> dict:
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
    if not expand:
        return {"generation_syncs": syncs, "to_impressions_sync_free": None}
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


def layout_bytes(b) -> tuple[int, int]:
    """(bytes of the request batch, bytes its impression layout will have), from sizes alone."""
    n = b.num_impressions_total
    user_exp, hist_exp = b.expanded_totals()
    per_row = 8 + 8 + b.user_dense.shape[1] * 4 + b.user_sparse_lengths.shape[0] * 8 + 8  # id, ts, dense, lengths
    nro = sum(t.numel() * t.element_size() for t in (b.item_id, b.item_sparse_lengths, b.item_sparse_values))
    nro += sum(t.numel() * t.element_size() for t in (b.item_dense, b.labels))
    return b.nbytes(), n * per_row + user_exp * 8 + hist_exp * 24 + nro


def _rates(prefix: str, imps: float, s: float, written: int, read: int) -> dict:
    """A stage's rate, bytes per impression, bandwidth and the rate the copy bandwidth allows."""
    moved = written + read
    return {
        f"{prefix}_ms": s * 1e3,
        f"{prefix}_impressions_per_s": imps / s,
        f"{prefix}_bytes_per_impression": written / imps,
        f"{prefix}_gb_per_s": moved / s / 1e9,
        f"{prefix}_floor_impressions_per_s": imps / (moved / COPY_BYTES_PER_S),
    }


def measure(path: str, preset: str, n: int, repeat: int = REPEAT) -> dict:
    """One path x preset x request count: generation and expansion apart (see the docstring)."""
    from workloads.presets import get_preset

    make, device = _maker(path)
    spec = get_preset(preset)
    b = make(spec, n, SEED)  # tables, allocator pools, Triton compilation
    if _host_made(path):  # the timed loop holds one batch while it makes the next: so does this
        make(spec, n, SEED + 1)  # (the numpy generator's pool of output buffers fills up)
    b.validate()
    req_bytes, imp_bytes = layout_bytes(b)
    imps = b.num_impressions_total
    expand = req_bytes + imp_bytes <= EXPAND_MAX_BYTES
    if expand:
        imp = b.to_impressions()
        imp.validate()
        require(imp.num_impressions_total == imps, "to_impressions lost rows")
        require(imp.nbytes() == imp_bytes, "layout_bytes disagrees with the impression batch")
        del imp
    del b
    total = 0
    with _Clock(device) as gen:
        for i in range(repeat):
            b = make(spec, n, SEED + i)
            total += b.num_impressions_total
    per_batch = total / repeat
    out = {"path": path, "preset": preset, "requests": n, "impressions_per_batch": per_batch}
    out.update(_rates("gen", per_batch, gen.s / repeat, req_bytes * per_batch / imps, 0))
    out["gen_impressions_per_cpu_s"] = total / gen.cpu_s if gen.cpu_s > 0 else None
    if expand:
        exp_imps = b.num_impressions_total
        r_bytes, i_bytes = layout_bytes(b)
        with _Clock(device) as ex:
            for _ in range(repeat):
                b.to_impressions()
        out.update(_rates("expand", exp_imps, ex.s / repeat, i_bytes, r_bytes))
        # a producer that makes and expands each batch
        out["impressions_per_s"] = 1.0 / (1.0 / out["gen_impressions_per_s"] + 1.0 / out["expand_impressions_per_s"])
    else:
        out.update({k: None for k in ("expand_ms", "expand_impressions_per_s", "impressions_per_s")})
    del b
    if device == "cuda":
        out.update(_sync_report(make, spec, n, expand))
    return out


class GeneratorImpressions:
    """asv: impressions/s of generate + to_impressions at ASV_REQUESTS requests (CUDA skipped without a GPU)."""

    params = (PRESETS, ["numpy-cpu", "torch-cpu", "triton-cuda", "torch-cuda"])
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


def _fmt(v, scale: float = 1.0, spec: str = "8.1f") -> str:
    return f"{v / scale:{spec}}" if v is not None else f"{'-':>{spec.split('.')[0]}}"


HEADER = (
    f"{'path':15s} {'preset':14s} {'requests':>8s} {'imp/batch':>10s} | {'gen ms':>8s} {'M imp/s':>8s} "
    f"{'B/imp':>7s} {'GB/s':>6s} {'floor M':>8s} | {'exp ms':>8s} {'M imp/s':>8s} {'B/imp':>7s} {'GB/s':>6s} "
    f"{'floor M':>8s} | {'syncs':>5s}"
)


def row_line(r: dict) -> str:
    """One table row: generation, then expansion (rate, bytes per impression, GB/s, floor rate)."""
    cells = [f"{r['path']:15s} {r['preset']:14s} {r['requests']:8d} {r['impressions_per_batch']:10.0f} |"]
    for p in ("gen", "expand"):
        cells.append(_fmt(r.get(f"{p}_ms"), 1.0, "8.2f"))
        cells.append(_fmt(r.get(f"{p}_impressions_per_s"), 1e6, "8.1f"))
        cells.append(_fmt(r.get(f"{p}_bytes_per_impression"), 1.0, "7.0f"))
        cells.append(_fmt(r.get(f"{p}_gb_per_s"), 1.0, "6.0f"))
        cells.append(_fmt(r.get(f"{p}_floor_impressions_per_s"), 1e6, "8.0f") + " |")
    cells.append(f"{r.get('generation_syncs', '-')!s:>5s}")
    return " ".join(cells)


def _plan(args) -> list[tuple[str, str, int, int]]:
    """(path, preset, requests, repeat) to run: every size for device paths, the small ones for
    host paths (the smallest, with fewer repeats, under --device all, so it all takes < 1 min)."""
    from workloads.presets import get_preset

    paths = args.paths or {"cpu": CPU_PATHS, "cuda": CUDA_PATHS, "all": CPU_PATHS + CUDA_PATHS}[args.device]
    cap = ALL_CPU_MAX_IMPRESSIONS if args.device == "all" else CPU_MAX_IMPRESSIONS
    todo = []
    for preset in args.presets:
        sizes = args.requests or REQUESTS.get(preset, DEFAULT_REQUESTS)
        k = get_preset(preset).impressions.mean()
        for n in sizes:
            for path in paths:
                host = _host_made(path)
                if args.requests or not host or n * k <= cap:
                    repeat = min(args.repeat, 3) if host and args.device == "all" else args.repeat
                    todo.append((path, preset, n, repeat))
    return todo


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m benchmarks.generator", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--device",
        choices=["cpu", "cuda", "all"],
        default="cpu",
        help="cpu: numpy-cpu and torch-cpu; cuda: the GPU paths; all: both (the CPU paths at small sizes)",
    )
    ap.add_argument("--paths", nargs="+", choices=PATHS, help="override the device's paths")
    ap.add_argument("--presets", nargs="+", default=PRESETS)
    ap.add_argument("--requests", nargs="+", type=int, help="request counts for every preset (default: REQUESTS)")
    ap.add_argument("--repeat", type=int, default=REPEAT)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU (default 1: per core)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (table on stderr)")
    ap.add_argument("--out", help="also write the JSON object to this file")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.device != "cpu" and not torch.cuda.is_available():
        print(f"error: --device {args.device} but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    print(HEADER, file=sys.stderr, flush=True)
    rows = []
    for path, preset, n, repeat in _plan(args):
        rows.append(measure(path, preset, n, repeat))
        print(row_line(rows[-1]), file=sys.stderr, flush=True)
    device_name = torch.cuda.get_device_name() if args.device != "cpu" else "cpu"
    out = {
        "benchmark": "generator",
        "device": args.device,
        "device_name": device_name,
        "copy_bytes_per_s": COPY_BYTES_PER_S,
        "results": rows,
    }
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
