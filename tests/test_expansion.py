"""roo_ref.expansion: the forward is index_select, the backward each request's sum of its
impressions' gradients (what index_select's own backward computes), for empty requests too."""

from __future__ import annotations

import pytest
import torch

from roo_ref.expansion import Expansion, run_sums
from roo_ref.jagged import offsets_from_lengths, row_index

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _expansion(counts: list[int], device: str = "cpu") -> Expansion:
    k = torch.tensor(counts, dtype=torch.int64, device=device)
    return Expansion(row_index(k, int(k.sum())), offsets_from_lengths(k))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("counts", [[3, 1, 4], [2, 0, 5, 0], [1], [0, 0, 3]])
def test_forward_and_backward_equal_index_select(device, dtype, counts):
    ex = _expansion(counts, device)
    g = torch.Generator().manual_seed(sum(counts))
    x = torch.randn(len(counts), 3, 5, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    w = torch.randn(sum(counts), 3, 5, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = ex(a)
    ref = b.index_select(0, ex.index)
    assert torch.equal(out, ref)  # a gather: bit-exact
    (out * w).sum().backward()
    (ref * w).sum().backward()
    # bf16: embedding_bag sums in fp32 and rounds once, index_add_ rounds after every add
    tol = {"atol": 2e-2, "rtol": 2e-2} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(a.grad, b.grad, **tol)
    if 0 in counts:
        empty = torch.tensor(counts, device=device) == 0
        assert torch.all(a.grad[empty] == 0)


def test_gradcheck():
    ex = _expansion([2, 3, 0, 1])
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ex, (x,))


def test_one_dimensional_rows():
    ex = _expansion([2, 1])
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    out = ex(x)
    assert out.tolist() == [1.0, 1.0, 2.0]
    out.backward(torch.tensor([1.0, 10.0, 100.0]))
    assert x.grad.tolist() == [11.0, 100.0]


def test_run_sums_values():
    grad = torch.arange(12.0).reshape(6, 2)
    got = run_sums(grad, torch.tensor([0, 2, 2, 6]))
    assert got.tolist() == [[2.0, 4.0], [0.0, 0.0], [28.0, 32.0]]


def test_wrong_row_count_is_a_clear_error():
    ex = _expansion([1, 2])
    with pytest.raises(ValueError, match="expanding 3 rows, but the batch has 2 requests"):
        ex(torch.zeros(3, 4))


def test_interaction_benchmark_runs_every_variant_on_the_cpu(tmp_path):
    import json

    from benchmarks.interaction import VARIANTS, main

    out = tmp_path / "interaction.json"
    assert main(["--device", "cpu", "--preset", "tiny", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == list(VARIANTS)
