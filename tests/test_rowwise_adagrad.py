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


# --- the fused, sync-free path (roo_ref.sparse_optim) against the reference above -----------------
def _hot_ids(n: int, rows: int, seed: int) -> torch.Tensor:
    return _sparse_grad(n, rows, 1, seed)._indices()[0]


@pytest.mark.parametrize("n", [0, 1, 2, 9, 3000])
def test_segment_rows_is_unique_padded_to_nnz(n):
    from roo_ref.sparse_optim import segment_rows

    ids = _hot_ids(n, 40, seed=n)
    rows, inverse, valid = segment_rows(ids)
    uniq, inv = torch.unique(ids, sorted=True, return_inverse=True)
    u = uniq.numel()
    assert rows.shape == inverse.shape == valid.shape == (n,)
    assert torch.equal(rows[:u], uniq) and torch.equal(inverse, inv)
    assert valid.tolist() == [True] * u + [False] * (n - u)
    assert (rows[u:] == 0).all()
    if n > 100:
        assert u < n / 2  # many duplicates (the hot rows)


def _coo(ids: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    return torch.sparse_coo_tensor(ids[None], rows, (n_rows, rows.shape[1]))


ULP = {torch.float64: 2.0**-51, torch.float32: 2.0**-22, torch.bfloat16: 2.0**-7}  # two units in the last place


@pytest.mark.parametrize(
    "w_dtype, g_dtype",
    [(torch.float32, torch.float32), (torch.float64, torch.float64), (torch.bfloat16, torch.bfloat16)],
)
def test_fused_rowwise_adagrad_equals_reference_over_steps(w_dtype, g_dtype):
    """Same gradients (random ids, half of them on 3 hot rows; two lookups a step, as a table
    read twice), several steps: the fused optimizer's weights and accumulators equal the
    reference's to two units in the last place of the weight's dtype (the duplicates are summed
    in the same order, so they agree bit for bit on the CPU; the margin is for other builds)."""
    from roo_ref.sparse_optim import FusedRowWiseAdagrad, RowGrads

    torch.manual_seed(0)
    n_rows, dim = 3000, 8
    w0 = torch.randn(n_rows, dim).to(w_dtype)
    ref, fused = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    sink = RowGrads()
    opt_ref = RowWiseAdagrad([ref], lr=0.05)
    opt = FusedRowWiseAdagrad([fused], [sink], lr=0.05)
    g = torch.Generator().manual_seed(1)
    for step in range(4):
        opt.zero_grad()
        lookups = []
        for j in range(2):
            ids = _hot_ids(500 + 37 * j, n_rows, seed=10 * step + j)
            lookups.append((ids, torch.randn(ids.numel(), dim, generator=g).to(g_dtype)))
            sink.add(*lookups[-1])
        # the COO gradient autograd accumulates for a table read twice: both lookups' entries
        ref.grad = _coo(torch.cat([i for i, _ in lookups]), torch.cat([r for _, r in lookups]).to(w_dtype), n_rows)
        opt_ref.step()
        opt.step()
        assert fused.grad is None and len(sink) == 0  # the rows were taken
        torch.testing.assert_close(fused.detach(), ref.detach(), rtol=ULP[w_dtype], atol=ULP[w_dtype])
        torch.testing.assert_close(
            opt.state[fused]["sum"], opt_ref.state[ref]["sum"], rtol=ULP[torch.float32], atol=1e-12
        )
    moved = (fused.detach() != w0).any(1)
    assert moved.any() and not moved.all()  # sparse: untouched rows keep their weights


def test_fused_rowwise_adagrad_folds_in_a_coo_or_dense_grad():
    """A weight that also got an ordinary gradient (sparse COO or dense) is updated from the sum."""
    from roo_ref.sparse_optim import FusedRowWiseAdagrad, RowGrads

    torch.manual_seed(2)
    w0 = torch.randn(50, 4)
    ids = _hot_ids(200, 50, seed=3)
    rows = torch.randn(200, 4)
    extra = _sparse_grad(80, 50, 4, seed=4)
    for other in (extra, extra.to_dense()):
        ref, fused = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
        ref.grad = (_coo(ids, rows, 50) + other).coalesce() if other.is_sparse else other + _coo(ids, rows, 50)
        RowWiseAdagrad([ref], lr=0.1).step()
        sink = RowGrads()
        sink.add(ids, rows)
        fused.grad = other.clone()
        FusedRowWiseAdagrad([fused], [sink], lr=0.1).step()
        torch.testing.assert_close(fused.detach(), ref.detach(), rtol=1e-6, atol=1e-6)
        assert not torch.equal(fused.detach(), w0)


def test_fused_sgd_equals_torch_sgd_and_zero_grad_drops_rows():
    from roo_ref.sparse_optim import FusedSparseSGD, RowGrads

    torch.manual_seed(5)
    w0 = torch.randn(60, 3)
    ids, rows = _hot_ids(400, 60, seed=6), torch.randn(400, 3)
    ref, fused = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    ref.grad = _coo(ids, rows, 60)
    torch.optim.SGD([ref], lr=0.3).step()
    sink = RowGrads()
    opt = FusedSparseSGD([fused], [sink], lr=0.3)
    sink.add(ids[:7], torch.randn(7, 3))
    opt.zero_grad()  # a step's rows never leak into the next step
    assert len(sink) == 0
    sink.add(ids, rows)
    opt.step()
    torch.testing.assert_close(fused.detach(), ref.detach(), rtol=1e-6, atol=1e-6)
    assert not torch.equal(fused.detach(), w0)
