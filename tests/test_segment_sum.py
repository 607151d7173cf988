"""The Triton segmented row sum and row update (roo_ref.kernels.segment_sum) against their torch
references (roo_ref.sparse_optim): the sums per distinct id, and the fused optimizers' updates with
backend "triton" against the torch backend and against roo_ref.train.RowWiseAdagrad.

Without CUDA the kernels run through Triton's interpreter (TRITON_INTERPRET=1, set by conftest
before triton is imported) at small sizes, with small blocks so that runs of equal ids cross block
boundaries (the carry path); the GPU tests repeat the comparison at production-like sizes.
"""

from __future__ import annotations

import json

import pytest
import torch

triton = pytest.importorskip("triton")

from roo_ref.kernels.segment_sum import apply_update, segment_sum  # noqa: E402
from roo_ref.sparse_optim import (  # noqa: E402
    FusedRowWiseAdagrad,
    FusedSparseSGD,
    RowGrads,
    RowGradSource,
    _sorted_segments,
    rowwise_adagrad_update,
    segment_sum_reference,
    sgd_update,
)
from roo_ref.train import RowWiseAdagrad  # noqa: E402

CUDA = torch.cuda.is_available()
DEV = torch.device("cuda" if CUDA else "cpu")
SMALL = (16, 8, 4)  # BLOCK positions, BLOCK_D columns, warps: runs cross blocks at small nnz


def zipf_ids(n: int, rows: int, gen: torch.Generator, a: float = 1.2) -> torch.Tensor:
    """Ids with Zipf-like duplicates: P(rank r) ~ 1 / r^a, ranks shuffled over the rows."""
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    p = 1.0 / torch.arange(1, rows + 1, dtype=torch.float64) ** a
    ranks = torch.multinomial(p, n, replacement=True, generator=gen)
    return torch.randperm(rows, generator=gen)[ranks]


def _lookup(kind: str, ids: torch.Tensor, dim: int, dtype: torch.dtype, gen: torch.Generator) -> RowGradSource:
    """A lookup's gradient source: plain (a row per id), bags summed (src = the bag of each id), or
    bags averaged (src + a 1/length scale per bag)."""
    n = ids.numel()
    if kind == "plain":
        return RowGradSource(ids, torch.randn(n, dim, generator=gen).to(dtype))
    bags = max(1, n // 3)
    bag = torch.sort(torch.randint(0, bags, (n,), generator=gen)).values
    grad = torch.randn(bags, dim, generator=gen).to(dtype)
    if kind == "sum":
        return RowGradSource(ids, grad, bag)
    lengths = torch.bincount(bag, minlength=bags)
    return RowGradSource(ids, grad, bag, (1 / lengths.to(dtype)))


def _to(src: RowGradSource, device) -> RowGradSource:
    def mv(t):
        return None if t is None else t.to(device)

    return RowGradSource(src.ids.to(device), src.grad.to(device), mv(src.src), mv(src.scale))


def _tol(dtype: torch.dtype, n: int) -> float:
    # fp32 sums in a different order: ~ n * 2^-24 * |partial sums|; bf16 inputs are exact in fp32
    return 1e-5 * max(1.0, n**0.5)


def _check_sums(src: RowGradSource, zero_tail: bool, config=SMALL) -> tuple[torch.Tensor, int]:
    sorted_ids, perm, seg = _sorted_segments(src.ids)
    out, uniq = segment_sum(src.grad, src.src, src.scale, perm, seg, sorted_ids, zero_tail=zero_tail, config=config)
    ref = segment_sum_reference(src.grad, src.src, src.scale, perm, seg)
    n = src.nnz
    u = int(seg[-1]) + 1 if n else 0
    assert out.shape == (n, src.grad.shape[1]) and out.dtype == torch.float32
    expect_uniq = torch.unique(src.ids, sorted=True)
    assert torch.equal(uniq[:u].cpu(), expect_uniq.cpu())
    tol = _tol(src.grad.dtype, n)
    torch.testing.assert_close(out[:u], ref[:u], rtol=tol, atol=tol)
    if zero_tail:
        assert (out[u:] == 0).all() and (uniq[u:] == 0).all()
    return out, u


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["plain", "sum", "mean"])
def test_segment_sum_equals_reference_on_zipf_ids(kind, dtype):
    gen = torch.Generator().manual_seed(hash((kind, str(dtype))) % 2**31)
    ids = zipf_ids(300, 60, gen)
    src = _to(_lookup(kind, ids, 12, dtype, gen), DEV)  # dim 12: a partial column block
    out, u = _check_sums(src, zero_tail=True)
    assert u < 150 and out[:u].abs().sum() > 0  # heavy duplicates, summed into fewer rows


@pytest.mark.parametrize("n", [1, 15, 16, 17, 200])
def test_one_id_repeated_is_one_run_over_many_blocks(n):
    """All ids equal: one run crossing every block; its sum gathers n - 1 carries."""
    gen = torch.Generator().manual_seed(n)
    src = _to(_lookup("sum", torch.full((n,), 5), 8, torch.float32, gen), DEV)
    out, u = _check_sums(src, zero_tail=True)
    assert u == 1
    sorted_ids, perm, seg = _sorted_segments(src.ids)
    expect = src.grad.double().index_select(0, src.src).sum(0).float()
    torch.testing.assert_close(out[0], expect, rtol=1e-5, atol=1e-5)


def test_distinct_ids_and_the_default_config():
    gen = torch.Generator().manual_seed(3)
    ids = torch.randperm(257, generator=gen)
    src = _to(_lookup("plain", ids, 5, torch.float32, gen), DEV)
    out, u = _check_sums(src, zero_tail=False, config=(128, 64, 4))
    assert u == 257
    torch.testing.assert_close(out[src.ids], src.grad, rtol=0, atol=0)  # slot = id here: one row each


def test_empty_lookup_and_nnz_zero():
    for src in (
        RowGradSource(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4)),
        RowGradSource(torch.zeros(0, dtype=torch.int64), torch.randn(3, 4), torch.zeros(0, dtype=torch.int64)),
    ):
        src = _to(src, DEV)
        sorted_ids, perm, seg = _sorted_segments(src.ids)
        out, uniq = segment_sum(src.grad, src.src, None, perm, seg, sorted_ids, zero_tail=True)
        assert out.shape == (0, 4) and uniq.shape == (0,)
        w = torch.randn(6, 4, device=DEV)
        w0 = w.clone()
        rowwise_adagrad_update(w, torch.zeros(6, device=DEV), [src], 0.1, 1e-8, backend="triton")
        sgd_update(w, [src], 0.1, backend="triton")
        assert torch.equal(w, w0)


def test_bad_inputs_are_one_line_errors():
    ids = torch.tensor([1, 1, 2])
    sorted_ids, perm, seg = _sorted_segments(ids)
    with pytest.raises(ValueError, match="without src, grad needs one row per id: 2 rows for 3 ids"):
        segment_sum(torch.randn(2, 4), None, None, perm, seg, sorted_ids)
    with pytest.raises(ValueError, match="grad dtype torch.float64"):
        segment_sum(torch.randn(3, 4).double(), None, None, perm, seg, sorted_ids)
    with pytest.raises(ValueError, match="scale has 2 entries for 3 gradient rows"):
        segment_sum(torch.randn(3, 4), None, torch.ones(2), perm, seg, sorted_ids)
    out, uniq = segment_sum(torch.randn(3, 4), None, None, perm, seg, sorted_ids)
    with pytest.raises(ValueError, match="state must be fp32"):
        apply_update(torch.randn(5, 4), torch.zeros(5).double(), out, uniq, seg, 0.1, 1e-8)
    with pytest.raises(ValueError, match="the triton backend takes fp32/bf16/fp16"):
        sgd_update(torch.randn(5, 4).double(), [RowGradSource(ids, torch.randn(3, 4).double())], 0.1, "triton")
    with pytest.raises(ValueError, match="backend='cuda'; allowed: auto, triton, torch"):
        FusedSparseSGD([torch.nn.Parameter(torch.randn(5, 4))], [RowGrads()], backend="cuda")


def _lookups(step: int, n_rows: int, dim: int, dtype: torch.dtype) -> list[RowGradSource]:
    """A table read three ways in one step (as the item table: history bags by mean, candidates
    plain, plus sum bags), Zipf ids."""
    gen = torch.Generator().manual_seed(100 + step)
    return [
        _lookup(kind, zipf_ids(n, n_rows, gen), dim, dtype, gen)
        for kind, n in (("mean", 90), ("plain", 40), ("sum", 60))
    ]


def _run_updates(backend: str, w0: torch.Tensor, steps: int, dim: int):
    """(Adagrad weights, accumulators, SGD weights) after `steps` steps of _lookups."""
    w, state, sgd = w0.clone(), torch.zeros(w0.shape[0], device=w0.device), w0.clone()
    for step in range(steps):
        parts = [_to(p, w0.device) for p in _lookups(step, w0.shape[0], dim, torch.float32)]
        rowwise_adagrad_update(w, state, parts, 0.05, 1e-8, backend=backend)
        sgd_update(sgd, parts, 0.05, backend=backend)
    return w, state, sgd


def test_triton_updates_equal_the_torch_backend():
    """rowwise_adagrad_update / sgd_update over steps: the Triton backend (segmented sums, fp32
    products) and the torch backend (rows materialized, index_add_) agree within fp32 summation
    error on fp32 weights; on bf16 weights each is within one bf16 rounding per step of the fp64
    update, the Triton one no further than the torch one."""
    torch.manual_seed(0)
    n_rows, dim, steps = 80, 6, 3
    w0 = torch.randn(n_rows, dim, device=DEV)
    trit, ref = _run_updates("triton", w0, steps, dim), _run_updates("torch", w0, steps, dim)
    for a, b in zip(trit, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5)
    moved = (trit[0] != w0).any(1)
    assert moved.any() and not moved.all()  # sparse: untouched rows keep their weights
    exact = _run_updates("torch", w0.double(), steps, dim)
    w_bf = w0.bfloat16()
    trit, ref = _run_updates("triton", w_bf, steps, dim), _run_updates("torch", w_bf, steps, dim)
    for i in (0, 2):  # the weights of Adagrad and of SGD
        err_t = ((trit[i].double() - exact[i]) / exact[i].abs().clamp_min(1)).abs().max()
        err_r = ((ref[i].double() - exact[i]) / exact[i].abs().clamp_min(1)).abs().max()
        assert err_t <= steps * 2**-8 and err_t <= err_r + 2**-8, (i, float(err_t), float(err_r))


@pytest.mark.parametrize("g_dtype", [torch.float32, torch.bfloat16])
def test_fused_optimizer_on_triton_equals_the_reference_optimizer(g_dtype):
    """FusedRowWiseAdagrad(backend="triton") from RowGrads against RowWiseAdagrad from the COO
    gradient autograd would build, over steps; bf16 gradients exercise the kernel's casts."""
    torch.manual_seed(1)
    n_rows, dim = 70, 4
    w0 = torch.randn(n_rows, dim, device=DEV)
    ref, fused = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    sink = RowGrads()
    opt_ref, opt = RowWiseAdagrad([ref], lr=0.05), FusedRowWiseAdagrad([fused], [sink], lr=0.05, backend="triton")
    for step in range(3):
        opt.zero_grad()
        parts = [_to(p, DEV) for p in _lookups(step, n_rows, dim, g_dtype)]
        for i, p in enumerate(parts):
            sink.add_source(p, side=("user", "item", None)[i])
        assert sink.nnz_by_side() == {"user": 90, "item": 40, None: 60}
        ids = torch.cat([p.ids for p in parts])
        # the products in fp32, as the kernel forms them (ATen's mean backward rounds them to bf16)
        as_fp32 = [
            RowGradSource(p.ids, p.grad.float(), p.src, None if p.scale is None else p.scale.float()) for p in parts
        ]
        rows = torch.cat([p.rows(torch.float32) for p in as_fp32])
        ref.grad = torch.sparse_coo_tensor(ids[None], rows, (n_rows, dim))
        opt_ref.step()
        opt.step()
        assert len(sink) == 0
        torch.testing.assert_close(fused.detach(), ref.detach(), rtol=2e-5, atol=2e-5)
        torch.testing.assert_close(opt.state[fused]["sum"], opt_ref.state[ref]["sum"], rtol=1e-5, atol=1e-6)


# --- on the GPU, at the sizes of a production step ---------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["plain", "sum", "mean"])
def test_cuda_segment_sum_at_scale(kind, dtype):
    gen = torch.Generator().manual_seed(7)
    ids = zipf_ids(1 << 20, 1 << 18, gen)
    ids[: 1 << 16] = 3  # one run over 512 blocks of the default config
    src = _to(_lookup(kind, ids, 128, dtype, gen), "cuda")
    for config in ((128, 64, 4), (64, 128, 8)):
        _check_sums(src, zero_tail=True, config=config)


def _update_against_fp64(w_dtype, dev: str, n_rows: int, nnz: int, dim: int) -> None:
    """One row-wise Adagrad step, bf16 gradients, both backends sync-free (on CUDA); each against
    the update of the same gradients in fp64 (the mean bags' 1/length products exact, the sums in
    fp64, rounded once to the fp32 accumulator). The torch backend rounds those products to bf16 as
    ATen's mean backward does, the kernel keeps them in fp32, so the kernel is held to GR's rule:
    within 2x the torch backend's error."""
    gen = torch.Generator().manual_seed(8)
    parts = [_to(_lookup(k, zipf_ids(nnz, n_rows, gen), dim, torch.bfloat16, gen), dev) for k in ("mean", "plain")]
    w0 = torch.randn(n_rows, dim, generator=gen).to(w_dtype).to(dev)
    cuda = dev == "cuda"
    out = {}
    for b in ("torch", "triton"):
        w, state = w0.clone(), torch.zeros(n_rows, device=dev)
        rowwise_adagrad_update(w, state, parts, 0.05, 1e-8, backend=b)  # warm-up: compilation
        w, state = w0.clone(), torch.zeros(n_rows, device=dev)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            rowwise_adagrad_update(w, state, parts, 0.05, 1e-8, backend=b)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
        out[b] = (w.double(), state.double())
    exact_parts = [
        RowGradSource(p.ids, p.grad.double(), p.src, None if p.scale is None else p.scale.double()) for p in parts
    ]
    w64, s32 = w0.double(), torch.zeros(n_rows, device=dev)  # the accumulator is fp32 in every path
    rowwise_adagrad_update(w64, s32, exact_parts, 0.05, 1e-8, backend="torch")
    for i, exact in enumerate((w64, s32.double())):
        scale = exact.abs().clamp_min(1)
        err = {b: float(((out[b][i] - exact) / scale).abs().max()) for b in out}
        floor = 2**-8 if (i == 0 and w_dtype == torch.bfloat16) else 1e-6  # one bf16 rounding of a weight
        assert err["triton"] <= 2 * err["torch"] + floor, (i, err)
        assert err["torch"] <= 2**-7, (i, err)  # the reference itself is near the exact update


@pytest.mark.parametrize("w_dtype", [torch.float32, torch.bfloat16])
def test_update_equals_the_fp64_update_within_grs_rule(w_dtype):
    _update_against_fp64(w_dtype, "cpu", n_rows=300, nnz=2000, dim=8)


@pytest.mark.gpu
@pytest.mark.parametrize("w_dtype", [torch.float32, torch.bfloat16])
def test_cuda_update_at_scale_is_sync_free_and_equals_torch(w_dtype):
    """At a production step's size (2^19 ids per lookup over 2^18 rows, dim 64)."""
    _update_against_fp64(w_dtype, "cuda", n_rows=1 << 18, nnz=1 << 19, dim=64)


def test_benchmark_cli_checks_its_configs_and_needs_cuda(capsys):
    from benchmarks import segment_sum as bench

    assert bench.parse_configs("128,64,4; 64,128,8") == [(128, 64, 4), (64, 128, 8)]
    for bad in ("128,64", "a,b,c", "0,64,4", ""):
        with pytest.raises(SystemExit, match="want BLOCK,BLOCK_D,warps"):
            bench.parse_configs(bad)
    if not CUDA:
        assert bench.main(["--nnz", "64"]) == 2 and "needs a CUDA device" in capsys.readouterr().err
    # the whole benchmark at a tiny size (through the interpreter without CUDA)
    args = bench._parser().parse_args(["--nnz", "96", "--rows", "50", "--dim", "8", "--configs", "16,8,4"])
    args.warmup, args.reps = 0, 1
    rec = bench.run(args, device=str(DEV))
    names = [r["name"] for r in rec["results"]]
    assert names == ["sum index_add_", "sum triton 16,8,4", "update torch", "update triton"]
    assert 0 < rec["distinct"] < 96 and rec["floor_gb"] > 0


@pytest.mark.gpu
def test_benchmark_runs_small(tmp_path):
    from benchmarks import segment_sum as bench

    out = tmp_path / "seg.json"
    assert bench.main(["--nnz", "65536", "--rows", "4096", "--reps", "2", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert {r["name"] for r in rec["results"]} >= {"sum index_add_", "update torch", "update triton"}
