"""A training step (forward, backward, optimizer) makes no host<->device sync, for every model
family in both layouts, once its batch is prepared (Trainer.prepare).

On the GPU: torch.cuda.set_sync_debug_mode("error") over a whole step. On the CPU, where nothing
syncs, `SyncCheck` records the operators that would: the ones whose CUDA kernels copy a value to the
host to size an output or answer a Python question (`_local_scalar_dense` behind .item()/int()/
bool(), nonzero, unique, masked_select, boolean-mask indexing, repeat_interleave without
output_size, equal, ...), a tensor made from host data inside the step (an H2D copy), and the
Python-level conversions (.tolist(), .item(), .cpu(), .numpy(), int()/float()/bool() of a tensor).
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from roo_ref.models import build_model
from roo_ref.train import Trainer
from workloads.generator import generate
from workloads.presets import get_preset

# aten ops whose CUDA implementation synchronizes with the host
SYNC_OPS = {
    "_local_scalar_dense",  # .item(), int(t), float(t), bool(t)
    "item",
    "nonzero",
    "nonzero_static",  # not a sync itself, but a sign of a data-dependent shape nearby
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "unique_dim_consecutive",
    "masked_select",
    "masked_scatter",
    "equal",
    "is_nonzero",
    "allclose",
    "bincount",
    "histc",
    "lift_fresh",  # a tensor from host data (torch.tensor(...)): an H2D copy on the GPU
}
# Python-level Tensor methods that copy a value to the host
SYNC_METHODS = {"tolist", "item", "numpy", "cpu", "__int__", "__float__", "__bool__", "__index__"}


def _bool_index(indices) -> bool:
    return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in (indices or ()))


class _Ops(TorchDispatchMode):
    def __init__(self, found: list[str]):
        super().__init__()
        self.found = found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in SYNC_OPS:
            self.found.append(str(func))
        elif name == "repeat_interleave" and kwargs.get("output_size", args[-1] if len(args) > 2 else None) is None:
            self.found.append(f"{func} without output_size")
        elif name in ("index", "index_put", "index_put_", "_index_put_impl_") and _bool_index(args[1]):
            self.found.append(f"{func} with a boolean mask")
        return func(*args, **kwargs)


class _Methods(TorchFunctionMode):
    def __init__(self, found: list[str]):
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNC_METHODS:
            self.found.append(f"Tensor.{name}")
        return func(*args, **(kwargs or {}))


class SyncCheck:
    """`with SyncCheck() as found:` -> `found` lists every would-be sync inside the block."""

    def __enter__(self) -> list[str]:
        self.found: list[str] = []
        self._modes = (_Methods(self.found), _Ops(self.found))
        for m in self._modes:
            m.__enter__()
        return self.found

    def __exit__(self, *exc):
        for m in reversed(self._modes):
            m.__exit__(*exc)
        return False


FAMILIES = {
    "dlrm_dot": ["arch=dlrm", "interaction=dot"],
    "dlrm_dcn": ["arch=dlrm", "interaction=dcn"],
    "two_tower": ["arch=two_tower"],
    # the Triton attention (the interpreter on the CPU); a history cap exercises the jagged tail
    "hstu": ["arch=hstu", "attention_backend=triton", "qk_dim=32", "v_dim=32", "max_history_len=6"],
}


def _trainer_and_batch(family: str, layout: str, device="cpu", amp_bf16=False, seed=0):
    spec = get_preset("tiny")
    model = build_model(spec, overrides=FAMILIES[family], device=device, seed=seed)
    trainer = Trainer(model, layout, amp_bf16=amp_bf16, seed=seed)
    rb = generate(spec, 3, seed=seed + 1).to(device)
    assert (rb.num_impressions > 1).any() and rb.history_lengths.sum() > 0
    return trainer, trainer.prepare(rb if layout == "roo" else rb.to_impressions())


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("layout", ["impression", "roo"])
@pytest.mark.parametrize("family", ["dlrm_dot", "dlrm_dcn", "two_tower", pytest.param("hstu", marks=pytest.mark.slow)])
def test_prepared_step_has_no_sync_op(family, layout, one_torch_thread):
    trainer, batch = _trainer_and_batch(family, layout, seed=len(family))
    trainer.step(batch)  # warm-up: optimizer state, kernel caches
    before = _weights(trainer.model)
    with SyncCheck() as found:
        loss = trainer.step(batch)
    assert found == [], f"{family}/{layout}: ops that sync on a GPU: {sorted(set(found))}"
    # the step trained: a finite loss, and every embedding table moved (the row-gradient path)
    assert torch.isfinite(loss)
    after = _weights(trainer.model)
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    tables = {n for n in before if n.endswith(("bag.weight", "emb.weight")) and before[n].numel()}
    assert tables and tables <= moved, sorted(tables - moved)


def test_check_catches_the_usual_culprits():
    x = torch.randint(0, 5, (20,))
    culprits = {
        "item": lambda: x[0].item(),
        "int": lambda: int(x.sum()),
        "tolist": lambda: x.tolist(),
        "unique": lambda: torch.unique(x),
        "nonzero": lambda: x.nonzero(),
        "mask": lambda: x[x > 2],
        "repeat_interleave": lambda: torch.repeat_interleave(x, x),
        "tensor from host data": lambda: torch.tensor([1, 2]),
    }
    for name, op in culprits.items():
        with SyncCheck() as found:
            op()
        assert found, name
    total = int(x.sum())
    with SyncCheck() as found:  # the sync-free forms pass
        torch.repeat_interleave(x, x, output_size=total)
        torch.sort(x)
        torch.cumsum(x, 0)
        torch.zeros(3).index_add_(0, x % 3, torch.ones(20))
    assert found == []


def test_reference_optimizer_and_unprepared_hstu_do_sync():
    # the check fails where it should: the COO path's torch.unique, HSTU's per-batch bookkeeping
    # (the kept history's size, the longest sequence) when the step has to prepare the batch itself
    spec = get_preset("tiny")
    rb = generate(spec, 3, seed=1)
    trainer = Trainer(build_model(spec, overrides=FAMILIES["dlrm_dot"], seed=0), "roo", fused_embeddings=False)
    trainer.step(rb)
    with SyncCheck() as found:
        trainer.step(trainer.prepare(rb))
    assert any("unique" in f for f in found)
    hstu = build_model(spec, overrides=["arch=hstu", "max_history_len=6"], seed=0)
    with SyncCheck() as found:
        hstu.prepare(rb, "roo")
    assert any("_local_scalar_dense" in f for f in found) and any("nonzero" in f for f in found)


@pytest.mark.gpu
@pytest.mark.parametrize("amp_bf16", [False, True])
@pytest.mark.parametrize("layout", ["impression", "roo"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cuda_step_is_sync_free(family, layout, amp_bf16, monkeypatch):
    import roo_ref.kernels.segment_sum as ks

    calls, real = [], ks.segment_sum

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ks, "segment_sum", counted)
    trainer, batch = _trainer_and_batch(family, layout, device="cuda", amp_bf16=amp_bf16)
    for _ in range(2):  # warm-up: optimizer state, Triton compilation and autotuning
        trainer.step(batch)
    assert calls  # the embedding optimizer summed its rows with the Triton kernel
    torch.cuda.synchronize()
    before = _weights(trainer.model)
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = trainer.step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()
    after = _weights(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before)


# --- profiler labels (roo_ref.models.regions) ---------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("family", ["dlrm_dcn", "two_tower", "hstu"])
def test_step_parts_carry_their_profiler_labels_forward_and_backward(family, one_torch_thread):
    from torch.profiler import ProfilerActivity, profile

    from roo_ref.models.regions import ITEM, OPTIMIZER, REGIONS, USER, profiling

    # HSTU with the torch attention: a fast CPU profile
    overrides = ["arch=hstu", "max_history_len=6"] if family == "hstu" else FAMILIES[family]
    spec = get_preset("tiny")
    trainer = Trainer(build_model(spec, overrides=overrides, seed=1), "impression")
    batch = trainer.prepare(generate(spec, 3, seed=2).to_impressions())
    trainer.step(batch)
    assert not profiling()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.step(batch)
    events = [e for e in prof.events() if e.name in REGIONS]
    assert {e.name for e in events} == set(REGIONS)
    for name in (USER, ITEM):  # the backward nodes each part created run under its label too
        kids = [c.name for e in events if e.name == name for c in e.cpu_children]
        assert any(k.endswith("Backward0") for k in kids), (name, sorted(set(kids)))
    opt = [c.name for e in events if e.name == OPTIMIZER for c in e.cpu_children]
    assert opt and not any(k.endswith("Backward0") for k in opt)
    loss = trainer.step(batch)  # no hook left behind: a plain step after the profile
    assert torch.isfinite(loss)


# --- the optimizer's work by side (roo_ref.models.regions.optimizer_range, harness.profile_step) -----
def test_optimizer_range_names_the_sides_and_the_harness_reads_them():
    from harness.profile_step import side_shares
    from roo_ref.models.regions import optimizer_range

    assert optimizer_range({"user": 5}) == "roo/optimizer/user"
    assert optimizer_range({"item": 3, "user": 0}) == "roo/optimizer/item"
    assert optimizer_range({None: 4}) is None and optimizer_range({}) is None
    name = optimizer_range({"item": 100, "user": 900})
    assert name == "roo/optimizer/user=0.9,item=0.1" and side_shares(name) == {"user": 0.9, "item": 0.1}
    # ids from no side's lookup (a .grad, a lookup outside USER/ITEM) stay unattributed
    assert side_shares(optimizer_range({"user": 1, "item": 1, None: 2})) == {"user": 0.25, "item": 0.25}
    assert side_shares("roo/optimizer/user") == {"user": 1.0}
    for other in ("roo/optimizer", "roo/user", "roo/optimizer/dense", "roo/optimizer/user=x", "roo/optimizer/user=2"):
        assert side_shares(other) is None, other


def test_breakdown_counts_sided_optimizer_time_into_s_u():
    """Synthetic events: the optimizer ranges' busy time stays optimizer time, and its user part
    (a range's time times its user share) joins the user side in s_u."""
    from types import SimpleNamespace

    from harness.profile_step import breakdown, layout_fields, time_ideal

    def ev(name, us=0.0, parent=None):
        return SimpleNamespace(
            name=name, self_cpu_time_total=us, cpu_parent=parent, sequence_nr=-1, device_type="DeviceType.CPU"
        )

    user, opt = ev("roo/user"), ev("roo/optimizer")
    only_user, shared = ev("roo/optimizer/user", parent=opt), ev("roo/optimizer/user=0.75,item=0.25", parent=opt)
    events = [user, opt, only_user, shared, ev("aten::mm", 100.0, user)]
    events += [ev("aten::index_add_", 40.0, only_user), ev("aten::index_add_", 80.0, shared)]
    events += [ev("aten::_fused_adam_", 20.0, opt), ev("aten::add", 10.0)]
    out = breakdown(events, steps=1, cuda=False)
    assert out["components_ms"]["optimizer"] == pytest.approx(0.14) and out["components_ms"]["user"] == 0.1
    assert out["optimizer_sides_ms"] == pytest.approx({"user": 0.1, "item": 0.02})
    fields = layout_fields({**out, "steps": 1}, None)
    s_u, ideal, reason = time_ideal(fields, k=10)
    assert reason is None and s_u == pytest.approx((0.1 + 0.1) / 0.25)
    assert ideal == pytest.approx(1 / (s_u / 10 + 1 - s_u))
    no_sides = {**fields, "optimizer_side_ms": None}  # records written before the sided ranges
    assert time_ideal(no_sides, k=10)[0] == pytest.approx(0.1 / 0.25)


@pytest.mark.parametrize("family", ["dlrm_dot", "hstu"])
def test_cpu_step_profile_has_sided_optimizer_ranges(family, one_torch_thread):
    """A profiled tiny CPU step: every table's update runs in its side's range (the item table,
    read by the history and the candidates, in a shared one), the harness attributes that time,
    and time_ideal counts the user part."""
    from torch.profiler import ProfilerActivity, profile

    from harness.profile_step import breakdown, layout_fields, side_shares, time_ideal

    overrides = ["arch=hstu", "max_history_len=6"] if family == "hstu" else FAMILIES[family]
    spec = get_preset("tiny")
    trainer = Trainer(build_model(spec, overrides=overrides, seed=1), "impression")
    batch = trainer.prepare(generate(spec, 3, seed=2).to_impressions())
    trainer.step(batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.step(batch)
    names = {e.name for e in prof.events() if e.name.startswith("roo/optimizer/")}
    assert {"roo/optimizer/user", "roo/optimizer/item"} <= names
    shared = [side_shares(n) for n in names if "," in n]
    assert len(shared) == 1 and shared[0]["user"] > shared[0]["item"] > 0  # history ids repeat k-fold
    out = breakdown(prof.events(), steps=1, cuda=False)
    sides, comps = out["optimizer_sides_ms"], out["components_ms"]
    assert sides["user"] > 0 and sides["item"] > 0 and sides["user"] + sides["item"] <= comps["optimizer"] * (1 + 1e-9)
    fields = layout_fields({**out, "steps": 1}, None)
    s_u = time_ideal(fields, k=3)[0]
    assert (
        s_u == pytest.approx((comps["user"] + sides["user"]) / out["busy_ms"]) and s_u > comps["user"] / out["busy_ms"]
    )


def test_time_ideal_share_is_over_the_components_when_they_overcount():
    """When the profiler links kernels to more than one operator the components sum past the busy
    time; s_u is then the user share of the components, never user / busy capped at 1."""
    from harness.profile_step import time_ideal

    imp = {"busy_ms": 10.0, "component_ms": {"user": 9.0, "item": 2.0, "other": 1.0}, "optimizer_side_ms": None}
    s_u, ideal, reason = time_ideal(imp, k=10)
    assert reason is None and s_u == pytest.approx(9.0 / 12.0) and ideal == pytest.approx(1 / (0.075 + 0.25))
    assert time_ideal({**imp, "component_ms": {"user": 6.0, "item": 2.0, "other": 1.0}}, k=10)[0] == 0.6
