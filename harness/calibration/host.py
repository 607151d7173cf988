"""Host terms: per aten op of an eager training step, per bare eager op, per CUDA-graph replay,
per device synchronization, per Triton launch from Python. Measured on tiny tensors, so the
device is never the bottleneck.

Why a per-op cost from a whole small step rather than from a bare op: an eager step's host time
per aten op includes autograd's bookkeeping, Python module and custom-Function overhead and the
optimizers' loops, which a bare `torch.add` in a loop does not have (per_launch_s is that bare
cost, for reference). A Triton kernel is not an aten op: its launch from Python (argument
binding, the launcher) is priced apart, per launch.

With `models` (`roo-bench calibrate --host-models`), each of those model presets' own eager step
(bf16 autocast on a GPU, both layouts) is timed too, at MODEL_REQUESTS requests of MODEL_HISTORY
history events and tables of MODEL_ROW_CAP rows: the host's time to issue the step (the device
drained before each step and not waited for inside it, so a step whose kernels outlast their issue
is still priced by its host work) per aten op (Triton launches taken out at their own cost), by
model and layout (`per_op_by_model`).
It is opt-in because it builds every preset's model and compiles its Triton kernels (minutes on a
GPU). Why: the host cost of an aten op depends on the op mix (views, casts, autograd nodes, module
code) and the tiny step's mix is not the presets'. These are steps of a few requests, never the
points the time model is checked against."""

from __future__ import annotations

import statistics
import time

from harness.calibration.timing import sync


def _per_call(fn, reps: int, dev) -> float:
    fn()
    sync(dev)
    out = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(dev)
        out.append((time.perf_counter() - t0) / reps)
    return statistics.median(out)


def _host_issue(fn, reps: int, dev) -> float:
    """Median host seconds to issue one call of `fn`, the device drained before each call and not
    waited for inside it: a sync-free step's host cost even where its kernels outlast it."""
    fn()
    sync(dev)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        sync(dev)
    return statistics.median(out)


def _tiny_step(torch, dev, g):
    """A small recommender's eager training step at sizes where only the host's work counts, with
    the op mix of the presets' steps: two fused embedding-bag collections on the project's own
    row-gradient path (a custom autograd Function, its sync-free row-wise Adagrad, the torch
    backend so that every op is an aten op), dense and top MLPs with LayerNorm, a pairwise dot
    interaction, BCE, backward and fused Adam: about 300 aten ops."""
    from roo_ref.embeddings import EmbeddingBagCollection, enable_row_grads
    from roo_ref.sparse_optim import FusedRowWiseAdagrad

    nn = torch.nn

    def mlp(dims):
        layers = []
        for a, b in zip(dims, dims[1:], strict=False):
            layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.ReLU()]
        return nn.Sequential(*layers[:-2])

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.user, self.item = EmbeddingBagCollection([64] * 3, 16, 64), EmbeddingBagCollection([64] * 2, 16, 64)
            self.dense, self.top = mlp([8, 32, 16, 16]), mlp([16 + 15, 32, 16, 1])

        def forward(self, ul, uv, il, iv, x):
            e = torch.cat([self.dense(x).unsqueeze(1), self.user(ul, uv), self.item(il, iv)], dim=1)
            z = torch.bmm(e, e.transpose(1, 2))
            iu = torch.triu_indices(6, 6, 1, device=e.device)
            return self.top(torch.cat([e[:, 0], z[:, iu[0], iu[1]]], dim=1))

    model = Tiny().to(dev)
    sinks = enable_row_grads(model)
    emb = [model.user.weight, model.item.weight]
    dense = [p for p in model.parameters() if all(p is not w for w in emb)]
    try:
        opt = torch.optim.Adam(dense, lr=1e-3, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.Adam(dense, lr=1e-3)
    eopt = FusedRowWiseAdagrad(emb, [sinks.get(id(p)) for p in emb], lr=0.01, backend="torch")
    B = 8
    ul, il = (torch.full((n, B), 2, device=dev, dtype=torch.int64) for n in (3, 2))
    uv, iv = (torch.randint(0, 1 << 20, (n * B * 2,), device=dev, generator=g) for n in (3, 2))
    x, y = torch.rand(B, 8, device=dev, generator=g), torch.rand(B, 1, device=dev, generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        eopt.zero_grad(set_to_none=True)
        loss = nn.functional.binary_cross_entropy_with_logits(model(ul, uv, il, iv, x), y)
        loss.backward()
        opt.step()
        eopt.step()

    return step


def _triton_launch_s(torch, dev, g) -> float:
    """Host seconds of one launch of a Triton kernel from Python (0 without Triton)."""
    try:
        from harness.calibration.triton_probe import launch_add_one
    except ImportError:
        return 0.0
    x = torch.rand(256, device=dev, generator=g)
    return _per_call(lambda: launch_add_one(x), 500, dev)


MODEL_PRESETS = ("retrieval", "early-ranking", "late-ranking", "hstu-ranking")
MODEL_REQUESTS = 8
MODEL_ROW_CAP = 4096
# every request's history at this many events: the op mix of a preset's step does not depend on the
# history's length, its kernels' time does (at 8 requests, hstu-ranking's 258-token sequences through
# the CPU's padded attention take minutes); at 64 the pooled history still takes the campaign's
# pooling path (roo_ref.sparse_optim.POOL_MIN_MEAN_BAG)
MODEL_HISTORY = 64
TRITON_LAUNCH_NAMES = ("cuLaunchKernel", "cuLaunchKernelEx")  # the driver API Triton launches through


def _triton_launches(torch, step, dev) -> float:
    """Triton launches in one call of `step` (the profiler's driver-API launch count; 0 off CUDA)."""
    if dev.type != "cuda":
        return 0.0
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return float(sum(e.count for e in prof.key_averages() if e.key in TRITON_LAUNCH_NAMES))


def model_host_terms(torch, dev, per_triton_s: float, models=MODEL_PRESETS) -> dict:
    """{model preset: {layout: host seconds per aten op}} of each preset's own eager step at
    MODEL_REQUESTS requests (module docstring)."""
    from harness.run_point import count_flops_and_ops
    from roo_ref.models import build_model
    from roo_ref.train import Trainer
    from workloads.generator import generate
    from workloads.presets import get_preset

    cuda = dev.type == "cuda"
    length = {"kind": "fixed", "value": MODEL_HISTORY, "max": MODEL_HISTORY}
    timed: dict = {}
    for name in models:
        spec = get_preset(name).with_overrides([f"history.length.{k}={v}" for k, v in length.items()])
        req = generate(spec, MODEL_REQUESTS, seed=0).to(dev)
        overrides = [f"max_table_rows={MODEL_ROW_CAP}"]
        if cuda and name.startswith("hstu"):
            overrides.append("attention_backend=triton")  # the campaign's (the torch reference pads every sequence)
        for layout in ("impression", "roo"):
            model = build_model(spec, name, overrides, device=dev, seed=0)
            trainer = Trainer(model, layout, amp_bf16=cuda, seed=0)
            batch = trainer.prepare(req if layout == "roo" else req.to_impressions())

            def step(t=trainer, b=batch):
                t.step(b)

            step()
            _, ops = count_flops_and_ops(step)
            timed[(name, layout)] = (step, _host_issue(step, 10, dev), max(ops or 1, 1))
    # launches are counted only once every step is timed: after a profiler session CUPTI may stay
    # hooked to every launch (pytorch/pytorch#144455), a host cost the timed steps must not pay
    out: dict = {name: {} for name in models}
    for (name, layout), (step, wall, ops) in timed.items():
        triton = _triton_launches(torch, step, dev)
        out[name][layout] = max(wall - triton * per_triton_s, 0.0) / ops
    return out


def host_terms(torch, dev, g, models: tuple[str, ...] = ()) -> dict:
    from harness.run_point import count_flops_and_ops

    cuda = dev.type == "cuda"
    step = _tiny_step(torch, dev, g)
    step()
    _, ops = count_flops_and_ops(step)
    per_step = _per_call(step, 20 if cuda else 10, dev)
    x = torch.rand(8, device=dev, generator=g)
    y = torch.empty_like(x)
    per_launch = _per_call(lambda: torch.add(x, 1.0, out=y), 2000, dev)
    graph_launch, per_sync, per_triton = per_launch, 0.0, 0.0
    if cuda:
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            torch.add(x, 1.0, out=y)
        torch.cuda.synchronize()
        gr = torch.cuda.CUDAGraph()
        with torch.cuda.graph(gr):
            torch.add(x, 1.0, out=y)
        graph_launch = _per_call(gr.replay, 500, dev)
        per_sync = _per_call(lambda: y.sum().item(), 500, dev) - per_launch
        per_triton = _triton_launch_s(torch, dev, g)
    return {
        "per_op_by_model": model_host_terms(torch, dev, per_triton, models) if models else {},
        "per_op_s": per_step / max(ops or 1, 1),
        "per_launch_s": per_launch,
        "graph_launch_s": graph_launch,
        "per_sync_s": max(per_sync, 0.0),
        "per_triton_launch_s": per_triton,
        "tiny_step_ops": ops,
    }
