"""Triton jagged HSTU attention vs the torch reference (roo_ref.attention.hstu_attention_torch).

With CUDA: the real kernels, hypothesis shapes up to 4096 tokens, bf16/fp16, GR's rule (error vs
an fp32 reference <= 2x (outputs) / 5x (gradients) the error of the same-precision torch reference).
Without CUDA: the same kernels through Triton's interpreter (TRITON_INTERPRET=1, set before triton
is imported) at small shapes and several block shapes, so a kernel regression is caught in CI.
"""

from __future__ import annotations

import functools
import importlib
import os
import subprocess
import sys

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

triton = pytest.importorskip("triton")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import roo_ref.kernels.hstu_attention as hk  # noqa: E402
from roo_ref.attention import hstu_attention, hstu_attention_torch  # noqa: E402
from roo_ref.jagged import offsets_from_lengths  # noqa: E402
from roo_ref.kernels.options import HstuKernelOptions  # noqa: E402

# The Triton kernels run through the interpreter here (seconds per case) or on a GPU.
pytestmark = pytest.mark.slow

if not CUDA and not getattr(hk, "_INTERPRETED_RELOAD", False):
    # Another test module may have imported the kernels before TRITON_INTERPRET was set: rebuild
    # them under the interpreter.
    hk = importlib.reload(hk)
    hk._INTERPRETED_RELOAD = True

DEV = torch.device("cuda" if CUDA else "cpu")


def _poison_like(*ts):
    """Fill freed allocator blocks of the outputs' sizes with NaN, so an element the kernel forgets
    to write shows up as NaN (the caching allocator hands the same blocks back)."""
    bufs = [torch.full_like(t, float("nan")) for t in ts]
    del bufs


def _make(lengths, num_targets, heads, d_qk, d_v, dtype, rab, seed):
    g = torch.Generator().manual_seed(seed)
    lengths_t = torch.tensor(lengths, dtype=torch.int64)
    off = offsets_from_lengths(lengths_t)
    total = int(off[-1])
    q = torch.randn(total, heads, d_qk, generator=g)
    k = torch.randn(total, heads, d_qk, generator=g)
    v = torch.randn(total, heads, d_v, generator=g)
    nt = torch.tensor(num_targets, dtype=torch.int64) if num_targets is not None else None
    extra = {}
    if rab:
        extra = dict(
            positions=torch.randint(0, 300, (total,), generator=g),
            timestamps=torch.randint(0, 1 << 16, (total,), generator=g),
            pos_weights=torch.randn(64, generator=g) * 0.5,
            time_weights=torch.randn(12, generator=g) * 0.5,
        )
    dout = torch.randn(total, heads, d_v, generator=g)
    return off, q, k, v, nt, extra, dout


def _run(fn, off, q, k, v, nt, extra, dout, dtype, max_len, alpha, norm):
    """Forward + backward of fn on copies cast to dtype; returns (out, grads) in float64."""
    qq, kk, vv = (t.to(DEV, dtype).requires_grad_(True) for t in (q, k, v))
    ex = {}
    for name, t in extra.items():
        t = t.to(DEV)
        if name.endswith("weights"):
            t = t.to(torch.float32).requires_grad_(True)
        ex[name] = t
    off_d = off.to(DEV)
    nt_d = nt.to(DEV) if nt is not None else None
    _poison_like(qq.detach(), vv.detach())
    out = fn(
        qq,
        kk,
        vv,
        off_d,
        max_len,
        alpha,
        norm,
        nt_d,
        ex.get("positions"),
        ex.get("timestamps"),
        ex.get("pos_weights"),
        ex.get("time_weights"),
    )
    leaves = [qq, kk, vv] + [ex[n] for n in ("pos_weights", "time_weights") if n in ex]
    _poison_like(qq.detach(), kk.detach(), vv.detach())
    grads = torch.autograd.grad(out, leaves, dout.to(DEV, dtype))
    return out.detach().double().cpu(), [g.double().cpu() for g in grads]


def _check_case(lengths, num_targets, heads, d_qk, d_v, dtype, rab, seed, alpha=None, options=None):
    """The Triton kernel (with `options`, None: its defaults) against the torch reference."""
    off, q, k, v, nt, extra, dout = _make(lengths, num_targets, heads, d_qk, d_v, dtype, rab, seed)
    # As in GR's tests, the fp32 reference takes the same (dtype-rounded) inputs: the rule measures
    # the arithmetic, not the input quantization both low-precision runs share. (With unrounded
    # inputs, sums over many pairs - the bias-table gradients - are dominated by that shared
    # quantization shift, and the same-precision torch run can land near the fp32 value by chance.)
    q, k, v, dout = (t.to(dtype).float() for t in (q, k, v, dout))
    max_len = max([1, *lengths])
    alpha = alpha if alpha is not None else 1.0 / d_qk**0.5
    norm = float(max_len)
    args = (off, q, k, v, nt, extra, dout)
    ref_out, ref_g = _run(hstu_attention_torch, *args, torch.float32, max_len, alpha, norm)
    triton_fn = functools.partial(hk.hstu_attention_triton, options=options)
    tri_out, tri_g = _run(triton_fn, *args, dtype, max_len, alpha, norm)
    assert tri_out.shape == ref_out.shape
    assert torch.isfinite(tri_out).all(), "output has NaN/inf: an element was not written"
    for g in tri_g:
        assert torch.isfinite(g).all(), "gradient has NaN/inf: an element was not written"
    names = ["out", "dq", "dk", "dv", "dpos_weights", "dtime_weights"]
    if dtype == torch.float32:
        # fp32 kernel vs fp32 reference: only summation order differs
        for name, a, b in zip(names, [tri_out, *tri_g], [ref_out, *ref_g], strict=False):
            scale = b.abs().max().item() if b.numel() else 0.0
            err = (a - b).abs().max().item() if b.numel() else 0.0
            assert err <= 1e-5 * (1.0 + scale), f"{name}: max err {err:.3g} (scale {scale:.3g})"
        return
    same_out, same_g = _run(hstu_attention_torch, *args, dtype, max_len, alpha, norm)
    for i, (name, a, s, b) in enumerate(
        zip(names, [tri_out, *tri_g], [same_out, *same_g], [ref_out, *ref_g], strict=False)
    ):
        if b.numel() == 0:
            continue
        factor = 2.0 if i == 0 else 5.0
        err = (a - b).abs().max().item()
        ref_err = (s - b).abs().max().item()
        # tiny floor: a tensor the same-precision reference gets exactly (e.g. all-zero rows) must
        # not demand bit-exactness from a different summation order
        floor = 1e-6 * (1.0 + b.abs().max().item())
        assert err <= factor * ref_err + floor, (
            f"{name}: triton err {err:.3g} > {factor} x torch-{dtype} err {ref_err:.3g} "
            f"(lengths {lengths}, targets {num_targets}, H={heads}, d={d_qk}/{d_v}, rab={rab})"
        )


# ---------------------------------------------------------------------------------------------
# shapes

if CUDA:
    MAX_LEN, MAX_B, DIMS, DTYPES, EXAMPLES = 4096, 16, (32, 64, 128), (torch.bfloat16, torch.float16), 8
else:
    # the interpreter runs every program in numpy: small shapes, few examples (CI has 2 cores)
    MAX_LEN, MAX_B, DIMS, DTYPES, EXAMPLES = 64, 4, (16, 32), (torch.float32, torch.bfloat16), 4


@st.composite
def cases(draw):
    b = draw(st.integers(1, MAX_B))
    heads = draw(st.integers(1, 8 if CUDA else 2))
    top = draw(st.sampled_from([16, 64, 256, 1024, MAX_LEN] if CUDA else [16, MAX_LEN]))
    top = min(top, MAX_LEN)
    # keep the padded fp32 reference ([B, H, L, L]) within ~1 GiB
    while b * heads * top * top > (1 << 28) and b > 1:
        b -= 1
    lengths = [draw(st.integers(0, top)) for _ in range(b)]
    if draw(st.booleans()):
        lengths[draw(st.integers(0, b - 1))] = top
    use_targets = draw(st.booleans())
    nt = [draw(st.integers(0, min(64, n))) for n in lengths] if use_targets else None
    d_qk = draw(st.sampled_from(DIMS))
    d_v = draw(st.sampled_from([d_qk, *DIMS]))
    dtype = draw(st.sampled_from(DTYPES))
    rab = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return lengths, nt, heads, d_qk, d_v, dtype, rab, seed


# no shrinking: each example runs kernels (slow under the interpreter); the failure message names
# the case in full
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not CUDA,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_matches_reference_random_shapes(case):
    _check_case(*case)


# Fixed cases: every mask range of the kernels (full, causal edge, history end, target diagonal,
# all-target and empty sequences) and several block shapes.
FIXED = [
    ([37, 0, 20, 5, 64], [3, 0, 20, 0, 9]),  # a sequence of only targets, an empty one
    ([64, 50, 1], None),
    ([48, 33], [0, 33]),
]
BLOCKS_CPU = [
    {"fwd": (16, 16, 1, 1), "bwd": (16, 16, 1, 1), "dq": (16, 16, 1, 1)},
    {"fwd": (32, 16, 1, 1), "bwd": (16, 32, 1, 1), "dq": (16, 32, 1, 1)},
    {"fwd": (16, 32, 1, 1), "bwd": (32, 16, 1, 1), "dq": (32, 16, 1, 1)},
]


def _block_options(blocks: dict, **kw) -> HstuKernelOptions:
    return HstuKernelOptions(**{f"{kind}_config": cfg for kind, cfg in blocks.items()}, **kw)


@pytest.mark.skipif(CUDA, reason="interpreter block-shape sweep (GPU runs its own configs)")
@pytest.mark.parametrize("blocks,dq_mode", list(zip(BLOCKS_CPU, ["kernel", "atomic", "kernel"], strict=True)))
def test_block_shapes_and_dq_modes_interpreter(blocks, dq_mode):
    lengths, nt = FIXED[0]
    _check_case(lengths, nt, 2, 16, 32, torch.float32, True, seed=1, options=_block_options(blocks, dq_mode=dq_mode))


@pytest.mark.skipif(CUDA, reason="the GPU runs the tanh form with tanh.approx in every bf16 test")
@pytest.mark.parametrize("rab", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("dq_mode", ["kernel", "atomic"])
def test_tanh_form_interpreter(rab, dq_mode):
    """The bf16 GPU path writes silu and its gradient in t = tanh(s/2) (FAST=1, tanh.approx), which
    the interpreter cannot run; silu="tanh_exact" (FAST=2) is the same algebra with an exact tanh.
    In fp32 it must match
    the reference: the halved score (the bias table halved with it: forward and dq kernel), p and
    2 silu' (every kernel; the dk/dv kernel with no bias - with bias gradients it keeps the exact
    sigmoid), and the factor 2 taken out of dk, dq (kernel and atomics)."""
    assert hk._fast(torch.float32, DEV, "tanh_exact") == 2
    lengths, nt = FIXED[0]
    options = HstuKernelOptions(silu="tanh_exact", dq_mode=dq_mode)
    _check_case(lengths, nt, 2, 16, 32, torch.float32, rab, seed=2, options=options)


@pytest.mark.gpu  # tanh.approx runs on a GPU only
@pytest.mark.parametrize("form", ["fast", "exact", "tanh_exact"])
def test_silu_forms_gpu(form):
    """options.silu: the tanh form with tanh.approx (default), the exact sigmoid, the tanh form with
    an exact tanh."""
    lengths, nt = [1000, 513, 64, 0], [32, 0, 64, 0]
    _check_case(lengths, nt, 2, 128, 64, torch.bfloat16, False, seed=5, options=HstuKernelOptions(silu=form))


def test_silu_form_switch_is_validated():
    with pytest.raises(ValueError, match="HstuKernelOptions.silu='tanh'; allowed: fast, exact, tanh_exact"):
        HstuKernelOptions(silu="tanh")
    with pytest.raises(ValueError, match="ROO_HSTU_FAST='tanh'; allowed: 1, 0"):
        HstuKernelOptions.from_env({"ROO_HSTU_FAST": "tanh"})
    assert HstuKernelOptions.from_env({"ROO_HSTU_FAST": "0"}).silu == "exact"
    # the form the kernels run: tanh.approx only for bf16 on a GPU, outside the interpreter
    assert hk._fast(torch.bfloat16, torch.device("cpu"), "fast") == 0
    assert hk._fast(torch.float32, torch.device("cpu"), "exact") == 0


@pytest.mark.parametrize("mode", ["reduce", "atomic"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chronological", [False, True])
def test_time_gradient_modes(mode, dtype, chronological, monkeypatch):
    """Both time-bucket gradient modes give the reference's gradients - "reduce" (the default: per-tile
    sums per time bucket, then one atomic per bucket) and "atomic" (one per pair) - with random
    timestamps (a tile spans many buckets) and chronological ones (a tile spans a few)."""
    if chronological:
        real_make = _make

        def make_sorted(*a, **kw):
            off, q, k, v, nt, extra, dout = real_make(*a, **kw)
            ts = extra["timestamps"].clone()
            for s0, s1 in zip(off[:-1].tolist(), off[1:].tolist(), strict=True):
                ts[s0:s1] = ts[s0:s1].sort().values
            return off, q, k, v, nt, {**extra, "timestamps": ts}, dout

        monkeypatch.setitem(globals(), "_make", make_sorted)
    lengths, nt = FIXED[0]
    _check_case(lengths, nt, 2, 16, 32, dtype, True, seed=4, options=HstuKernelOptions(time_grad=mode))


def test_config_from_environment():
    options = HstuKernelOptions.from_env({"ROO_HSTU_BWD_CONFIG": "32,128,8,2", "OTHER": "x"})
    assert options.config("bwd") == (32, 128, 8, 2) and options.config("fwd") is None
    assert hk._configs("bwd", options) == [(32, 128, 8, 2)]
    with pytest.raises(ValueError, match="ROO_HSTU_BWD_CONFIG='32,128': want BLOCK_M,BLOCK_N"):
        HstuKernelOptions.from_env({"ROO_HSTU_BWD_CONFIG": "32,128"})


def test_default_configs_follow_the_dq_mode(monkeypatch):
    """The dk/dv kernel's default config depends on where dq is summed (its atomics spill the small
    one); the options may name only some kernels' configs, the others keep their defaults."""
    monkeypatch.setattr(hk, "_interpreting", lambda: False)
    default = HstuKernelOptions()
    assert hk._configs("bwd", default, atomic_dq=True) == [hk._DEFAULTS["bwd"]]
    assert hk._configs("bwd", default, atomic_dq=False) == [hk._DEFAULT_BWD_DQ_KERNEL] != [hk._DEFAULTS["bwd"]]
    # the forward's default by length: three small programs per SM below SHORT_LEN
    assert hk._configs("fwd", default, max_len=hk.SHORT_LEN - 1) == [hk._DEFAULT_FWD_SHORT] != [hk._DEFAULTS["fwd"]]
    assert hk._configs("fwd", default, max_len=hk.SHORT_LEN) == [hk._DEFAULTS["fwd"]]
    forced = HstuKernelOptions(fwd_config=(32, 32, 4, 2))
    assert hk._configs("fwd", forced, max_len=64) == [(32, 32, 4, 2)] and hk._configs("dq", forced) == [
        hk._DEFAULTS["dq"]
    ]
    assert hk._configs("dq", HstuKernelOptions(autotune=True)) == hk._TUNE["dq"]
    # the dq mode picks where dq is summed by length ("auto": atomics from L = 2048 on)
    assert (default.atomic_dq(2047), default.atomic_dq(2048)) == (False, True)
    assert HstuKernelOptions(dq_mode="kernel").atomic_dq(4096) is False
    assert HstuKernelOptions(dq_mode="atomic").atomic_dq(16) is True


@pytest.mark.parametrize(
    "var,value,message",
    [
        ("ROO_HSTU_TIME_GRAD", "fast", "ROO_HSTU_TIME_GRAD='fast'; allowed: reduce, atomic"),
        ("ROO_HSTU_DQ", "both", "ROO_HSTU_DQ='both'; allowed: auto, kernel, atomic"),
        ("ROO_HSTU_AUTOTUNE", "yes", "ROO_HSTU_AUTOTUNE='yes'; allowed: 1, 0"),
        ("ROO_HSTU_ONE_LOOP", "1", "unknown kernel variable ROO_HSTU_ONE_LOOP; known: ROO_HSTU_AUTOTUNE"),
    ],
)
def test_kernel_switches_are_validated(var, value, message):
    """Environment variables are parsed (once, by the caller) into options, and a bad value or an
    unknown name is an error naming it; the kernel module itself reads none, even at import."""
    with pytest.raises(ValueError, match=message):
        HstuKernelOptions.from_env({var: value})
    env = {**os.environ, var: value, "TRITON_INTERPRET": "1"}
    r = subprocess.run(
        [sys.executable, "-c", "import roo_ref.kernels.hstu_attention"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"dq_mode": "fast"}, "HstuKernelOptions.dq_mode='fast'; allowed: auto, kernel, atomic"),
        ({"time_grad": "sum"}, "HstuKernelOptions.time_grad='sum'; allowed: reduce, atomic"),
        ({"autotune": 1}, "HstuKernelOptions.autotune=1; allowed: True, False"),
        ({"bwd_config": (64, 64)}, r"HstuKernelOptions.bwd_config=\(64, 64\); allowed: None or 4 positive ints"),
        ({"fwd_config": "64,64,4"}, "HstuKernelOptions.fwd_config='64,64,4': want BLOCK_M,BLOCK_N"),
    ],
)
def test_options_are_validated_on_construction(kw, message):
    with pytest.raises(ValueError, match=message):
        HstuKernelOptions(**kw)


def test_options_round_trip_and_are_frozen():
    options = HstuKernelOptions(dq_mode="kernel", bwd_config=[64, 64, 4, 2], fwd_config="64,32,4,3")
    assert options.bwd_config == (64, 64, 4, 2) and options.fwd_config == (64, 32, 4, 3)
    d = options.to_dict()
    assert d["bwd_config"] == [64, 64, 4, 2] and d["dq_config"] is None and d["silu"] == "fast"
    assert HstuKernelOptions.from_dict(d) == options
    assert options.replace(dq_mode="atomic").dq_mode == "atomic" and options.dq_mode == "kernel"
    with pytest.raises(AttributeError):
        options.dq_mode = "atomic"  # type: ignore[misc]
    with pytest.raises(TypeError, match="options must be a HstuKernelOptions"):
        hk.hstu_attention_triton(*_good(), 6, 1.0, 6.0, options={"dq_mode": "kernel"})


def test_compiled_kernels_land_in_the_callers_dict():
    """compiled=: each launched kernel by kind, in a dict the caller owns (no module state)."""
    q, k, v, off = _good()
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    compiled: dict = {}
    out = hk.hstu_attention_triton(q, k, v, off, 6, 1.0, 6.0, options=HstuKernelOptions(dq_mode="kernel"),
                                   compiled=compiled)  # fmt: skip
    assert set(compiled) == {"fwd"}
    out.sum().backward()
    assert set(compiled) == {"fwd", "bwd", "dq"}


@pytest.mark.parametrize(
    "lengths,nt,dtype", [(*c, DTYPES[i % 2]) for i, c in enumerate(FIXED)] + [(*FIXED[0], DTYPES[1])]
)
def test_fixed_cases(lengths, nt, dtype):
    _check_case(lengths, nt, 2, DIMS[-1], DIMS[0], dtype, True, seed=2)


@pytest.mark.gpu  # large shapes need a GPU
@pytest.mark.parametrize("dq_mode", ["kernel", "atomic"])
@pytest.mark.parametrize("lengths,nt", [([4096, 4096], [32, 0]), ([4096, 2048, 3000, 0, 17], [64, 32, 0, 0, 17])])
def test_long_sequences_gpu(lengths, nt, dq_mode):
    options = HstuKernelOptions(dq_mode=dq_mode)
    _check_case(lengths, nt, 4, 128, 128, torch.bfloat16, False, seed=3, options=options)
    _check_case(lengths, nt, 2, 128, 128, torch.bfloat16, True, seed=4, options=options)


@pytest.mark.gpu  # the autotuner runs on a GPU only
def test_autotuned_backward_twice_on_one_graph():
    """options.autotune: the autotuner zeroes the atomic targets before its trials; a second
    backward of the same graph (retain_graph, as the benchmark times it) must still work, and give
    the same gradients."""
    lengths, nt = [300, 129, 0, 77], [5, 0, 0, 77]
    off = offsets_from_lengths(torch.tensor(lengths)).to(DEV)
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(sum(lengths), 2, 64, generator=g).to(DEV, torch.bfloat16).requires_grad_() for _ in range(3))
    out = hk.hstu_attention_triton(
        q, k, v, off, 300, 0.125, 300.0, torch.tensor(nt, device=DEV), options=HstuKernelOptions(autotune=True)
    )
    dout = torch.randn_like(out)
    first = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    second = torch.autograd.grad(out, (q, k, v), dout)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-2)


def test_dispatcher_and_roo_identity():
    """backend='triton' through the dispatcher; one request sequence (history + k targets) gives the
    outputs of k impression sequences (history + 1 target) - the identity the project measures."""
    dtype = torch.float32
    g = torch.Generator().manual_seed(5)
    hist, kt, H, d = 21, 3, 2, 16
    q = torch.randn(hist + kt, H, d, generator=g)
    k = torch.randn(hist + kt, H, d, generator=g)
    v = torch.randn(hist + kt, H, d, generator=g)
    off = torch.tensor([0, hist + kt])
    out = hstu_attention(
        q.to(DEV, dtype),
        k.to(DEV, dtype),
        v.to(DEV, dtype),
        off.to(DEV),
        hist + kt,
        0.5,
        30.0,
        torch.tensor([kt], device=DEV),
        backend="triton",
    ).cpu()
    for t in range(kt):
        idx = list(range(hist)) + [hist + t]
        o1 = hk.hstu_attention_triton(
            q[idx].to(DEV),
            k[idx].to(DEV),
            v[idx].to(DEV),
            torch.tensor([0, hist + 1], device=DEV),
            hist + 1,
            0.5,
            30.0,
            torch.tensor([1], device=DEV),
        ).cpu()
        torch.testing.assert_close(o1[hist], out[hist + t], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(o1[:hist], out[:hist], rtol=1e-5, atol=1e-6)


def test_dispatcher_passes_the_kernel_options(monkeypatch):
    """hstu_attention(kernel_options=...) reaches the Triton kernel (None: its defaults); the torch
    backend takes and ignores them."""
    seen = []
    real = hk.hstu_attention_triton
    monkeypatch.setattr(hk, "hstu_attention_triton", lambda *a, **kw: seen.append(kw["options"]) or real(*a, **kw))
    q, k, v, off = _good()
    options = HstuKernelOptions(dq_mode="kernel")
    out = hstu_attention(q, k, v, off, 6, 1.0, 6.0, backend="triton", kernel_options=options)
    hstu_attention(q, k, v, off, 6, 1.0, 6.0, backend="triton")
    assert seen == [options, None]
    ref = hstu_attention(q, k, v, off, 6, 1.0, 6.0, kernel_options=options)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# bad input: ValueError before any launch


@pytest.fixture
def no_launch(monkeypatch):
    def boom(kind, *args, **kwargs):
        raise AssertionError(f"kernel {kind} launched on bad input")

    monkeypatch.setattr(hk, "_kernel", boom)


def _good(total=10, H=2, d=16, dtype=torch.float32):
    q = torch.randn(total, H, d, dtype=dtype, device=DEV)
    return q, q.clone(), q.clone(), torch.tensor([0, 4, total], device=DEV)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: {**a, "k": a["k"][:, :1]}, "q and k must have the same shape"),
        (lambda a: {**a, "v": a["v"].double()}, "dtypes differ"),
        (lambda a: {**a, "seq_offsets": torch.tensor([0, 7, 4, 10], device=DEV)}, "non-decreasing"),
        (lambda a: {**a, "seq_offsets": torch.tensor([0, 4, 9], device=DEV)}, "end at the token count 10"),
        (
            lambda a: {**a, "num_targets": torch.tensor([5, 0], device=DEV)},
            r"num_targets must be in \[0, sequence length\]",
        ),
        (
            lambda a: {**a, "q": a["q"][..., :12], "k": a["k"][..., :12]},
            "unsupported q/k head dim 12; allowed: 16, 32, 64, 128",
        ),
        (lambda a: {**a, "v": torch.randn(10, 2, 256, device=DEV)}, "unsupported v head dim 256"),
        (lambda a: {**a, "max_seq_len": 5}, "longer than max_seq_len=5"),
        (lambda a: {**a, "pos_weights": torch.randn(8, device=DEV)}, "pos_weights given without positions"),
        (
            lambda a: {
                **a,
                "timestamps": torch.zeros(9, dtype=torch.int64, device=DEV),
                "time_weights": torch.randn(8, device=DEV),
            },
            r"timestamps must have one entry per token \(10\)",
        ),
    ],
)
def test_bad_input_raises_before_launch(mutate, match, no_launch):
    q, k, v, off = _good()
    a = dict(
        q=q,
        k=k,
        v=v,
        seq_offsets=off,
        max_seq_len=6,
        alpha=1.0,
        normalizer=6.0,
        num_targets=None,
        positions=None,
        timestamps=None,
        pos_weights=None,
        time_weights=None,
    )
    a = mutate(a)
    with pytest.raises(ValueError, match=match):
        hk.hstu_attention_triton(**a)


def test_check_values_false_keeps_shape_checks_and_skips_the_host_copy(monkeypatch, no_launch):
    """check_values=False (the HSTU model's call: its offsets are valid by construction) drops the
    value checks and with them the device->host copy, i.e. the per-call sync; shape and dtype
    errors are still raised before any launch."""
    q, k, v, off = _good()
    with pytest.raises(ValueError, match="q and k must have the same shape"):
        hk.hstu_attention_triton(q, k[:, :1], v, off, 6, 1.0, 6.0, check_values=False)
    with pytest.raises(ValueError, match="unsupported q/k head dim 12"):
        hk.hstu_attention_triton(q[..., :12], k[..., :12], v, off, 6, 1.0, 6.0, check_values=False)
    copies = []
    real_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **kw: copies.append(1) or real_cpu(self, *a, **kw))
    bad = torch.tensor([0, 7, 4, 10], device=DEV)  # decreasing: only a value check can see it
    with pytest.raises(AssertionError, match="launched"):  # reached the launch: no check ran
        hk.hstu_attention_triton(q, k, v, bad, 6, 1.0, 6.0, check_values=False)
    assert copies == []
    with pytest.raises(ValueError, match="non-decreasing"):  # the default still checks, on a host copy
        hk.hstu_attention_triton(q, k, v, bad, 6, 1.0, 6.0)
    assert copies


def test_model_attention_skips_value_checks(monkeypatch):
    """The HSTU module passes check_values=False to the dispatcher (no sync per layer)."""
    from roo_ref import attention as att
    from roo_ref.models import build_model
    from roo_ref.models import hstu as hstu_mod
    from workloads.generator import generate
    from workloads.presets import get_preset

    seen = []
    monkeypatch.setattr(hstu_mod, "hstu_attention", lambda *a, **kw: seen.append(kw) or att.hstu_attention(*a, **kw))
    spec = get_preset("hstu-ranking")
    model = build_model(spec, preset="hstu-ranking", overrides=["hstu_layers=1", "max_table_rows=64"])
    rb = generate(spec, 2, seed=0)
    model(rb, "roo")
    assert seen and all(kw.get("check_values") is False for kw in seen)


def test_integer_dtype_rejected(no_launch):
    q, k, v, off = _good()
    qi = q.to(torch.int32)
    with pytest.raises(ValueError, match="unsupported dtype torch.int32"):
        hk.hstu_attention_triton(qi, qi, qi, off, 6, 1.0, 6.0)


def test_empty_batch_and_zero_tokens():
    q = torch.randn(0, 2, 16, device=DEV, requires_grad=True)
    off = torch.tensor([0, 0, 0], device=DEV)
    out = hk.hstu_attention_triton(q, q, q, off, 4, 1.0, 4.0)
    assert out.shape == (0, 2, 16)
    (g,) = torch.autograd.grad(out.sum(), [q])
    assert g.shape == q.shape
