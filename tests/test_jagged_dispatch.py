"""The jagged dispatcher: every fbgemm-backed op equals the pure-torch path, forward and backward,
on fresh random inputs (several shapes, fp32 and bf16); the torch path alone is checked against
naive per-row Python. Skips the fbgemm comparisons cleanly when fbgemm_gpu is not importable."""

from __future__ import annotations

import pytest
import torch

from roo_ref import jagged as J
from roo_ref import jagged_dispatch as D

needs_fbgemm = pytest.mark.skipif(not D.HAVE_FBGEMM, reason="fbgemm_gpu not importable")
SHAPES = [(1, 1, 4), (5, 0, 3), (7, 6, 8), (16, 3, 1)]  # (rows, max segment length, dim)


def _jagged(rows, max_len, dim, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_len + 1, (rows,), generator=g)
    values = torch.randn(int(lengths.sum()), dim, generator=g).to(dtype)
    return values, lengths, g


def _both(fn, *args):
    """Run fn under the torch backend and under auto (fbgemm) and return both results."""
    old = D.get_backend()
    try:
        D.set_backend("torch")
        a = fn(*args)
        D.set_backend("fbgemm")
        b = fn(*args)
    finally:
        D.set_backend(old)
    return a, b


def _tol(dtype):
    return dict(rtol=0, atol=0) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)


@needs_fbgemm
@pytest.mark.parametrize("rows,max_len,dim", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_jagged_index_select_matches(rows, max_len, dim, dtype):
    values, lengths, g = _jagged(rows, max_len, dim, dtype, seed=rows * 31 + dim)
    index = torch.randint(0, rows, (rows * 2 + 1,), generator=g)

    def run(v0):
        v = v0.clone().requires_grad_(True)
        out, out_len = D.jagged_index_select(v, lengths, index)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(dtype)
        (out * w).sum().backward()
        return out.detach(), out_len, v.grad

    (o1, l1, g1), (o2, l2, g2) = _both(run, values)
    assert torch.equal(l1, l2)
    assert torch.equal(o1, o2)  # a gather: bit-exact
    torch.testing.assert_close(g1, g2, **_tol(dtype))


@needs_fbgemm
@pytest.mark.parametrize("rows,max_len,dim", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_expand_by_request_matches(rows, max_len, dim, dtype):
    g = torch.Generator().manual_seed(rows + dim)
    k = torch.randint(1, 5, (rows,), generator=g)
    x0 = torch.randn(rows, 2, dim, generator=g).to(dtype)

    def run(x0):
        x = x0.clone().requires_grad_(True)
        out = D.expand_by_request(x, k, int(k.sum()))
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
        (out * w).sum().backward()
        return out.detach(), x.grad

    (o1, g1), (o2, g2) = _both(run, x0)
    assert o1.shape == (int(k.sum()), 2, dim)
    assert torch.equal(o1, o2)
    torch.testing.assert_close(g1, g2, **_tol(dtype))


@needs_fbgemm
@pytest.mark.parametrize("rows,max_len,dim", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padded_round_trip_matches(rows, max_len, dim, dtype):
    values, lengths, g = _jagged(rows, max_len, dim, dtype, seed=rows * 7 + dim)
    offsets = J.offsets_from_lengths(lengths)
    n = max(max_len, 1) + 1

    def to_padded(v0):
        v = v0.clone().requires_grad_(True)
        p = D.jagged_to_padded_dense(v, offsets, n, pad=0.0)
        w = torch.randn(p.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
        (p * w).sum().backward()
        return p.detach(), v.grad

    (p1, g1), (p2, g2) = _both(to_padded, values)
    assert torch.equal(p1, p2)
    assert torch.equal(g1, g2)

    dense0 = torch.randn(rows, n, dim, generator=g).to(dtype)

    def to_jagged(d0):
        d = d0.clone().requires_grad_(True)
        j = D.dense_to_jagged(d, offsets)
        w = torch.randn(j.shape, generator=torch.Generator().manual_seed(9)).to(dtype)
        (j * w).sum().backward()
        return j.detach(), d.grad

    (j1, h1), (j2, h2) = _both(to_jagged, dense0)
    assert torch.equal(j1, j2)
    assert torch.equal(h1, h2)


@needs_fbgemm
def test_complete_cumsum_matches():
    lengths = torch.tensor([3, 0, 2, 5, 0])
    a, b = _both(D.complete_cumsum, lengths)
    assert torch.equal(a, b) and a.tolist() == [0, 3, 3, 5, 10, 10]


def test_float64_falls_back_to_torch():
    # fbgemm-gpu-cpu has no float64 kernels; the dispatcher must route those to torch
    values, lengths, _ = _jagged(6, 4, 3, torch.float64, seed=1)
    out, out_len = D.jagged_index_select(values, lengths, torch.tensor([5, 0, 5]))
    ref, ref_len = J.jagged_index_select(values, lengths, torch.tensor([5, 0, 5]))
    assert torch.equal(out, ref) and torch.equal(out_len, ref_len)


def test_too_long_segment_raises():
    with pytest.raises(ValueError, match="longer than max_len=2"):
        D.jagged_to_padded_dense(torch.randn(3, 1), torch.tensor([0, 3]), 2)


def test_unknown_backend():
    with pytest.raises(ValueError, match="allowed: auto, torch, fbgemm"):
        D.set_backend("cuda")


def test_torch_ops_match_naive_rows():
    values, lengths, _ = _jagged(6, 5, 2, torch.float32, seed=4)
    offs = J.offsets_from_lengths(lengths).tolist()
    rows = [values[offs[i] : offs[i + 1]] for i in range(6)]
    index = torch.tensor([3, 3, 0, 5])
    out, out_len = J.jagged_index_select(values, lengths, index)
    assert torch.equal(out, torch.cat([rows[i] for i in index.tolist()]))
    assert out_len.tolist() == [len(rows[i]) for i in index.tolist()]
    # concat of two jagged tensors row by row
    other, olen, _ = _jagged(6, 3, 2, torch.float32, seed=5)
    ooffs = J.offsets_from_lengths(olen).tolist()
    cat, clen, starts = J.jagged_concat([(values, lengths), (other, olen)])
    expect = torch.cat([torch.cat([rows[i], other[ooffs[i] : ooffs[i + 1]]]) for i in range(6)])
    assert torch.equal(cat, expect) and torch.equal(clen, lengths + olen)
    assert torch.equal(cat[starts[1]], other) and torch.equal(cat[starts[0]], values)
    # tail: the last 2 of every row
    keep, tlen = J.jagged_tail(lengths, 2)
    assert torch.equal(values[keep], torch.cat([r[-2:] for r in rows]))
    assert tlen.tolist() == [min(len(r), 2) for r in rows]


def test_jagged_concat_backward():
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(2, 3, requires_grad=True)
    cat, _, _ = J.jagged_concat([(a, torch.tensor([1, 3])), (b, torch.tensor([1, 1]))])
    w = torch.randn(cat.shape)
    (cat * w).sum().backward()
    # row 0: a0, b0; row 1: a1 a2 a3, b1
    assert torch.equal(a.grad, w[[0, 2, 3, 4]])
    assert torch.equal(b.grad, w[[1, 5]])
