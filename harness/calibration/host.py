"""Host terms: per aten op of an eager training step, per bare eager op, per CUDA-graph replay,
per device synchronization. Measured on tiny tensors, so the device is never the bottleneck."""

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


def _tiny_step(torch, dev, g):
    """A small model's eager training step (embedding bag, MLP, BCE, backward, fused Adam): the
    op mix of a recommender step at sizes where only the host's work counts."""
    nn = torch.nn
    emb = nn.EmbeddingBag(64, 16, mode="sum").to(dev)
    mlp = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(16, 16), nn.ReLU())], nn.Linear(16, 1)).to(dev)
    params = list(emb.parameters()) + list(mlp.parameters())
    try:
        opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.Adam(params, lr=1e-3)
    ids = torch.randint(0, 64, (32,), device=dev, generator=g)
    offs = torch.arange(0, 32, 4, device=dev)
    y = torch.rand(8, 1, device=dev, generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        x = emb(ids, offs)
        loss = nn.functional.binary_cross_entropy_with_logits(mlp(x * 1.5 + 0.1), y)
        loss.backward()
        opt.step()

    return step


def host_terms(torch, dev, g) -> dict:
    from harness.run_point import count_flops_and_ops

    cuda = dev.type == "cuda"
    step = _tiny_step(torch, dev, g)
    step()
    _, ops = count_flops_and_ops(step)
    per_step = _per_call(step, 20 if cuda else 10, dev)
    x = torch.rand(8, device=dev, generator=g)
    y = torch.empty_like(x)
    per_launch = _per_call(lambda: torch.add(x, 1.0, out=y), 2000, dev)
    graph_launch, per_sync = per_launch, 0.0
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
    return {
        "per_op_s": per_step / max(ops or 1, 1),
        "per_launch_s": per_launch,
        "graph_launch_s": graph_launch,
        "per_sync_s": max(per_sync, 0.0),
        "tiny_step_ops": ops,
    }
