"""The torch generator (workloads.generator_torch) draws from the numpy reference's distributions.

Statistically: for every `Dist` kind and for whole presets, two-sample KS tests (counts, lengths,
pooling factors, ids, gaps, dense features), chi-square on the top ids' frequencies and the action
types, binomial tests on the label rates; each at a sample size where a deliberately wrong parameter
fails the same test by a wide margin (so the test can fail); the "torch" and "philox" backends
both. Exactly: the Zipf bit transform and the history timestamps equal numpy's on the same inputs,
the Philox reference matches Random123's known answer, and the "triton" backend writes the bytes
of "philox" (through Triton's interpreter without a GPU). Then determinism, validity, and on a GPU
(marked gpu) the same on CUDA with a sync-free to_impressions() and at most one host sync per batch.
Seeds are fixed: the p-value thresholds hold with room on these draws, and the suite stays
deterministic.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats

from workloads.distributions import Dist
from workloads.errors import SpecError
from workloads.generator import _history_timestamps, _zipf_from_bits, _zipf_table, generate
from workloads.generator_philox import philox_torch
from workloads.generator_torch import (
    generate_on,
    history_timestamps_torch,
    resolve_backend,
    zipf_from_bits_torch,
)
from workloads.presets import get_preset
from workloads.spec import HistorySpec, SparseGroup, Task, WorkloadSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAME_P = 1e-3  # the torch sample vs numpy's: must not be rejected at this level
WRONG_P = 1e-6  # a wrong parameter vs numpy's: must be rejected at this level


def _d(**kw) -> Dist:
    if "mean" in kw:
        kw["mean_"] = kw.pop("mean")
    return Dist(**kw)


def _gen(seed: int, device: str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


# (right, wrong): the wrong one moves one parameter by 5-15%
DISTS = {
    "uniform": (_d(kind="uniform", low=1, high=9), _d(kind="uniform", low=1, high=10)),
    "geometric": (_d(kind="geometric", mean=10.0, min=1, max=64), _d(kind="geometric", mean=11.5, min=1, max=64)),
    "poisson": (_d(kind="poisson", mean=4.0), _d(kind="poisson", mean=4.4)),
    "lognormal": (
        _d(kind="lognormal", mean=400.0, sigma=0.6, max=2048),
        _d(kind="lognormal", mean=400.0, sigma=0.66, max=2048),
    ),
    "lognormal-small": (
        _d(kind="lognormal", mean=3.0, sigma=0.5, min=1),
        _d(kind="lognormal", mean=3.3, sigma=0.5, min=1),
    ),
    "zipf": (_d(kind="zipf", a=1.5, max=1000), _d(kind="zipf", a=1.6, max=1000)),
    "powerlaw": (_d(kind="powerlaw", a=2.2, low=2, max=500), _d(kind="powerlaw", a=2.4, low=2, max=500)),
    "empirical": (
        _d(kind="empirical", values=(1, 2, 5, 9), weights=(0.4, 0.3, 0.2, 0.1)),
        _d(kind="empirical", values=(1, 2, 5, 9), weights=(0.35, 0.3, 0.25, 0.1)),
    ),
}


@pytest.mark.parametrize("name", sorted(DISTS))
def test_every_dist_kind_matches_numpy_and_a_wrong_parameter_is_detected(name):
    right, wrong = DISTS[name]
    n = 20_000
    ref = right.sample(np.random.default_rng(11), n)
    g = _gen(12)
    got = right.sample_torch(g, n)
    assert got.dtype == torch.int64 and got.shape == (n,)
    got_np = got.numpy()
    lo, hi = right.pmf_table[0][[0, -1]]
    assert got_np.min() >= lo and got_np.max() <= hi  # inside the clipped support
    assert stats.ks_2samp(ref, got_np).pvalue > SAME_P
    assert abs(got_np.mean() / right.mean() - 1) < 0.05
    assert stats.ks_2samp(ref, wrong.sample_torch(g, n).numpy()).pvalue < WRONG_P


def test_fixed_dist_is_clipped_like_numpy():
    for d in (_d(kind="fixed", value=3), _d(kind="fixed", value=0, min=2), _d(kind="fixed", value=9, max=4)):
        got = d.sample_torch(_gen(0), 50)
        assert torch.equal(got, torch.from_numpy(d.sample(np.random.default_rng(0), 50)))


@pytest.mark.parametrize("card,a", [(1000, 1.1), (10_000_000, 1.2), (7, 0.8), (1, 1.0)])
def test_zipf_bit_transform_equals_numpy(card, a):
    bits = np.random.default_rng(card).integers(0, 1 << 32, size=50_000, dtype=np.uint64).astype(np.uint32)
    ref = np.empty(bits.size, np.int64)
    _zipf_from_bits(bits, _zipf_table(card, a), ref)
    xs20, ds = _zipf_table(card, a)
    table = torch.stack([torch.from_numpy(xs20), torch.from_numpy(ds)], 1)
    got = zipf_from_bits_torch(torch.from_numpy(bits.astype(np.int64)), table)
    assert torch.equal(got, torch.from_numpy(ref))
    assert int(got.min()) >= 0 and int(got.max()) < card


def test_history_timestamps_equal_numpy():
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 6, size=400)
    lengths[[0, 7, 8, -1]] = 0  # empty segments at the ends and in a row
    gaps = rng.integers(1, 5000, size=int(lengths.sum()))
    request_ts = 1_700_000_000 + np.arange(lengths.size)
    ref = gaps.copy()
    _history_timestamps(ref, lengths, request_ts)
    offsets = torch.zeros(lengths.size + 1, dtype=torch.int64)
    torch.cumsum(torch.from_numpy(lengths), 0, out=offsets[1:])
    got = history_timestamps_torch(
        torch.from_numpy(gaps), torch.from_numpy(lengths), offsets, torch.from_numpy(request_ts)
    )
    assert torch.equal(got, torch.from_numpy(ref))


def _check_batch(b, spec: WorkloadSpec, n: int) -> None:
    b.validate()
    assert b.num_requests == n
    imp = b.to_impressions()
    imp.validate()
    assert imp.to_requests().equal(b)
    k = b.num_impressions
    totals = ((b.user_sparse_lengths.sum(0) * k).sum().item(), (b.history_lengths * k).sum().item())
    assert b.expanded_totals() == totals
    h = spec.history
    if b.history_item_ids.numel():  # late-ranking (DLRM-v2) has no history
        assert 0 <= int(b.history_item_ids.min()) and int(b.history_item_ids.max()) < h.item_cardinality
        assert 0 <= int(b.history_actions.min()) and int(b.history_actions.max()) < h.action_types
    # timestamps ascend within a request and end before it
    ts, off = b.history_timestamps, b.impression_offsets()
    hoff = torch.zeros(n + 1, dtype=torch.int64, device=ts.device)
    torch.cumsum(b.history_lengths, 0, out=hoff[1:])
    same_req = torch.repeat_interleave(torch.arange(n, device=ts.device), b.history_lengths)
    steps = ts.diff()[same_req[1:] == same_req[:-1]]
    assert bool((steps >= 1).all())
    nz = b.history_lengths > 0
    assert bool((ts[hoff[1:][nz] - 1] < b.timestamp[nz]).all())
    assert int(off[-1]) == b.num_impressions_total


@pytest.mark.parametrize("backend", ["torch", "philox"])
@pytest.mark.parametrize("name", ["tiny", "late-ranking"])
def test_generate_on_cpu_is_deterministic_and_valid(name, backend):
    spec = get_preset(name)
    a = generate_on(spec, 300, seed=5, backend=backend)
    assert a.equal(generate_on(spec, 300, seed=5, backend=backend))
    other = generate_on(spec, 300, seed=6, backend=backend)  # another seed, another batch (late-ranking has no history)
    assert not torch.equal(a.user_sparse_values, other.user_sparse_values)
    assert not torch.equal(a.history_item_ids, other.history_item_ids) or a.history_item_ids.numel() == 0
    _check_batch(a, spec, 300)
    assert a.to("cpu").expanded_totals() == a.expanded_totals()


def _wide_spec() -> WorkloadSpec:
    """Every field with a non-trivial distribution (and a uniform-popularity group), sized for power."""
    return WorkloadSpec(
        impressions=_d(kind="geometric", mean=6.0, min=1, max=40),
        history=HistorySpec(
            length=_d(kind="lognormal", mean=60.0, sigma=0.6, max=400),
            item_cardinality=100_000,
            zipf_a=1.15,
            action_types=5,
            mean_gap_s=600.0,
        ),
        user_sparse=(
            SparseGroup("u", 3, 50_000, _d(kind="lognormal", mean=4.0, sigma=0.6, min=1, max=50), "zipf", 1.1),
            SparseGroup("c", 2, 1000, _d(kind="poisson", mean=2.0), "uniform"),
        ),
        user_dense=3,
        item_sparse=(SparseGroup("i", 2, 80_000, _d(kind="uniform", low=1, high=4), "zipf", 1.25),),
        item_dense=2,
        tasks=(Task("click", 0.08), Task("like", 0.02)),
    )


def _top_k_p(a: np.ndarray, b: np.ndarray, k: int = 30) -> float:
    """Chi-square p that ids 0..k-1 (the most popular under Zipf) and the rest are equally frequent."""
    rows = [np.append(np.bincount(x[x < k], minlength=k), (x >= k).sum()) for x in (a, b)]
    return stats.chi2_contingency(np.array(rows)).pvalue


def _field_ps(ref, got) -> dict[str, float]:
    """p-values of every comparison between a numpy batch and a torch batch."""
    ks = {
        "impressions": (ref.num_impressions, got.num_impressions),
        "history_length": (ref.history_lengths, got.history_lengths),
        "user_pooling": (ref.user_sparse_lengths[:3], got.user_sparse_lengths[:3]),
        "user_pooling_poisson": (ref.user_sparse_lengths[3:], got.user_sparse_lengths[3:]),
        "item_pooling": (ref.item_sparse_lengths, got.item_sparse_lengths),
        "history_ids": (ref.history_item_ids, got.history_item_ids),
        "item_ids": (ref.item_id, got.item_id),
        "user_dense": (ref.user_dense, got.user_dense),
        "item_dense": (ref.item_dense, got.item_dense),
    }
    ps = {k: stats.ks_2samp(a.reshape(-1).numpy(), b.reshape(-1).numpy()).pvalue for k, (a, b) in ks.items()}
    ps["history_ids_top"] = _top_k_p(ref.history_item_ids.numpy(), got.history_item_ids.numpy())
    ps["item_ids_top"] = _top_k_p(ref.item_id.numpy(), got.item_id.numpy())
    ps["actions"] = stats.chi2_contingency(
        np.stack([np.bincount(x.numpy(), minlength=5) for x in (ref.history_actions, got.history_actions)])
    ).pvalue
    ps["gaps"] = stats.ks_2samp(_gaps(ref), _gaps(got)).pvalue
    return ps


def _gaps(b) -> np.ndarray:
    """Time gaps between consecutive events of a request, and from the last event to the request."""
    ts = b.history_timestamps.numpy()
    rid = np.repeat(np.arange(b.num_requests), b.history_lengths.numpy())
    inner = np.diff(ts)[rid[1:] == rid[:-1]]
    ends = np.cumsum(b.history_lengths.numpy())
    nz = b.history_lengths.numpy() > 0
    last = b.timestamp.numpy()[nz] - ts[ends[nz] - 1]
    return np.concatenate([inner, last])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "philox"])
def test_whole_batches_agree_with_numpy_and_wrong_specs_are_detected(backend):
    spec = _wide_spec()
    n = 6000
    ref = generate(spec, n, seed=21)
    got = generate_on(spec, n, seed=22, backend=backend)
    _check_batch(got, spec, n)
    ps = _field_ps(ref, got)
    assert min(ps.values()) > SAME_P, ps
    # label rates: a binomial test per task against the spec's rate (and a batch drawn 30% off fails it)
    off_spec = dataclasses.replace(spec, tasks=tuple(Task(t.name, t.base_rate * 1.3) for t in spec.tasks))
    off = generate_on(off_spec, n, backend=backend)
    for j, t in enumerate(spec.tasks):
        for b, ok in ((got, True), (off, False)):
            p = stats.binomtest(int(b.labels[:, j].sum()), b.num_impressions_total, t.base_rate).pvalue
            assert p > SAME_P if ok else p < WRONG_P, (t, ok, p)
    # the same tests reject a batch drawn with a wrong parameter
    h = spec.history
    wrong = {
        "impressions": dataclasses.replace(spec, impressions=_d(kind="geometric", mean=7.5, min=1, max=40)),
        "history_length": dataclasses.replace(
            spec, history=dataclasses.replace(h, length=_d(kind="lognormal", mean=66.0, sigma=0.6, max=400))
        ),
        "history_ids_top": dataclasses.replace(spec, history=dataclasses.replace(h, zipf_a=1.2)),
        "actions": dataclasses.replace(spec, history=dataclasses.replace(h, action_types=4)),
        "gaps": dataclasses.replace(spec, history=dataclasses.replace(h, mean_gap_s=660.0)),
        "item_pooling": dataclasses.replace(
            spec, item_sparse=(dataclasses.replace(spec.item_sparse[0], pooling=_d(kind="uniform", low=1, high=5)),)
        ),
    }
    for field, s in wrong.items():
        assert _field_ps(ref, generate_on(s, n, seed=22, backend=backend))[field] < WRONG_P, field


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "philox"])
@pytest.mark.parametrize("name", ["early-ranking", "hstu-ranking"])
def test_preset_batches_agree_with_numpy(name, backend):
    spec = get_preset(name)
    n = 1500
    ref, got = generate(spec, n, seed=31), generate_on(spec, n, seed=32, backend=backend)
    for f in ("num_impressions", "history_lengths", "history_item_ids", "item_id", "user_sparse_values"):
        a, b = getattr(ref, f).numpy(), getattr(got, f).numpy()
        if a.std() > 0:
            assert stats.ks_2samp(a, b).pvalue > SAME_P, f
        else:
            assert np.array_equal(np.unique(a), np.unique(b)), f
    assert _top_k_p(ref.history_item_ids.numpy(), got.history_item_ids.numpy()) > SAME_P
    rate = spec.tasks[0].base_rate
    assert stats.binomtest(int(got.labels[:, 0].sum()), got.num_impressions_total, rate).pvalue > SAME_P


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("name", ["tiny", "late-ranking", "early-ranking"])
def test_cuda_generation_is_deterministic_valid_and_expands_without_syncs(name, backend):
    spec = get_preset(name)
    a = generate_on(spec, 512, seed=3, device="cuda", backend=backend)
    assert a.request_id.is_cuda and a.equal(generate_on(spec, 512, seed=3, device="cuda", backend=backend))
    assert not a.equal(generate_on(spec, 512, seed=4, device="cuda", backend=backend))
    _check_batch(a, spec, 512)
    ref = a.to("cpu").to_impressions("torch")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        triton_imp = a.to_impressions("triton")
        torch_imp = a.to_impressions("torch")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert triton_imp.to("cpu").equal(ref) and torch_imp.to("cpu").equal(ref)
    # the numpy batch copied to the GPU keeps its totals: its expansion is sync-free too
    c = generate(spec, 512, seed=3).to("cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        c_imp = c.to_impressions()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert c_imp.to("cpu").equal(generate(spec, 512, seed=3).to_impressions())


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_cuda_distributions_match_numpy(backend):
    spec = _wide_spec()
    ref = generate(spec, 6000, seed=21)
    got = generate_on(spec, 6000, seed=22, device="cuda", backend=backend).to("cpu")
    ps = _field_ps(ref, got)
    assert min(ps.values()) > SAME_P, ps


def test_philox_reference_matches_the_random123_known_answer():
    """Philox4x32-10 with key 0 at counter 0 (Random123's kat_vectors), and at a second counter
    against the same function word by word, so a wrong round constant fails."""
    got = [int(w) for w in philox_torch(0, torch.tensor([0]))]
    assert got == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    a = torch.stack(philox_torch(123, torch.arange(1000)))
    assert a.min() >= 0 and a.max() < 1 << 32
    assert a.unique().numel() > 3990  # four distinct-looking words per counter


def _edge_spec() -> WorkloadSpec:
    """No dense features, long histories (several kernel blocks) and empty ones, one zero-count group."""
    return WorkloadSpec(
        impressions=_d(kind="uniform", low=1, high=3, min=1),
        history=HistorySpec(length=_d(kind="empirical", values=(0, 1, 1500, 2600), weights=(1, 1, 1, 1))),
        user_sparse=(SparseGroup("none", 0, 10, _d(kind="fixed", value=2), "uniform"),),
        user_dense=0,
        item_sparse=(),
        item_dense=0,
        tasks=(Task("a", 0.5), Task("b", 0.25), Task("c", 0.1)),
    )


KERNEL_CASES = {
    "tiny": lambda: get_preset("tiny"),
    "wide": _wide_spec,
    "edge": _edge_spec,
    "early-ranking": lambda: get_preset("early-ranking@0.01"),
    "hstu-ranking": lambda: get_preset("hstu-ranking@0.01"),
    "late-ranking": lambda: get_preset("late-ranking@0.01"),
}


@pytest.mark.parametrize("case", sorted(KERNEL_CASES))
def test_triton_kernels_equal_the_torch_reference(case):
    """The "triton" backend (Triton's interpreter without a GPU) writes the bytes of "philox"."""
    pytest.importorskip("triton")
    spec = KERNEL_CASES[case]()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    ref = generate_on(spec, 14, seed=9, device=dev, backend="philox")
    got = generate_on(spec, 14, seed=9, device=dev, backend="triton")
    for name, t in ref.tensors().items():
        g = got.tensors()[name]
        assert g.dtype == t.dtype and g.shape == t.shape and torch.equal(g, t), name
    _check_batch(got, spec, 14)
    assert not got.equal(generate_on(spec, 14, seed=10, device=dev, backend="triton"))


def test_backend_choice_and_its_errors():
    spec = get_preset("tiny")
    assert resolve_backend(spec, torch.device("cpu")) == "torch"
    huge = dataclasses.replace(spec, history=dataclasses.replace(spec.history, item_cardinality=1 << 40))
    assert resolve_backend(huge, torch.device("cuda")) == "torch"  # auto falls back to torch
    with pytest.raises(SpecError, match="below 2\\^31"):
        generate_on(huge, 4, backend="philox")
    with pytest.raises(SpecError, match="allowed"):
        generate_on(spec, 4, backend="numpy")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["early-ranking", "hstu-ranking", "late-ranking"])
def test_cuda_generation_syncs_the_host_at_most_once_per_batch(name):
    """Counted by torch's sync debug mode: the one read of the sizes, nothing else."""
    import warnings

    spec = get_preset(name)
    generate_on(spec, 256, seed=1, device="cuda")  # tables to the device, kernels compiled
    torch.cuda.synchronize()
    for seed in (2, 3):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                generate_on(spec, 256, seed=seed, device="cuda")
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
        assert len(syncs) <= 1, syncs


def test_generator_benchmark_cli_reports_every_path(capsys):
    """benchmarks.generator's CLI on the CPU: one JSON object, a positive rate for each path."""
    import json

    from benchmarks.generator import main

    assert main(["--device", "cpu", "--presets", "tiny", "--requests", "64", "--repeat", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in out["results"]] == ["numpy-cpu", "torch-cpu"]
    for r in out["results"]:
        assert r["requests"] == 64 and r["impressions_per_batch"] >= 64
        assert r["impressions_per_s"] > 0 and r["gen_ms"] > 0 and r["expand_ms"] > 0


_COMPILE_SM90 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from workloads import generator_kernel as gk

fp = {"normal_table": "*fp32", "user_dense": "*fp32", "item_dense": "*fp32", "labels": "*fp32"}
ints = {k: "i64" for k in ("key", "n", "n_feat", "n_actions", "t0")}
request = dict(DU=13, DU_P2=16, S_HIST=1, S_DENSE=2, BLOCK=gk._HIST_BLOCK)
impression = dict(DI=5, DI_P2=8, T=2, T_P2=2, S_ID=3, S_DENSE=4, S_LABEL=5, BLOCK=gk._ROW_BLOCK)
for fn, consts, warps in (
    (gk._request_kernel, request, 8),
    (gk._impression_kernel, impression, 4),
    (gk._keyed_kernel, dict(STREAM=6, BLOCK=gk._VALUE_BLOCK), 4),
):
    sig = {n: "constexpr" if n in consts else {**fp, **ints}.get(n, "*i64") for n in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps}).asm["ptx"]
    assert ".entry" in ptx, fn
print("compiled")
"""


def test_generator_kernels_compile_for_sm90_offline():
    """The Triton interpreter runs the kernels on the CPU without typing them; this compiles each one
    for an H100 (sm_90) as a launch would (in a process without TRITON_INTERPRET), so a kernel the
    GPU compiler rejects (a loop-carried name rebound with another shape, say) fails here too."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", _COMPILE_SM90], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "compiled" in r.stdout, r.stderr[-2000:]
