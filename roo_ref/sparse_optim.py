"""Embedding updates with no COO gradient and no host sync: the row-gradient path.

A table in row-gradient mode (roo_ref.embeddings: `enable_row_grads`) looks its rows up through
`row_grad_lookup`, whose backward hands the table's `RowGrads` a `RowGradSource` instead of giving
the weight a gradient: the ids [nnz] and what their gradient rows are made of, without building
them (mode sum: the bag's output gradient; mode mean: that times 1/the bag's length; a plain
lookup: the output gradient). `FusedRowWiseAdagrad` / `FusedSparseSGD` then update the touched rows.

Why: a sparse COO gradient costs a coalesce or a `torch.unique` per table and step, and on CUDA
both copy the number of distinct rows to the host (a sync) to size their output. Here every shape
depends on nnz alone, which the host knows: the ids are sorted, segment starts marked, each sorted
id's segment numbered by a cumsum, the rows summed per segment, and the slots past the number of
distinct rows u (computed on the device) left out. The update is the one of
`roo_ref.train.RowWiseAdagrad` (the reference): per distinct row, g = the sum of its duplicates,
state += mean(g^2), w -= lr * g / (sqrt(state) + eps).

Two backends sum the duplicates ("auto": triton for CUDA tables, torch otherwise):
- torch, the reference and the CPU path: the rows materialized ([nnz, dim]) and summed by
  `index_add_` into an [nnz, dim] buffer, the update applied by `index_add_` with the slots past u
  masked to zero;
- triton (roo_ref.kernels.segment_sum): the rows read straight from the lookups' output gradients
  and summed per run of equal sorted ids in registers, one store per distinct id, atomics only where
  a run crosses a block boundary; then one program per distinct row updates it in place. On CUDA,
  index_add_ adds every duplicate with a float atomic at its destination: Zipf-popular ids and the
  impression layout's k-fold repeated history make those atomics collide and serialize.

A bag lookup's forward pools with roo_ref.kernels.bag_pool under the sink's `backend` (the same
three names; "auto": Triton for CUDA weights of fp32/bf16/fp16 whose bags average POOL_MIN_MEAN_BAG
ids or more): ATen's embedding_bag forward walks each bag serially per column, which leaves most of
the GPU idle on ROO's few long history bags; the kernel spreads the positions over the GPU instead.
F.embedding_bag stays the reference and the CPU path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from roo_ref.kernels import interpreting

BACKENDS = ("auto", "triton", "torch")
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class RowGradSource:
    """The gradient rows of a table's ids, not materialized: id number i's row is
    grad[src[i]] * scale[src[i]] (src None: grad[i]; scale None: 1). grad [R, dim]; scale [R] in
    grad's dtype (a mean bag's 1/length)."""

    ids: torch.Tensor
    grad: torch.Tensor
    src: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    @property
    def nnz(self) -> int:
        return self.ids.numel()

    def rows(self, dtype: torch.dtype) -> torch.Tensor:
        """[nnz, dim] as `dtype`; the scale is applied in grad's dtype, as ATen's sparse
        embedding_bag backward does for mode mean."""
        rows = self.grad if self.src is None else self.grad.index_select(0, self.src)
        if self.scale is not None:
            scale = self.scale.unsqueeze(1)
            rows = rows * (scale if self.src is None else scale.index_select(0, self.src))
        return rows.to(dtype)


def merge_sources(parts: list[RowGradSource]) -> RowGradSource:
    """One source for several (one table's lookups): their grads stacked, each src shifted by the
    rows before it, a missing src the identity and a missing scale ones."""
    if len(parts) == 1:
        return parts[0]
    dtype = parts[0].grad.dtype
    for p in parts[1:]:
        dtype = torch.promote_types(dtype, p.grad.dtype)
    scaled = any(p.scale is not None for p in parts)
    srcs, scales, base = [], [], 0
    for p in parts:
        n_rows = p.grad.shape[0]
        if p.src is None:
            srcs.append(torch.arange(base, base + n_rows, device=p.ids.device))
        else:
            srcs.append(p.src + base)
        if scaled:
            ones = torch.ones(n_rows, dtype=dtype, device=p.grad.device)
            scales.append(ones if p.scale is None else p.scale.to(dtype))
        base += n_rows
    return RowGradSource(
        torch.cat([p.ids for p in parts]),
        torch.cat([p.grad.to(dtype) for p in parts]),
        torch.cat(srcs),
        torch.cat(scales) if scaled else None,
    )


class RowGrads:
    """The gradient rows one table received in this step's backward(s), until the optimizer takes
    them: each lookup of the table adds a RowGradSource, with the side of the model that looked it
    up (roo_ref.models.regions.current_side: "user", "item" or None) for the optimizer's profiler
    ranges. `backend` (BACKENDS) chooses how the table's bag lookups pool in their forward."""

    def __init__(self, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}; allowed: {', '.join(BACKENDS)}")
        self.backend = backend
        self._parts: list[RowGradSource] = []
        self._nnz: dict[str | None, int] = {}

    def __len__(self) -> int:
        return len(self._parts)

    def add(self, ids: torch.Tensor, rows: torch.Tensor, side: str | None = None) -> None:
        """Materialized rows: ids [*], rows [ids.numel(), dim] ([0, dim] for an empty lookup)."""
        self.add_source(RowGradSource(ids.reshape(-1), rows.reshape(ids.numel(), rows.shape[-1])), side)

    def add_source(self, source: RowGradSource, side: str | None = None) -> None:
        self._parts.append(source)
        self._nnz[side] = self._nnz.get(side, 0) + source.nnz

    def nnz_by_side(self) -> dict[str | None, int]:
        """The ids added since the last take/clear, by side (host ints: no sync)."""
        return dict(self._nnz)

    def clear(self) -> None:
        self._parts.clear()
        self._nnz.clear()

    def take_sources(self) -> list[RowGradSource]:
        """Every lookup's source since the last take/clear; clears."""
        parts = list(self._parts)
        self.clear()
        return parts

    def take(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(ids, rows as `dtype`) of every lookup since the last take/clear, or None; clears.
        `dtype` is the weight's: what autograd would have cast a COO gradient to."""
        parts = self.take_sources()
        return materialize(parts, dtype) if parts else None


def materialize(parts: list[RowGradSource], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [nnz], rows [nnz, dim] as `dtype`) of the sources, in order."""
    if len(parts) == 1:
        return parts[0].ids, parts[0].rows(dtype)
    return torch.cat([p.ids for p in parts]), torch.cat([p.rows(dtype) for p in parts])


class _RowGradLookup(torch.autograd.Function):
    """A lookup whose backward hands its RowGradSource to `sink` and gives the weight no gradient."""

    @staticmethod
    def forward(ctx, weight, ids, offsets, bag, mode, sink, side):
        if offsets is None:
            out = F.embedding(ids, weight)
        elif _pool_with_triton(weight, mode, sink.backend, ids.numel(), offsets.numel() - 1):
            from roo_ref.kernels.bag_pool import bag_pool

            out = bag_pool(weight, ids, offsets, bag, mode)
        else:
            out = F.embedding_bag(ids, weight, offsets, mode=mode, include_last_offset=True)
        ctx.mode, ctx.sink, ctx.side = mode, sink, side
        ctx.save_for_backward(ids, offsets, bag)
        return out

    @staticmethod
    def backward(ctx, grad):
        ids, offsets, bag = ctx.saved_tensors
        if offsets is None:
            source = RowGradSource(ids.reshape(-1), grad.reshape(ids.numel(), -1))
        else:
            # mode mean: times 1/length in grad's dtype, as ATen's sparse embedding_bag backward
            scale = 1 / (offsets[1:] - offsets[:-1]).to(grad.dtype) if ctx.mode == "mean" else None
            source = RowGradSource(ids, grad, bag, scale)
        ctx.sink.add_source(source, ctx.side)
        return None, None, None, None, None, None, None


# "auto" pools with the kernel from this mean bag length up. ATen's embedding_bag walks a bag's ids
# serially, one thread per (bag, column): fine for short bags (many bags, little work each), latency
# bound for long histories; the kernel's per-block scan costs more than that at a few ids per bag
# (benchmarks/bag_pool.py).
POOL_MIN_MEAN_BAG = 32


def _pool_with_triton(weight: torch.Tensor, mode: str, backend: str, nnz: int = 0, bags: int = 0) -> bool:
    """Whether a bag lookup pools with roo_ref.kernels.bag_pool: "auto" on CUDA weights it takes
    when the bags average POOL_MIN_MEAN_BAG ids or more (`nnz`, `bags`: the lookup's sizes, known
    on the host), "triton" wherever Triton runs (CUDA, or the interpreter under TRITON_INTERPRET=1)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; allowed: {', '.join(BACKENDS)}")
    fits = weight.dtype in _TRITON_DTYPES and mode in ("sum", "mean") and weight.stride(-1) == 1
    if backend == "triton":
        if not fits:
            raise ValueError(
                f"the triton backend pools fp32/bf16/fp16 weights with unit column stride by sum or mean,"
                f" got {weight.dtype} by {mode}"
            )
        if not weight.is_cuda and not interpreting():
            raise ValueError(f"the triton backend needs a CUDA weight or TRITON_INTERPRET=1, weight on {weight.device}")
        return True
    return backend == "auto" and weight.is_cuda and fits and nnz >= POOL_MIN_MEAN_BAG * max(bags, 1)


def row_grad_lookup(
    weight: torch.Tensor,
    ids: torch.Tensor,
    sink: RowGrads,
    offsets: torch.Tensor | None = None,
    bag: torch.Tensor | None = None,
    mode: str = "sum",
) -> torch.Tensor:
    """F.embedding(ids, weight) (offsets None) or F.embedding_bag(ids, weight, offsets, mode,
    include_last_offset=True) with `bag` the bag of each id; backward adds to `sink`, labelled
    with the model side whose profiler region is open now."""
    # imported here: roo_ref.models imports the embeddings, which import this module
    from roo_ref.models.regions import current_side

    if offsets is not None and bag is None:
        raise ValueError("a bag lookup needs the bag of each id")
    return _RowGradLookup.apply(weight, ids, offsets, bag, mode, sink, current_side())


def _sorted_segments(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sorted ids, perm, seg): seg[p] the distinct-id number of sorted position p (0..u-1)."""
    n = ids.numel()
    sorted_ids, perm = torch.sort(ids)
    start = torch.ones(n, dtype=torch.bool, device=ids.device)
    if n > 1:
        torch.ne(sorted_ids[1:], sorted_ids[:-1], out=start[1:])
    return sorted_ids, perm, torch.cumsum(start, 0) - 1


def segment_rows(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows [nnz], inverse [nnz], valid [nnz] bool) with fixed sizes: rows[:u] are the u distinct
    ids ascending (rows[u:] = 0), inverse[i] the slot of ids[i], valid = arange(nnz) < u. What
    `torch.unique(ids, sorted=True, return_inverse=True)` gives, padded to nnz, without its sync."""
    n = ids.numel()
    sorted_ids, perm, seg = _sorted_segments(ids)
    inverse = torch.empty_like(seg).scatter_(0, perm, seg)
    rows = torch.zeros_like(sorted_ids).scatter_(0, seg, sorted_ids)  # duplicates write one value
    valid = torch.arange(n, device=ids.device) < seg[-1:] + 1 if n else seg.bool()
    return rows, inverse, valid


def segment_sum_reference(
    grad: torch.Tensor, src: torch.Tensor | None, scale: torch.Tensor | None, perm: torch.Tensor, seg: torch.Tensor
) -> torch.Tensor:
    """What roo_ref.kernels.segment_sum.segment_sum computes, in torch: out [nnz, dim] fp32 with
    out[s] = the sum over the sorted positions p of segment s of grad[src[perm[p]]] *
    scale[src[perm[p]]] (products in fp32), zero past the last segment."""
    idx = perm if src is None else src.index_select(0, perm)
    rows = grad.index_select(0, idx).float()
    if scale is not None:
        rows = rows * scale.index_select(0, idx).float().unsqueeze(1)
    return torch.zeros(perm.numel(), grad.shape[1], device=grad.device).index_add_(0, seg, rows)


def _use_triton(weight: torch.Tensor, parts: list[RowGradSource], backend: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; allowed: {', '.join(BACKENDS)}")
    fits = weight.dtype in _TRITON_DTYPES and all(p.grad.dtype in _TRITON_DTYPES for p in parts)
    if backend == "triton" and not fits:
        dtypes = sorted({str(weight.dtype), *(str(p.grad.dtype) for p in parts)})
        raise ValueError(f"the triton backend takes fp32/bf16/fp16 weights and gradients, got {', '.join(dtypes)}")
    return backend == "triton" or (backend == "auto" and weight.is_cuda and fits and weight.stride(1) == 1)


def _segment_sums(parts: list[RowGradSource], rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sums [nnz, dim] fp32, uniq [nnz], seg [nnz]) from the Triton segmented sum of the rows of
    a table with `rows` rows."""
    from roo_ref.kernels.segment_sum import segment_sum

    src = merge_sources(parts)
    grad = src.grad if src.grad.stride(1) == 1 else src.grad.contiguous()
    # sorted as int32 where the table allows: a radix sort passes once per key byte, so 32-bit
    # keys take half the passes of 64-bit ones (the kernel widens the ids it stores)
    keys = src.ids.to(torch.int32) if rows <= torch.iinfo(torch.int32).max else src.ids
    sorted_ids, perm, seg = _sorted_segments(keys)
    sums, uniq = segment_sum(grad, src.src, src.scale, perm, seg, sorted_ids)
    return sums, uniq, seg


def rowwise_adagrad_update(
    weight: torch.Tensor,
    state: torch.Tensor,
    parts: list[RowGradSource],
    lr: float,
    eps: float,
    backend: str = "auto",
) -> None:
    """In place: for each distinct id r with g = the sum of its rows (in fp32, fp64 kept):
    state[r] += mean(g^2); weight[r] -= lr * g / (sqrt(state[r]) + eps). No host sync."""
    if sum(p.nnz for p in parts) == 0:
        return
    if _use_triton(weight, parts, backend):
        from roo_ref.kernels.segment_sum import apply_update

        sums, uniq, seg = _segment_sums(parts, weight.shape[0])
        apply_update(weight, state, sums, uniq, seg, lr, eps)
        return
    ids, rows = materialize(parts, weight.dtype)
    n = ids.numel()
    uniq, inverse, valid = segment_rows(ids)
    acc = torch.promote_types(rows.dtype, torch.float32)  # as sum_duplicate_rows: fp64 stays fp64
    summed = torch.zeros((n, *rows.shape[1:]), dtype=acc, device=rows.device)
    g = summed.index_add_(0, inverse, rows.to(acc)).float()
    mask = valid.to(g.dtype)
    state.index_add_(0, uniq, g.pow(2).mean(dim=1) * mask)
    std = state.index_select(0, uniq).sqrt().add_(eps)
    weight.index_add_(0, uniq, ((-lr * g / std[:, None]) * mask[:, None]).to(weight.dtype))


def sgd_update(weight: torch.Tensor, parts: list[RowGradSource], lr: float, backend: str = "auto") -> None:
    """In place: weight[r] -= lr * (the sum of r's rows). torch: one index_add_ (duplicates add up
    in place); triton: the rows summed per distinct id first, then one add per row."""
    if sum(p.nnz for p in parts) == 0:
        return
    if _use_triton(weight, parts, backend):
        from roo_ref.kernels.segment_sum import apply_update

        sums, uniq, seg = _segment_sums(parts, weight.shape[0])
        apply_update(weight, None, sums, uniq, seg, lr)
        return
    ids, rows = materialize(parts, weight.dtype)
    weight.index_add_(0, ids, (-lr * rows).to(weight.dtype))


class _RowGradOptimizer(torch.optim.Optimizer):
    """Shared by the fused optimizers: params are 2-D tables; `row_grads[i]` is params[i]'s sink
    (None: the parameter's own .grad only). A .grad (sparse COO or dense) is folded in too.
    `backend`: how duplicates are summed (BACKENDS; see the module docstring)."""

    def __init__(self, params: list[nn.Parameter], row_grads: list[RowGrads | None], defaults: dict, backend: str):
        super().__init__(params, defaults)
        if len(row_grads) != len(params):
            raise ValueError(f"{len(params)} parameters but {len(row_grads)} row-gradient sinks")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}; allowed: {', '.join(BACKENDS)}")
        self.backend = backend
        self._sinks = {id(p): s for p, s in zip(params, row_grads, strict=True)}

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
        for s in self._sinks.values():
            if s is not None:
                s.clear()

    def _gradient(self, p: torch.Tensor) -> list[RowGradSource]:
        sink = self._sinks.get(id(p))
        parts = [] if sink is None else sink.take_sources()
        g = p.grad
        if g is not None and g.is_sparse:
            parts.append(RowGradSource(g._indices()[0], g._values()))
        elif g is not None:
            parts.append(RowGradSource(torch.arange(p.shape[0], device=p.device), g))
        return parts

    def _side_region(self, p: torch.Tensor):
        """The profiler range of p's update by side (roo_ref.models.regions.optimizer_region)."""
        from roo_ref.models.regions import optimizer_region

        sink = self._sinks.get(id(p))
        return optimizer_region({} if sink is None else sink.nnz_by_side())


class FusedRowWiseAdagrad(_RowGradOptimizer):
    """Row-wise Adagrad (fbgemm's EXACT_ROWWISE_ADAGRAD; the same update as RowWiseAdagrad) from
    row gradients, with fixed-size, sync-free ops. state[p]["sum"]: the fp32 accumulator per row."""

    def __init__(self, params, row_grads, lr: float = 0.01, eps: float = 1e-8, backend: str = "auto"):
        params = list(params)
        super().__init__(params, list(row_grads), {"lr": lr, "eps": eps}, backend)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                with self._side_region(p):
                    parts = self._gradient(p)
                    state = self.state[p]
                    if "sum" not in state:
                        state["sum"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
                    rowwise_adagrad_update(p, state["sum"], parts, group["lr"], group["eps"], self.backend)


class FusedSparseSGD(_RowGradOptimizer):
    """w[r] -= lr * (sum of r's gradient rows): `sgd_update`."""

    def __init__(self, params, row_grads, lr: float = 0.01, backend: str = "auto"):
        params = list(params)
        super().__init__(params, list(row_grads), {"lr": lr}, backend)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                with self._side_region(p):
                    sgd_update(p, self._gradient(p), group["lr"], self.backend)
