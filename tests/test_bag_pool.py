"""The Triton pooled embedding-bag forward (roo_ref.kernels.bag_pool) against F.embedding_bag, and
its use in roo_ref.sparse_optim's row-gradient lookup.

Without CUDA the kernels run through Triton's interpreter (TRITON_INTERPRET=1, set by conftest
before triton is imported) at small sizes, with small blocks so that bags cross block boundaries
(the finishing kernel's path, including its chunked loop over a long bag's blocks); the GPU tests
repeat the comparison at the size of a ROO history lookup.

The reference sums in fp32 as ATen does (the weight cast to fp32, then the result cast back): an
fp32 result may differ from it by the summation order's rounding, a bf16 / fp16 one by one unit in
the last place of the cast on top of that.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional as F

triton = pytest.importorskip("triton")

from roo_ref.kernels.bag_pool import DEFAULT_CONFIG, bag_pool  # noqa: E402
from roo_ref.sparse_optim import POOL_MIN_MEAN_BAG, RowGrads, _pool_with_triton, row_grad_lookup  # noqa: E402

CUDA = torch.cuda.is_available()
DEV = torch.device("cuda" if CUDA else "cpu")
SMALL = (16, 8, 4)  # BLOCK positions, BLOCK_D columns, warps: bags cross blocks at small nnz


def make_bags(lengths, rows: int, dim: int, dtype: torch.dtype, gen: torch.Generator, index=torch.int64):
    """(weight [rows, dim] N(0, 1), ids, offsets [bags + 1], bag [nnz]) on DEV for bag lengths."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    nnz = int(offsets[-1])
    bag = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    ids = torch.randint(0, rows, (nnz,), generator=gen)
    weight = torch.randn(rows, dim, generator=gen).to(dtype)
    return weight.to(DEV), ids.to(index).to(DEV), offsets.to(index).to(DEV), bag.to(index).to(DEV)


def lognormal_lengths(bags: int, mean: float, gen: torch.Generator, sigma: float = 1.0) -> torch.Tensor:
    """Bag lengths with the given mean, lognormal (long tail, some empty bags at small means)."""
    mu = math.log(mean) - sigma**2 / 2
    return torch.exp(mu + sigma * torch.randn(bags, generator=gen, dtype=torch.float64)).round().long()


def check_pool(weight, ids, offsets, bag, mode: str, config=SMALL) -> torch.Tensor:
    """bag_pool against F.embedding_bag summed in fp32; returns the kernel's output."""
    got = bag_pool(weight, ids, offsets, bag, mode, config=config)
    bags, dim = offsets.numel() - 1, weight.shape[1]
    assert got.shape == (bags, dim) and got.dtype == weight.dtype and got.device == weight.device
    w32 = weight.float()
    ref = F.embedding_bag(ids, w32, offsets, mode=mode, include_last_offset=True)
    # the fp32 rounding of any summation order: well inside 1e-5 of the terms' magnitudes
    mag = F.embedding_bag(ids, w32.abs(), offsets, mode=mode, include_last_offset=True)
    tol = 1e-5 * mag + 1e-30
    if weight.dtype != torch.float32:
        ref = ref.to(weight.dtype)
        eps = torch.finfo(weight.dtype).eps
        tol = tol + ref.float().abs() * eps + torch.finfo(weight.dtype).tiny  # one unit in the last place
    err = (got.float() - ref.float()).abs()
    assert (err <= tol).all(), f"max error {float(err.max())}, {int((err > tol).sum())} outside the tolerance"
    if weight.dtype != torch.float32:
        # the two fp32 sums differ far below the cast's unit, so nearly every cast (correctly
        # rounded, as on the GPU) lands on the same value: truncation would miss about half
        assert (got == ref).float().mean() >= 0.95
    lengths = offsets[1:] - offsets[:-1]
    assert (got[lengths == 0] == 0).all()  # empty bags pool to 0
    return got


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_lognormal_bags_equal_embedding_bag(mode, dtype):
    gen = torch.Generator().manual_seed(hash((mode, str(dtype))) % 2**31)
    lengths = lognormal_lengths(40, 12.0, gen)
    lengths[[3, 17]] = 0
    got = check_pool(*make_bags(lengths, 90, 12, dtype, gen), mode)  # dim 12: a partial column block
    assert got.abs().sum() > 0 and int(lengths.sum()) > 10 * SMALL[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_one_huge_bag_over_many_blocks(mode, dtype):
    """700 ids in one bag: 44 blocks of 16, more than one chunk of the finishing loop; with short
    bags around it, a bag that is one block exactly and one that spans two blocks exactly."""
    gen = torch.Generator().manual_seed(5)
    got = check_pool(*make_bags([16, 32, 5, 700, 3, 0, 11], 50, 8, dtype, gen), mode)
    assert (got[:5] != 0).any(1).all()


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_many_tiny_bags_and_empty_bags_at_the_end(mode):
    gen = torch.Generator().manual_seed(6)
    lengths = torch.randint(0, 3, (500,), generator=gen)
    lengths[-7:] = 0
    got = check_pool(*make_bags(lengths, 30, 8, torch.float32, gen), mode)
    assert (got[-7:] == 0).all() and (got[lengths > 0] != 0).any(1).all()


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_fewer_ids_than_a_block_with_the_default_config(mode):
    gen = torch.Generator().manual_seed(7)
    check_pool(*make_bags([4, 0, 30, 9], 40, 5, torch.bfloat16, gen), mode, config=DEFAULT_CONFIG)


def test_fp16_int32_indices_and_strided_inputs():
    gen = torch.Generator().manual_seed(8)
    weight, ids, offsets, bag = make_bags(lognormal_lengths(30, 6.0, gen), 60, 10, torch.float16, gen, torch.int32)
    check_pool(weight, ids, offsets, bag, "mean")
    every_other = torch.stack([ids, torch.randint(0, 60, ids.shape, generator=gen).to(ids)], 1).reshape(-1)[::2]
    assert every_other.stride(0) == 2 and torch.equal(every_other, ids)
    check_pool(weight, every_other, offsets, bag, "sum")
    wide = torch.randn(60, 24, generator=gen).to(DEV)
    view = wide[:, 3:13]  # row stride 24, unit column stride
    assert not view.is_contiguous()
    got = check_pool(view, ids, offsets, bag, "sum")
    assert torch.equal(got, check_pool(view.contiguous(), ids, offsets, bag, "sum"))


def test_no_ids_and_no_bags():
    gen = torch.Generator().manual_seed(9)
    weight, ids, offsets, bag = make_bags([0, 0, 0], 10, 4, torch.float32, gen)
    out = bag_pool(weight, ids, offsets, bag, "mean")
    assert out.shape == (3, 4) and (out == 0).all()
    weight, ids, offsets, bag = make_bags([], 10, 4, torch.bfloat16, gen)
    out = bag_pool(weight, ids, offsets, bag)
    assert out.shape == (0, 4) and out.dtype == torch.bfloat16


def test_bad_inputs_are_one_line_errors():
    gen = torch.Generator().manual_seed(10)
    weight, ids, offsets, bag = make_bags([2, 3], 10, 4, torch.float32, gen)
    cases = [
        ((weight, ids, offsets, bag, "max"), "mode='max'; allowed: sum, mean"),
        ((weight.double(), ids, offsets, bag), "weight dtype torch.float64; allowed"),
        ((weight.t(), ids, offsets, bag), r"weight must be \[rows, dim\] with unit column stride"),
        ((weight, ids[None], offsets, bag), r"ids must be 1-D int32/int64, got torch.int64 of shape \(1, 5\)"),
        ((weight, ids.float(), offsets, bag), "ids must be 1-D int32/int64, got torch.float32"),
        ((weight, ids, offsets[:0], bag), r"offsets needs bags \+ 1 entries"),
        ((weight, ids, offsets, bag[:4]), "bag has 4 entries for 5 ids"),
    ]
    for args, msg in cases:
        with pytest.raises(ValueError, match=msg):
            bag_pool(*args)


# --- the row-gradient lookup of roo_ref.sparse_optim ---------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_row_grad_lookup_on_triton_equals_torch(mode, dtype, monkeypatch):
    """Forward values within the kernel's tolerance of F.embedding_bag; backward: the same
    RowGradSource reaches each backend's sink, and the weight gets no gradient."""
    import roo_ref.kernels.bag_pool as kernel

    calls = []
    monkeypatch.setattr(kernel, "bag_pool", lambda *a, **k: calls.append(1) or bag_pool(*a, **k))
    gen = torch.Generator().manual_seed(11)
    weight, ids, offsets, bag = make_bags(lognormal_lengths(25, 9.0, gen), 70, 6, dtype, gen)
    grad = torch.randn(25, 6, generator=gen).to(dtype).to(DEV)
    out, sources = {}, {}
    for backend in ("triton", "torch"):
        w = torch.nn.Parameter(weight.clone())
        sink = RowGrads(backend)
        pooled = row_grad_lookup(w, ids, sink, offsets, bag, mode)
        assert len(calls) == 1  # the kernel pools for the triton sink only
        pooled.backward(grad)
        assert w.grad is None
        out[backend], (sources[backend],) = pooled.detach(), sink.take_sources()
    ref = check_pool(weight, ids, offsets, bag, mode, config=DEFAULT_CONFIG)
    assert torch.equal(out["triton"], ref)  # deterministic: no atomics
    tol = 1e-5 if dtype == torch.float32 else 2**-7
    torch.testing.assert_close(out["triton"], out["torch"], rtol=tol, atol=tol)
    a, b = sources["triton"], sources["torch"]
    for field in ("ids", "grad", "src", "scale"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None and y is None) or torch.equal(x, y), field
    assert (a.scale is not None) == (mode == "mean")


def test_lookup_backend_selection(monkeypatch):
    w = torch.randn(5, 4)
    assert not _pool_with_triton(w, "sum", "torch")
    long_bags = (POOL_MIN_MEAN_BAG * 10, 10)  # (ids, bags)
    assert _pool_with_triton(w, "sum", "auto", *long_bags) == w.is_cuda  # auto: the kernel on CUDA only
    assert not _pool_with_triton(w.to(DEV), "sum", "auto", POOL_MIN_MEAN_BAG * 10 - 1, 10)  # short bags: ATen
    assert not _pool_with_triton(w.double().to(DEV), "sum", "auto", *long_bags)  # nor for fp64 weights
    with pytest.raises(ValueError, match="the triton backend pools fp32/bf16/fp16 weights"):
        _pool_with_triton(w.double(), "sum", "triton")
    with pytest.raises(ValueError, match="got torch.float32 by max"):
        _pool_with_triton(w, "max", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="the triton backend needs a CUDA weight or TRITON_INTERPRET=1, weight on cpu"):
        _pool_with_triton(w, "sum", "triton")
    with pytest.raises(ValueError, match="backend='cuda'; allowed: auto, triton, torch"):
        RowGrads("cuda")
    sink = RowGrads()
    assert sink.backend == "auto"
    sink.backend = "fast"
    with pytest.raises(ValueError, match="backend='fast'; allowed"):
        row_grad_lookup(w, torch.tensor([1, 2]), sink, torch.tensor([0, 2]), torch.tensor([0, 0]))


# --- on the GPU, at the size of a ROO history lookup --------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_cuda_history_lookup_at_scale_is_sync_free(mode):
    """820 bags of ~1000 ids, dim 64, bf16 (ROO's history bags): against the fp32-summed reference
    and ATen's own bf16 embedding_bag (both accumulate in fp32), with no host sync."""
    gen = torch.Generator().manual_seed(12)
    lengths = lognormal_lengths(820, 1000.0, gen)
    lengths[::97] = 0
    weight, ids, offsets, bag = make_bags(lengths, 1 << 20, 64, torch.bfloat16, gen)
    for config in (DEFAULT_CONFIG, (64, 64, 4), (256, 32, 8)):
        got = check_pool(weight, ids, offsets, bag, mode, config=config)
    aten = F.embedding_bag(ids, weight, offsets, mode=mode, include_last_offset=True)
    mag = F.embedding_bag(ids, weight.float().abs(), offsets, mode=mode, include_last_offset=True)
    err = (got.float() - aten.float()).abs()
    assert (err <= aten.float().abs() * 2**-7 + 1e-5 * mag + 1e-30).all(), float(err.max())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        bag_pool(weight, ids, offsets, bag, mode)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
def test_cuda_giant_bag_and_many_small_bags():
    gen = torch.Generator().manual_seed(13)
    # one bag over 2048 blocks of the default config among 60k short ones
    lengths = torch.cat([lognormal_lengths(60000, 3.0, gen), torch.tensor([1 << 18, 0, 5])])
    weight, ids, offsets, bag = make_bags(lengths, 1 << 16, 128, torch.float32, gen)
    check_pool(weight, ids, offsets, bag, "mean", config=DEFAULT_CONFIG)


# --- the benchmark CLI -------------------------------------------------------------------------------
def test_benchmark_cli_checks_its_arguments_and_runs_small(capsys):
    from benchmarks import bag_pool as bench

    assert bench.parse_shapes("820,1000,64,bfloat16; 8,3,16,float32") == [
        (820, 1000.0, 64, "bfloat16"),
        (8, 3.0, 16, "float32"),
    ]
    for bad in ("820,1000,64", "a,1,2,bfloat16", "8,3,16,float64", "0,3,16,float32"):
        with pytest.raises(SystemExit, match="want BAGS,MEAN_LEN,DIM,DTYPE"):
            bench.parse_shapes(bad)
    if not CUDA:
        assert bench.main(["--json", "x.json"]) == 2 and "needs a CUDA device" in capsys.readouterr().err
    # the whole benchmark at a tiny size (through the interpreter without CUDA)
    args = bench._parser().parse_args(["--shapes", "12,9,8,bfloat16", "--rows", "64", "--configs", "16,8,4;32,8,4"])
    args.warmup, args.reps = 0, 1
    rec = bench.run(args, device=str(DEV))
    (shape,) = rec["shapes"]
    names = [r["name"] for r in shape["results"]]
    assert names == ["embedding_bag", "bag_pool 16,8,4", "bag_pool 32,8,4"]
    assert shape["nnz"] > 0 and shape["floor_gb"] > 0
    assert all(r["ms"] > 0 and r["speedup"] > 0 for r in shape["results"])


@pytest.mark.gpu
def test_benchmark_runs_small(tmp_path):
    from benchmarks import bag_pool as bench

    out = tmp_path / "pool.json"
    assert bench.main(["--shapes", "820,100,64,bfloat16", "--reps", "2", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert [r["name"] for r in rec["shapes"][0]["results"]][0] == "embedding_bag"
