"""The DLRM interaction under ROO on CUDA: where its expansion and its first cross layer go.

    PYTHONPATH=. python3 -m benchmarks.interaction [--preset late-ranking] [--json interaction.json]

At a preset's production batch (workloads.presets: requests per step and impressions per request),
the preset's interaction (dot or DCN-v2) and its top MLP, bf16 autocast over fp32 parameters as the
trainer runs them, forward + backward of sum(logits * a fixed random weight), per variant:
- impression:     the user vectors given per impression (what the impression layout runs);
- roo_index:      per request, expanded by index_select (backward: index_add_), then as impression;
- roo_expansion:  per request, expanded by roo_ref.expansion (backward: pooled per request);
- roo_split:      the model's ROO path (roo_ref.models.dlrm: the interaction expands itself and,
                  for DCN-v2, applies the first layer's V to the user columns once per request).
Each variant's step is profiled once: `gpu_ms`, the sum of its kernels' GPU time (what a CUDA-graph
replay of the step would take, less the gaps between kernels), the kernels by name (top 12) and the
launch count; `wall_ms` is the eager step timed with CUDA events (median of --reps loops of --inner
steps), which the host's issue of ~150 ops bounds at these sizes.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from benchmarks.common import has_cuda, require, write_json

VARIANTS = ("impression", "roo_index", "roo_expansion", "roo_split")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="late-ranking")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke run, untimed")
    p.add_argument("--inner", type=int, default=10, help="steps per timed loop")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="interaction.json")
    return p


def _inputs(preset: str, seed: int, device: str):
    from roo_ref.expansion import Expansion
    from roo_ref.jagged import offsets_from_lengths, row_index
    from roo_ref.models import build_model
    from workloads.generator import generate
    from workloads.presets import get_preset

    spec = get_preset(preset)
    model = build_model(spec, overrides=["max_table_rows=1000"], seed=seed).to(device)  # tables unused here
    cfg = model.config
    batch = generate(spec, spec.requests_per_batch, seed=seed)
    k = batch.num_impressions.to(torch.int64)
    n, r, d = int(k.sum()), k.numel(), cfg.embedding_dim
    g = torch.Generator(device="cpu").manual_seed(seed)
    user = torch.randn(r, cfg.user_vectors, d, generator=g).to(device)
    item = torch.randn(n, cfg.item_vectors, d, generator=g).to(device)
    weight = torch.randn(n, spec.n_tasks, generator=g).to(device)
    k = k.to(device)
    ex = Expansion(row_index(k, n), offsets_from_lengths(k))
    return model, user, item, weight, ex


def _step(variant: str, model, user, item, weight, ex):
    """One forward + backward; `user` is per impression for "impression", per request otherwise."""
    device = user.device.type
    u = user.detach().requires_grad_(True)
    i = item.detach().requires_grad_(True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        uu, ii = u.to(model.heads.weight.dtype), i.to(model.heads.weight.dtype)
        if device == "cuda":
            uu, ii = uu.to(torch.bfloat16), ii.to(torch.bfloat16)
        if variant == "impression":
            x = model.interaction(uu, ii)
        elif variant == "roo_index":
            x = model.interaction(uu.index_select(0, ex.index), ii)
        elif variant == "roo_expansion":
            x = model.interaction(ex(uu), ii)
        else:
            x = model.interaction(uu, ii, ex)
        logits = model.heads(model.top_arch(x))
    (logits.float() * weight).sum().backward()


def _time(fn, inner: int, reps: int) -> float:
    if not torch.cuda.is_available():
        fn()
        return float("nan")
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def _kernels(fn) -> tuple[list[dict], int, float]:
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        return [], 0, float("nan")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    by_name: dict[str, float] = {}
    launches = 0
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            by_name[e.name] = by_name.get(e.name, 0.0) + e.device_time_total / 1e3
            launches += 1
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
    return [{"name": n[:160], "ms": round(ms, 4)} for n, ms in top], launches, sum(by_name.values())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    require(args.device == "cpu" or has_cuda(), "benchmarks.interaction needs a CUDA device (or --device cpu)")
    model, user, item, weight, ex = _inputs(args.preset, args.seed, args.device)
    user_per_impression = user.index_select(0, ex.index)
    rows = []
    for variant in VARIANTS:

        def fn(v=variant):
            u = user_per_impression if v == "impression" else user
            return _step(v, model, u, item, weight, ex)

        for _ in range(3):
            fn()
        model.zero_grad(set_to_none=True)
        ms = _time(fn, args.inner, args.reps)
        top, launches, gpu_ms = _kernels(fn)
        rows.append({"variant": variant, "wall_ms": ms, "gpu_ms": gpu_ms, "launches": launches, "top": top})
        print(f"{variant:14s} GPU {gpu_ms:7.3f} ms  wall {ms:7.3f} ms  {launches} kernels", flush=True)
    out = {"preset": args.preset, "requests": user.shape[0], "impressions": item.shape[0], "rows": rows}
    write_json(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
