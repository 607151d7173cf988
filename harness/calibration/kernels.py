"""The kernel-class microbenchmarks (roo_ref.cost.kernel_classes says what each class prices).

Every input is random (never zeros); every table is measured on sizes a grid names (`Grids`:
small on the CPU so its calibration takes seconds, wide on a GPU). The GEMM axes span the models'
real shapes (rows from one request to ~2M HSTU tokens, widths from a 1-wide head to the widest
layer; a backward GEMM puts the rows on the k axis): GEMM grid cells past a work or memory cap
are not run and are left unmeasured (roo_ref.cost.kernel_classes.fill_nearest gives them the rate
of the nearest smaller measured cell, never an invented one)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from harness.calibration.timing import device_seconds


@dataclass(frozen=True)
class Grids:
    gemm: tuple[int, ...]
    gemm_fp32: tuple[int, ...]
    gemm_max_flops: float
    gemm_max_elems: int
    bytes: tuple[int, ...]  # elementwise / reduction / gather / optimizer sizes (bytes)
    reduce_ids: tuple[int, ...]
    reduce_dups: tuple[int, ...]
    hstu_lens: tuple[int, ...]
    hstu_targets: tuple[int, ...]
    hstu_seqs: tuple[int, ...]
    hstu_max_tokens: int
    hstu_max_pairs: float


CPU = Grids(
    gemm=(16, 128, 1024),
    gemm_fp32=(16, 128, 1024),
    gemm_max_flops=2e9,
    gemm_max_elems=1 << 22,
    bytes=tuple(4**i for i in range(6, 12)),
    reduce_ids=(1 << 8, 1 << 11, 1 << 14),
    reduce_dups=(1, 16, 1 << 14),
    hstu_lens=(),
    hstu_targets=(),
    hstu_seqs=(),
    hstu_max_tokens=0,
    hstu_max_pairs=0.0,
)
CUDA = Grids(
    gemm=(1, 8, 64, 256, 1024, 4096, 16384, 65536, 262144, 2097152),
    gemm_fp32=(1, 64, 1024, 16384, 262144),
    gemm_max_flops=4e12,
    gemm_max_elems=1 << 30,
    bytes=tuple(4**i for i in range(6, 16)),
    reduce_ids=(1 << 12, 1 << 15, 1 << 18, 1 << 21, 1 << 23),
    reduce_dups=(1, 16, 256, 1 << 22),
    hstu_lens=(64, 256, 1024, 4096),
    hstu_targets=(1, 16, 128),
    # up to the impression layout's thousands of one-target sequences (hstu-ranking: 2,048 of 257
    # tokens); the token cap leaves out the long ones
    hstu_seqs=(8, 64, 512, 2048),
    hstu_max_tokens=1 << 20,
    hstu_max_pairs=3e8,
)


def _randn(torch, shape, dev, dtype, g):
    return torch.randn(shape, device=dev, dtype=dtype, generator=g)


def gemm_table(torch, dev, dtype, axis: tuple[int, ...], grids: Grids, g) -> dict:
    """{"axes", "values" (seconds; NaN where not run), "work", "measured"} of torch.matmul over
    the (m, k, n) grid. The operands are views of three random buffers allocated once, and the
    product is written into one (`out=`): no allocation inside a timed or captured call."""
    n_ax = len(axis)
    secs = np.full((n_ax,) * 3, np.nan)
    work = np.zeros((n_ax,) * 3)
    cells = []
    for (i, m), (j, k), (l, n) in itertools.product(enumerate(axis), repeat=3):
        work[i, j, l] = 2.0 * m * k * n
        if work[i, j, l] <= grids.gemm_max_flops and max(m * k, k * n, m * n) <= grids.gemm_max_elems:
            cells.append((i, j, l, m, k, n))
    elems = max(max(m * k, k * n, m * n) for *_, m, k, n in cells)
    bufs = [_randn(torch, (elems,), dev, dtype, g) for _ in range(3)]
    for i, j, l, m, k, n in cells:
        a, b, c = bufs[0][: m * k].view(m, k), bufs[1][: k * n].view(k, n), bufs[2][: m * n].view(m, n)
        secs[i, j, l] = device_seconds(lambda a=a, b=b, c=c: torch.matmul(a, b, out=c), dev)
    del bufs
    measured = np.isfinite(secs)
    return {
        "axes": [list(axis)] * 3,
        "values": np.where(measured, secs, np.nan).tolist(),
        "work": work.tolist(),
        "measured": measured.tolist(),
    }


def _n_of(nbytes: int, per: int) -> int:
    return max(1, nbytes // per)


def bandwidth_curves(torch, dev, grids: Grids, g) -> dict:
    """Seconds vs bytes: elementwise add, row-sum, embedding_bag forward, fused Adam."""
    ew, red, gat, opt = [], [], [], []
    table = _randn(torch, (1 << (20 if dev.type == "cuda" else 14), 64), dev, torch.float32, g)
    for nb in grids.bytes:
        n = _n_of(nb, 12)
        a, b, c = (_randn(torch, (n,), dev, torch.float32, g) for _ in range(3))
        ew.append(device_seconds(lambda a=a, b=b, c=c: torch.add(a, b, out=c), dev))
        x = _randn(torch, (_n_of(nb, 256), 64), dev, torch.float32, g)
        red.append(device_seconds(lambda x=x: x.sum(dim=1), dev))
        ids = torch.randint(0, table.shape[0], (_n_of(nb, 256),), device=dev, generator=g)
        offs = torch.arange(0, ids.numel() + 1, 20, device=dev)
        gat.append(
            device_seconds(lambda i=ids, o=offs: torch.nn.functional.embedding_bag(i, table, o, mode="sum"), dev)
        )
        p = torch.nn.Parameter(_randn(torch, (_n_of(nb, 28),), dev, torch.float32, g))
        p.grad = torch.randn_like(p)
        try:
            adam = torch.optim.Adam([p], lr=1e-3, fused=True)
        except (RuntimeError, TypeError):
            adam = torch.optim.Adam([p], lr=1e-3)
        opt.append(device_seconds(adam.step, dev))
        del a, b, c, x, ids, offs, p, adam
    sizes = [float(s) for s in grids.bytes]
    return {
        "elementwise": {"sizes": sizes, "seconds": ew},
        "reduction": {"sizes": sizes, "seconds": red},
        "gather": {"sizes": sizes, "seconds": gat},
        "optimizer": {"sizes": sizes, "seconds": opt},
    }


BAG_IDS = 64  # ids per pooled bag in the gradient-reduction benchmark


def grad_reduce_table(torch, dev, grids: Grids, g, dim: int = 64) -> dict:
    """Seconds of roo_ref.sparse_optim.rowwise_adagrad_update (the implementation the embedding
    optimizer runs) vs (ids, duplicates per distinct row): ids drawn from n / dup distinct rows."""
    from roo_ref.sparse_optim import RowGradSource, rowwise_adagrad_update

    rows_total = max(grids.reduce_ids)
    weight = _randn(torch, (rows_total, dim), dev, torch.float32, g)
    state = torch.rand(rows_total, device=dev, generator=g) + 0.1
    secs = np.zeros((len(grids.reduce_ids), len(grids.reduce_dups)))
    for (i, n), (j, dup) in itertools.product(enumerate(grids.reduce_ids), enumerate(grids.reduce_dups)):
        distinct = max(1, n // dup)
        rowset = torch.randperm(rows_total, device=dev, generator=g)[:distinct]
        ids = rowset[torch.randint(0, distinct, (n,), device=dev, generator=g)]
        # as a pooled lookup hands them over: one output-gradient row per bag of BAG_IDS ids
        bags = max(1, n // BAG_IDS)
        grad = _randn(torch, (bags, dim), dev, torch.float32, g)
        src = torch.arange(n, device=dev) * bags // n
        part = RowGradSource(ids, grad, src)
        secs[i, j] = device_seconds(lambda p=part: rowwise_adagrad_update(weight, state, [p], 1e-3, 1e-8), dev)
        del ids, grad, rowset, src, part
    work = np.repeat(np.array(grids.reduce_ids, float)[:, None], len(grids.reduce_dups), axis=1)
    axes = [[float(x) for x in grids.reduce_ids], [float(x) for x in grids.reduce_dups]]
    return {"axes": axes, "values": secs.tolist(), "work": work.tolist(), "dim": dim}
