"""One training step, identical for both layouts: forward + backward + optimizer.

Dense parameters: Adam. Embedding tables (sparse gradients): row-wise Adagrad (one accumulator per
row, as fbgemm's EXACT_ROWWISE_ADAGRAD) or plain SGD — updating only the rows the batch touched.
bf16: `amp_bf16=True` runs forward/backward under torch.autocast(bfloat16) with fp32 master weights.

By default (`fused_embeddings=True`) the tables run in row-gradient mode and the embedding optimizer
is roo_ref.sparse_optim's fused one: no COO gradient, no host sync. `RowWiseAdagrad` below (COO
gradients, `torch.unique`, one sync per table) stays as the reference it is tested against.

No host sync in a step: `prepare(batch)` builds the batch's bookkeeping (hashed ids, offsets, the
request->impression expansion, the HSTU sequence table; the models' `prepare`) once, before the
step; `step` takes the prepared batch (or a raw one, which it prepares first). The step's parts run
under the profiler labels of roo_ref.models.regions.
"""

from __future__ import annotations

import torch
from torch import nn

from roo_ref.embeddings import embedding_parameters, enable_row_grads
from roo_ref.models.common import model_layout
from roo_ref.models.regions import OPTIMIZER, region
from roo_ref.sparse_optim import FusedRowWiseAdagrad, FusedSparseSGD
from workloads.errors import UserError

EMB_OPTIMIZERS = ("rowwise_adagrad", "sgd")


def sum_duplicate_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unique rows, fp32 summed values) of a sparse COO row gradient — what `grad.coalesce()`
    gives, computed as unique + index_add_. Why not coalesce: its CUDA kernel
    (coalesceValuesKernel) sums each row's duplicates serially, and Zipf-popular ids repeat
    100k+ times per step; on the H100 it takes 142 of 180 ms of an early-ranking impression-level
    step (docs/notebook/perf.md). index_add_ spreads the sum over the whole GPU."""
    if grad.is_coalesced():
        return grad._indices()[0], grad._values().float()
    idx, vals = grad._indices()[0], grad._values()
    rows, inverse = torch.unique(idx, sorted=True, return_inverse=True)
    acc = torch.promote_types(vals.dtype, torch.float32)  # sum in the gradient's precision (fp64 stays fp64)
    summed = torch.zeros((rows.numel(), *vals.shape[1:]), dtype=acc, device=vals.device)
    return rows, summed.index_add_(0, inverse, vals.to(acc)).float()


class RowWiseAdagrad(torch.optim.Optimizer):
    """state[row] += mean(g_row^2); w_row -= lr * g_row / (sqrt(state[row]) + eps). Sparse or dense
    gradients; with sparse ones only the touched rows are read and written."""

    def __init__(self, params, lr: float = 0.01, eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
                g = p.grad
                if g.is_sparse:
                    rows, vals = sum_duplicate_rows(g)
                else:
                    rows, vals = None, g.float()
                sq = vals.pow(2).mean(dim=tuple(range(1, vals.dim()))) if vals.dim() > 1 else vals.pow(2)
                if rows is None:
                    state["sum"].add_(sq)
                    std = state["sum"].sqrt().add_(eps)
                    p.add_((-lr * vals / std.view(-1, *([1] * (vals.dim() - 1)))).to(p.dtype))
                else:
                    state["sum"].index_add_(0, rows, sq)
                    std = state["sum"][rows].sqrt().add_(eps)
                    p.index_add_(0, rows, (-lr * vals / std.view(-1, *([1] * (vals.dim() - 1)))).to(p.dtype))


class Trainer:
    """`Trainer(model, layout).step(batch)` -> loss (a tensor; not synchronized). `batch` is a raw
    batch of the layout or `trainer.prepare(batch)` (which a timed loop builds outside its timing).
    fused_embeddings=False: COO gradients and the reference optimizers (RowWiseAdagrad, SGD)."""

    def __init__(
        self,
        model: nn.Module,
        layout: str,
        amp_bf16: bool = False,
        seed: int = 0,
        lr: float = 1e-3,
        emb_lr: float = 0.01,
        emb_optimizer: str = "rowwise_adagrad",
        fused_embeddings: bool = True,
    ):
        model_layout(layout)  # a clear error before any state is built
        if emb_optimizer not in EMB_OPTIMIZERS:
            raise UserError(f"emb_optimizer={emb_optimizer!r}; allowed: {', '.join(EMB_OPTIMIZERS)}")
        torch.manual_seed(seed)  # nothing in a step is random today; keeps any future dropout fixed
        self.model, self.layout, self.amp_bf16 = model, layout, amp_bf16
        emb = embedding_parameters(model)
        emb_ids = {id(p) for p in emb}
        dense = [p for p in model.parameters() if id(p) not in emb_ids and p.requires_grad]
        self.dense_opt = None
        if dense:
            try:  # the fused kernel cuts per-parameter launch/Python overhead (CPU and CUDA)
                self.dense_opt = torch.optim.Adam(dense, lr=lr, fused=True)
            except (RuntimeError, TypeError):
                self.dense_opt = torch.optim.Adam(dense, lr=lr)
        self.emb_opt = _embedding_optimizer(model, emb, emb_optimizer, emb_lr, fused_embeddings)
        self.device_type = next(model.parameters()).device.type

    def prepare(self, batch):
        """The batch with its per-batch bookkeeping built (the model's `prepare`); what `step` consumes
        without a host sync. May sync itself: call it outside a timed region."""
        prepare = getattr(self.model, "prepare", None)
        return batch if prepare is None else prepare(batch, self.layout)

    def loss(self, batch) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.amp_bf16):
            return self.model(batch, self.layout)["loss"]

    def step(self, batch) -> torch.Tensor:
        for opt in (self.dense_opt, self.emb_opt):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
        loss = self.loss(batch)
        loss.backward()
        with region(OPTIMIZER):
            for opt in (self.dense_opt, self.emb_opt):
                if opt is not None:
                    opt.step()
        return loss.detach()


def _embedding_optimizer(model: nn.Module, emb: list, name: str, lr: float, fused: bool):
    if not emb:
        return None
    if not fused:
        return torch.optim.SGD(emb, lr=lr) if name == "sgd" else RowWiseAdagrad(emb, lr=lr)
    sinks = enable_row_grads(model)
    row_grads = [sinks.get(id(p)) for p in emb]
    return FusedSparseSGD(emb, row_grads, lr=lr) if name == "sgd" else FusedRowWiseAdagrad(emb, row_grads, lr=lr)
