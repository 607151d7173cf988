"""asv: the reference models on the CPU — a training step per layout, and the ROO speedup.

Preset `tiny` (its DLRM model) and the same workload with `arch=hstu` (the HSTU ranker, where the
ROO layout saves attention work), fp32, one intra-op thread (a shared CI host makes OpenMP thread
spin-waits dominate otherwise), fixed seeds.

time_step          wall time of one `Trainer.step` (forward + backward + optimizer) per layout.
track_roo_speedup  impressions/s of the ROO layout over the impression layout on the same
                   impressions, from the harness's training loop (harness.measure.measure_layouts:
                   warm-up, first timed step dropped, median), in alternating rounds so that a load
                   change on the host hits both layouts.

A broken build raises instead of timing: every setup first runs one forward + backward in both
layouts from identical weights on the same impressions and requires the losses and every
parameter gradient to agree (the ROO equivalence the speedup is only meaningful under).
"""

from __future__ import annotations

# Imported at load time: asv's forkserver imports the suite once and forks a child per benchmark,
# so every benchmark then skips the seconds of torch/project imports. The project's modules are
# preloaded best-effort only: at a commit where one is broken, its benchmarks fail (in setup,
# where they import it again) instead of the whole suite failing to import.
import torch

try:
    import harness.timers  # noqa: F401
    import roo_ref.models  # noqa: F401
    import roo_ref.train  # noqa: F401
    import workloads.generator  # noqa: F401
except Exception:  # noqa: BLE001, S110
    pass
try:
    import harness.measure  # noqa: F401
except Exception:  # noqa: BLE001, S110
    pass

from benchmarks.common import SEED, require

try:
    from workloads.layout import LAYOUTS
except ImportError:  # asv runs this suite on older commits too, from before workloads.layout
    LAYOUTS = ("impression", "roo")

PRESET = "tiny"
ARCHS = ["dlrm", "hstu"]
LAYOUT_NAMES = [str(layout) for layout in LAYOUTS]  # asv parameters: plain strings
# fp32 tolerance of tests/test_roo_equivalence.py for the preset models
RTOL, ATOL = 1e-5, 1e-6


def _setup_torch():

    torch.set_num_threads(1)
    return torch


def _dense_grads(model) -> dict:
    out = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            g = p.grad.coalesce().to_dense() if p.grad.is_sparse else p.grad
            out[name] = g.detach().clone()
    return out


def check_equivalence(
    preset: str, model_overrides=(), device="cpu", dtype=None, requests=None, rtol=RTOL, atol=ATOL, seed=SEED
) -> dict:
    """One forward + backward of `preset` in both layouts from identical weights on the same
    impressions; raises (RuntimeError from `require`) unless the losses and every parameter
    gradient agree. Returns {"models", "batches", "impressions", "requests"} (batches on `device`)."""

    from roo_ref.models import build_model
    from workloads.generator import generate
    from workloads.presets import get_preset

    dtype = torch.float32 if dtype is None else dtype
    spec = get_preset(preset)
    rb = generate(spec, requests or spec.requests_per_batch, seed=seed)
    n_imp = rb.num_impressions_total
    require(n_imp > rb.num_requests, f"{preset}: {n_imp} impressions for {rb.num_requests} requests")
    batches = {"impression": rb.to_impressions().to(device), "roo": rb.to(device)}
    losses, grads, models = {}, {}, {}
    for layout in LAYOUTS:
        model = build_model(spec, preset, tuple(model_overrides), device=device, dtype=dtype, seed=seed)
        loss = model(batches[layout], layout)["loss"]
        loss.backward()
        losses[layout] = loss.detach()
        grads[layout] = _dense_grads(model)
        models[layout] = model
    li, lr = losses["impression"], losses["roo"]
    what = f"{preset} {list(model_overrides)} {device} {dtype}"
    require(bool(torch.isfinite(li).all() and torch.isfinite(lr).all()), f"{what}: non-finite loss {li} / {lr}")
    require(
        torch.allclose(lr, li, rtol=rtol, atol=atol),
        f"{what}: ROO loss {float(lr)!r} != impression loss {float(li)!r}",
    )
    require(grads["roo"].keys() == grads["impression"].keys(), f"{what}: different parameters got gradients")
    require(len(grads["roo"]) > 0, f"{what}: no parameter got a gradient")
    for name, gi in grads["impression"].items():
        gr = grads["roo"][name]
        require(
            torch.allclose(gr, gi, rtol=rtol, atol=atol),
            f"{what}: gradient of {name} differs between layouts (max abs diff {float((gr - gi).abs().max())})",
        )
    return {"models": models, "batches": batches, "impressions": n_imp, "requests": rb.num_requests}


def build_pair(arch: str) -> dict:
    """The checked (check_equivalence) tiny models of `arch` in both layouts, with their trainers."""
    _setup_torch()
    from roo_ref.train import Trainer

    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}; allowed: {ARCHS}")
    pair = check_equivalence(PRESET, () if arch == "dlrm" else (f"arch={arch}",))
    built = pair["models"]["roo"].config.arch
    require(built == arch, f"built arch {built!r}, wanted {arch!r}")
    pair["trainers"] = {layout: Trainer(pair["models"][layout], layout, seed=SEED) for layout in LAYOUTS}
    return pair


class TinyStep:
    params = [LAYOUT_NAMES, ARCHS]
    param_names = ["layout", "arch"]
    timeout = 120

    def setup(self, layout, arch):
        pair = build_pair(arch)
        self.trainer = pair["trainers"][layout]
        # the per-batch bookkeeping outside the timed region (Trainer.prepare where the build has it)
        prepare = getattr(self.trainer, "prepare", None)
        self.batch = pair["batches"][layout] if prepare is None else prepare(pair["batches"][layout])
        self.trainer.step(self.batch)  # optimizer state allocated outside the timed region

    def time_step(self, layout, arch):
        self.trainer.step(self.batch)


class TinySpeedup:
    params = [ARCHS]
    param_names = ["arch"]
    timeout = 300
    rounds = 3  # alternating impression/roo rounds
    steps = 10  # timed steps per layout and round

    def setup(self, arch):
        self.pair = build_pair(arch)

    def track_roo_speedup(self, arch):
        import contextlib

        from harness.measure import LayoutRun, measure_layouts
        from harness.timers import Stats

        pair = self.pair

        @contextlib.contextmanager
        def setup(layout):
            yield LayoutRun(pair["trainers"][layout], [pair["batches"][layout]])

        samples = {layout: [] for layout in LAYOUTS}
        for _ in range(self.rounds):  # each round: impression, then roo
            m = measure_layouts(LAYOUTS, [pair["batches"]["roo"]], setup, warmup=2, steps=self.steps, device="cpu")
            for layout, r in m.layouts.items():
                require(bool(torch.isfinite(r.loss).all()), f"{arch}/{layout}: loss became non-finite")
                samples[layout].extend(r.timing.samples_ms)
        med = {layout: Stats.from_samples(samples[layout]).median for layout in LAYOUTS}
        require(all(m > 0 for m in med.values()), f"non-positive step time {med}")
        # same impressions per step in both layouts: impressions/s ratio = inverse step-time ratio
        return med["impression"] / med["roo"]

    track_roo_speedup.unit = "x"
