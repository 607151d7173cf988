"""The rows of the cost table (`Component`) and the building blocks the formulas add into them.

A row holds FLOPs exactly as torch's FlopCounterMode counts them (the matmul family, following
autograd: a Linear whose input does not require grad runs no grad-input matmul), an estimate of the
elementwise work the counter leaves out (`other_flops`, never mixed into `fwd_flops`), the bytes
moved through device memory, kernel launches and parameter bytes (docs/cost-model.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from roo_ref.cost.stats import Num
from workloads.errors import UserError
from workloads.layout import LAYOUTS

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
PARAM_BYTES = 4  # fp32 master weights (bf16 runs as autocast over fp32 parameters, roo_ref.train)
ID_BYTES = 8  # int64 ids and lengths

# per-element estimates for work FlopCounterMode does not count (docs/cost-model.md)
LN_FWD_FLOPS, LN_BWD_FLOPS = 8, 16
ADAM_FLOPS, ADAGRAD_FLOPS = 12, 4
BCE_FLOPS = 10
# rows whose parameters are embedding tables (sparse gradients, row-wise Adagrad, no all-reduce)
EMBEDDING_ROWS = ("user embeddings", "history pooling", "history embeddings", "item embeddings")


@dataclass
class Component:
    """One row of the cost table (numbers are ints, floats or numpy arrays)."""

    name: str
    layout: str
    side: str  # "user" | "item" | "shared" | "expansion" | "optimizer" | "comm" | "storage"
    fwd_flops: Num = 0  # FlopCounterMode-accounted (matmul family)
    bwd_flops: Num = 0
    fwd_flops_mask_aware: Num | None = None  # None: same as fwd_flops
    bwd_flops_mask_aware: Num | None = None
    other_flops: Num = 0  # elementwise estimate, outside FlopCounterMode's accounting
    bytes: Num = 0  # device memory traffic, fwd + bwd (+ update for optimizers)
    kernels: Num = 0
    param_bytes: Num = 0
    user_fraction: Num = 0.0  # share of this component's impression-layout work that ROO dedups
    comm_bytes: Num = 0  # network bytes per step (all ranks), comm rows only
    storage_bytes: Num = 0  # uncompressed bytes of the step's samples, storage row only
    modules: tuple[str, ...] = ()  # roo_ref.flops module paths whose counted FLOPs this row prices
    note: str = ""
    # what the kernel-class time model (roo_ref.cost.time_model) prices per kernel: the matmuls
    # (m, k, n) the row launches, forward and backward, and its embedding lookups (ids, width)
    gemms: list = field(default_factory=list, repr=False)
    lookups: list = field(default_factory=list, repr=False)

    @property
    def flops(self) -> Num:
        return self.fwd_flops + self.bwd_flops

    @property
    def flops_mask_aware(self) -> Num:
        f = self.fwd_flops if self.fwd_flops_mask_aware is None else self.fwd_flops_mask_aware
        b = self.bwd_flops if self.bwd_flops_mask_aware is None else self.bwd_flops_mask_aware
        return f + b

    def to_dict(self) -> dict:
        d = {f.name: to_py(getattr(self, f.name)) for f in fields(self) if f.name not in ("gemms", "lookups")}
        d["modules"] = list(self.modules)
        d["flops"] = to_py(self.flops)
        d["flops_mask_aware"] = to_py(self.flops_mask_aware)
        fwd_m, bwd_m = self.fwd_flops_mask_aware, self.bwd_flops_mask_aware
        d["fwd_flops_mask_aware"] = to_py(self.fwd_flops if fwd_m is None else fwd_m)
        d["bwd_flops_mask_aware"] = to_py(self.bwd_flops if bwd_m is None else bwd_m)
        return d


def to_py(v: Any) -> Any:
    """numpy arrays and scalars as plain Python (lists, ints, floats) for JSON."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def new_component(name: str, layout: str, side: str, modules: tuple[str, ...] | list[str] = (), **kw: Any) -> Component:
    return Component(name=name, layout=layout, side=side, modules=tuple(modules), **kw)


class Acc:
    """Accumulates Linear/elementwise pieces into one Component (`e`: bytes per activation)."""

    def __init__(self, comp: Component, e: int):
        self.c, self.e = comp, e

    def linear(self, m: Num, k: Num, n: Num, *, bias: bool = True, grad_in: bool = True, act: bool = False) -> Acc:
        """nn.Linear (addmm, or mm without bias) on [m, k] -> [m, n], optional ReLU after it.
        Backward: grad-weight mm always; grad-input mm only if the input requires grad."""
        c, e = self.c, self.e
        f = 2 * m * k * n
        c.fwd_flops += f
        c.bwd_flops += f * 2 if grad_in else f
        c.bytes += e * (m * k + k * n + m * n) + (2 * e * m * n if act else 0)
        c.bytes += e * (m * k + m * n) + PARAM_BYTES * k * n + (e * m * n if bias else 0)
        if grad_in:
            c.bytes += e * (m * n + k * n + m * k)
        if act:
            c.bytes += 3 * e * m * n
        c.kernels += 2 + (1 if bias else 0) + (1 if grad_in else 0) + (2 if act else 0)
        c.gemms += [(m, k, n), (k, m, n)] + ([(m, n, k)] if grad_in else [])
        c.other_flops += (2 * m * n if act else 0) + (2 * m * n if bias else 0)
        c.param_bytes += PARAM_BYTES * (k * n + (n if bias else 0))
        return self

    def mlp(
        self, m: Num, k: int, sizes: tuple[int, ...] | list[int], *, final_act: bool = True, grad_in: bool = True
    ) -> int:
        """Linear layers of widths `sizes` (ReLU after each but, without final_act, the last);
        returns the output width."""
        d = k
        for i, s in enumerate(sizes):
            self.linear(m, d, s, grad_in=grad_in if i == 0 else True, act=final_act or i < len(sizes) - 1)
            d = s
        return d

    def elementwise(
        self, elements: Num, *, reads: int = 1, writes: int = 1, bwd_passes: int = 3, flops: int = 1, kernels: int = 2
    ) -> Acc:
        """An elementwise op over `elements` values: fwd reads+writes, bwd `bwd_passes` passes."""
        c, e = self.c, self.e
        c.bytes += e * elements * (reads + writes + bwd_passes)
        c.other_flops += flops * elements * 2
        c.kernels += kernels
        return self

    def layer_norm(self, rows: Num, width: int) -> Acc:
        """nn.LayerNorm over rows x width. Under a half-precision autocast (e < 4) the norm runs in
        fp32 (autocast's policy for layer_norm): its input is cast up, it reads and writes fp32 (the
        backward reads dY and X twice: dX, then the gamma/beta reduction), the consumer casts the
        output back down, and the backward casts the gradient each way too."""
        c, e = self.c, self.e
        n = rows * width
        if e < 4:
            f32 = 4
            c.bytes += n * ((e + f32) + 2 * f32 + (f32 + e))  # forward: cast up, norm, cast down
            c.bytes += n * ((e + f32) + 5 * f32 + (f32 + e))  # backward: cast, dX + dgamma/dbeta, cast
            c.kernels += 4
        else:
            c.bytes += e * n * (2 + 3)
        c.bytes += 2 * PARAM_BYTES * width * 3
        c.other_flops += (LN_FWD_FLOPS + LN_BWD_FLOPS) * n
        c.kernels += 3
        c.param_bytes += 2 * PARAM_BYTES * width
        return self

    def emb_bag(self, ids: Num, rows_out: Num, width: int) -> Acc:
        """Pooled lookup: read ids and their rows, write the pooled rows; backward writes one sparse
        gradient row per id (embedding_bag's sparse backward)."""
        c, e = self.c, self.e
        c.bytes += ID_BYTES * ids * 2 + PARAM_BYTES * width * ids + e * rows_out * width
        c.bytes += e * rows_out * width + PARAM_BYTES * width * ids
        c.other_flops += 2 * width * ids
        c.lookups.append((ids, width))
        return self


def heads_loss(layout: str, N: Num, width: int, tasks: int, e: int) -> Component:
    """The task heads (one Linear to `tasks` logits per impression) and their BCE loss."""
    c = new_component("heads + loss", layout, "item", ("heads",))
    a = Acc(c, e)
    a.linear(N, width, tasks)
    c.bytes += 4 * N * tasks * 6
    c.other_flops += BCE_FLOPS * N * tasks
    c.kernels += 8
    return c


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise UserError(f"layout={layout!r}; allowed: {', '.join(LAYOUTS)}")


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise UserError(f"dtype={dtype!r}; allowed: {', '.join(DTYPE_BYTES)}") from None
