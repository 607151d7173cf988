"""The embedding optimizer: row-wise Adagrad on sparse gradients with many duplicate rows (the
Zipf-popular ids of a batch), against coalesce() and a dense reference update."""

import pytest
import torch

from roo_ref.train import RowWiseAdagrad, sum_duplicate_rows


def _sparse_grad(n: int, rows: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # skewed ids: half the entries hit 3 hot rows, as a Zipf draw does
    hot = torch.randint(0, 3, (n // 2,), generator=g)
    cold = torch.randint(0, rows, (n - n // 2,), generator=g)
    idx = torch.cat([hot, cold])[torch.randperm(n, generator=g)]
    return torch.sparse_coo_tensor(idx[None], torch.randn(n, dim, generator=g), (rows, dim))


@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_sum_duplicate_rows_equals_coalesce(n):
    g = _sparse_grad(n, 50, 4, seed=n)
    rows, vals = sum_duplicate_rows(g)
    c = g.coalesce()
    assert torch.equal(rows, c.indices()[0])
    # both fp32 sums are within fp32 summation error of the fp64 one (the orders differ); a hot row
    # sums ~n/6 values of size ~1: error bound ~ n * 2^-24 * sqrt(n) << 1e-3
    exact = g.double().coalesce().values()
    for got in (vals, c.values()):
        torch.testing.assert_close(got.double(), exact, rtol=0, atol=1e-3)
    assert vals.dtype == torch.float32
    if n > 10:
        assert rows.numel() < n  # there were duplicates to sum


def test_already_coalesced_passes_through():
    c = _sparse_grad(100, 20, 3, seed=1).coalesce()
    rows, vals = sum_duplicate_rows(c)
    assert torch.equal(rows, c.indices()[0]) and torch.equal(vals, c.values())


def test_rowwise_adagrad_sparse_matches_dense_reference():
    torch.manual_seed(0)
    w0 = torch.randn(500, 4)
    grads = [_sparse_grad(300, 500, 4, seed=s) for s in range(3)]
    p = torch.nn.Parameter(w0.clone())
    opt = RowWiseAdagrad([p], lr=0.1, eps=1e-8)
    w, state = w0.clone(), torch.zeros(500)
    for g in grads:
        p.grad = g
        opt.step()
        dense = g.to_dense()
        touched = dense.abs().sum(1) > 0
        state += torch.where(touched, dense.pow(2).mean(1), torch.zeros(()))
        upd = -0.1 * dense / (state.sqrt() + 1e-8)[:, None]
        w += torch.where(touched[:, None], upd, torch.zeros(()))
    torch.testing.assert_close(p.detach(), w, rtol=1e-5, atol=1e-6)
    # untouched rows never move
    never = torch.stack([g.to_dense().abs().sum(1) == 0 for g in grads]).all(0)
    assert never.any() and torch.equal(p.detach()[never], w0[never])
