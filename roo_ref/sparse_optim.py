"""Embedding updates with no COO gradient and no host sync: the row-gradient path.

A table in row-gradient mode (roo_ref.embeddings: `enable_row_grads`) looks its rows up through
`row_grad_lookup`, whose backward computes the per-id gradient rows (ids [nnz], rows [nnz, dim]:
mode sum, the bag's output gradient; mode mean, that divided by the bag's length; a plain lookup,
the output gradient) and appends them to the table's `RowGrads` instead of giving the weight a
gradient. `FusedRowWiseAdagrad` / `FusedSparseSGD` then update the touched rows from them.

Why: a sparse COO gradient costs a coalesce or a `torch.unique` per table and step, and on CUDA
both copy the number of distinct rows to the host (a sync) to size their output. Here every shape
depends on nnz alone, which the host knows: the ids are sorted, segment starts marked, each id's
segment numbered by a cumsum, the rows summed into an [nnz, dim] buffer by `index_add_`, each
segment's row id placed by a scatter, and the slots past the number of distinct rows masked out by
`arange(nnz) < num_segments`, computed on the device. The update is the one of
`roo_ref.train.RowWiseAdagrad` (the reference): per distinct row, g = the sum of its duplicates,
state += mean(g^2), w -= lr * g / (sqrt(state) + eps).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class RowGrads:
    """The gradient rows one table received in this step's backward(s), until the optimizer takes
    them: each lookup of the table adds its (ids, rows)."""

    def __init__(self) -> None:
        self._ids: list[torch.Tensor] = []
        self._rows: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: torch.Tensor, rows: torch.Tensor) -> None:
        self._ids.append(ids.reshape(-1))
        self._rows.append(rows.reshape(ids.numel(), rows.shape[-1]))  # [0, dim] for an empty lookup

    def clear(self) -> None:
        self._ids.clear()
        self._rows.clear()

    def take(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(ids, rows as `dtype`) of every lookup since the last take/clear, or None; clears.
        `dtype` is the weight's: what autograd would have cast a COO gradient to."""
        if not self._ids:
            return None
        ids = self._ids[0] if len(self._ids) == 1 else torch.cat(self._ids)
        rows = torch.cat([r.to(dtype) for r in self._rows]) if len(self._rows) > 1 else self._rows[0].to(dtype)
        self.clear()
        return ids, rows


class _RowGradLookup(torch.autograd.Function):
    """A lookup whose backward hands the per-id gradient rows to `sink` and gives the weight none."""

    @staticmethod
    def forward(ctx, weight, ids, offsets, bag, mode, sink):
        if offsets is None:
            out = F.embedding(ids, weight)
        else:
            out = F.embedding_bag(ids, weight, offsets, mode=mode, include_last_offset=True)
        ctx.mode, ctx.sink = mode, sink
        ctx.save_for_backward(ids, offsets, bag)
        return out

    @staticmethod
    def backward(ctx, grad):
        ids, offsets, bag = ctx.saved_tensors
        if offsets is None:
            rows = grad.reshape(ids.numel(), -1)
        else:
            rows = grad.index_select(0, bag)
            if ctx.mode == "mean":
                # as ATen's sparse embedding_bag backward: times 1/length, computed in grad's dtype
                inv = (1 / (offsets[1:] - offsets[:-1]).to(grad.dtype)).unsqueeze(1).index_select(0, bag)
                rows = rows * inv
        ctx.sink.add(ids, rows)
        return None, None, None, None, None, None


def row_grad_lookup(
    weight: torch.Tensor,
    ids: torch.Tensor,
    sink: RowGrads,
    offsets: torch.Tensor | None = None,
    bag: torch.Tensor | None = None,
    mode: str = "sum",
) -> torch.Tensor:
    """F.embedding(ids, weight) (offsets None) or F.embedding_bag(ids, weight, offsets, mode,
    include_last_offset=True) with `bag` the bag of each id; backward appends to `sink`."""
    if offsets is not None and bag is None:
        raise ValueError("a bag lookup needs the bag of each id")
    return _RowGradLookup.apply(weight, ids, offsets, bag, mode, sink)


def segment_rows(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows [nnz], inverse [nnz], valid [nnz] bool) with fixed sizes: rows[:u] are the u distinct
    ids ascending (rows[u:] = 0), inverse[i] the slot of ids[i], valid = arange(nnz) < u. What
    `torch.unique(ids, sorted=True, return_inverse=True)` gives, padded to nnz, without its sync."""
    n = ids.numel()
    sorted_ids, perm = torch.sort(ids)
    start = torch.ones(n, dtype=torch.bool, device=ids.device)
    if n > 1:
        torch.ne(sorted_ids[1:], sorted_ids[:-1], out=start[1:])
    seg = torch.cumsum(start, 0) - 1  # slot of each sorted id
    inverse = torch.empty_like(seg).scatter_(0, perm, seg)
    rows = torch.zeros_like(sorted_ids).scatter_(0, seg, sorted_ids)  # duplicates write one value
    valid = torch.arange(n, device=ids.device) < seg[-1:] + 1 if n else start
    return rows, inverse, valid


def rowwise_adagrad_update(
    weight: torch.Tensor, state: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, lr: float, eps: float
) -> None:
    """In place: for each distinct id r with g = the sum of its rows (in fp32, fp64 kept):
    state[r] += mean(g^2); weight[r] -= lr * g / (sqrt(state[r]) + eps). No host sync."""
    n = ids.numel()
    if n == 0:
        return
    uniq, inverse, valid = segment_rows(ids)
    acc = torch.promote_types(rows.dtype, torch.float32)  # as sum_duplicate_rows: fp64 stays fp64
    summed = torch.zeros((n, *rows.shape[1:]), dtype=acc, device=rows.device)
    g = summed.index_add_(0, inverse, rows.to(acc)).float()
    mask = valid.to(g.dtype)
    state.index_add_(0, uniq, g.pow(2).mean(dim=1) * mask)
    std = state.index_select(0, uniq).sqrt().add_(eps)
    weight.index_add_(0, uniq, ((-lr * g / std[:, None]) * mask[:, None]).to(weight.dtype))


class _RowGradOptimizer(torch.optim.Optimizer):
    """Shared by the fused optimizers: params are 2-D tables; `row_grads[i]` is params[i]'s sink
    (None: the parameter's own .grad only). A .grad (sparse COO or dense) is folded in too."""

    def __init__(self, params: list[nn.Parameter], row_grads: list[RowGrads | None], defaults: dict):
        super().__init__(params, defaults)
        if len(row_grads) != len(params):
            raise ValueError(f"{len(params)} parameters but {len(row_grads)} row-gradient sinks")
        self._sinks = {id(p): s for p, s in zip(params, row_grads, strict=True)}

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
        for s in self._sinks.values():
            if s is not None:
                s.clear()

    def _gradient(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        sink = self._sinks.get(id(p))
        parts = [] if sink is None else [sink.take(p.dtype)]
        g = p.grad
        if g is not None and g.is_sparse:
            parts.append((g._indices()[0], g._values()))
        elif g is not None:
            parts.append((torch.arange(p.shape[0], device=p.device), g))
        parts = [x for x in parts if x is not None]
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return torch.cat([i for i, _ in parts]), torch.cat([r.to(p.dtype) for _, r in parts])


class FusedRowWiseAdagrad(_RowGradOptimizer):
    """Row-wise Adagrad (fbgemm's EXACT_ROWWISE_ADAGRAD; the same update as RowWiseAdagrad) from
    row gradients, with fixed-size, sync-free ops. state[p]["sum"]: the fp32 accumulator per row."""

    def __init__(self, params, row_grads, lr: float = 0.01, eps: float = 1e-8):
        params = list(params)
        super().__init__(params, list(row_grads), {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                got = self._gradient(p)
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
                if got is not None:
                    rowwise_adagrad_update(p, state["sum"], got[0], got[1], group["lr"], group["eps"])


class FusedSparseSGD(_RowGradOptimizer):
    """w[r] -= lr * (sum of r's gradient rows), one index_add_ (duplicates add up in place)."""

    def __init__(self, params, row_grads, lr: float = 0.01):
        params = list(params)
        super().__init__(params, list(row_grads), {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                got = self._gradient(p)
                if got is not None:
                    p.index_add_(0, got[0], (-group["lr"] * got[1]).to(p.dtype))
