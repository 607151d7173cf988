"""Kernel-class time models: what one kernel of each class costs on a calibrated device.

`roo-bench calibrate` (harness.calibration) measures each class with microbenchmarks and stores
the tables in the calibration record (`metrics.kernel_classes`); `KernelClasses.from_dict` reads
them back. The classes and what they are measured with:

  gemm           seconds of torch.matmul on [m, k] x [k, n] over a grid of (m, k, n) per dtype;
                 priced as 2mkn / rate(m, k, n), the rate interpolated in log space
  gather         embedding_bag forward (sum pooling) vs the bytes of the rows it reads
  grad_reduce    roo_ref.sparse_optim.rowwise_adagrad_update (sort, segment sums, row update)
                 vs (ids, duplicates per distinct row) at one width, scaled by width
  elementwise    a binary elementwise op vs the bytes it moves (a kernel's fixed cost below)
  reduction      a row-sum vs the bytes it reads
  optimizer      fused Adam vs the bytes of parameters + state it streams
  hstu_attention the Triton HSTU attention, forward + backward as one layer calls it, mask-aware
                 FLOP rate vs (max sequence length, targets per sequence, sequences), at least
                 `floor_s` (a tiny call's kernel time) per call
  host           per-op host cost of an eager training step (autograd, dispatch, launch),
                 per-launch cost of a bare eager op, of a Triton kernel launched from Python,
                 one CUDA-graph replay, one device sync

Interpolation is multilinear in log(size) with the value clamped at the grid's edges: a rate
stays the edge's rate beyond the grid (time grows with the work), and no kernel is cheaper than
the class's `floor_s` (the smallest time measured: a launch's fixed cost). Tables are made
monotone in size on load (`isotonic`: each time at most the time of any bigger size), so a bigger
kernel never prices cheaper and one slow warm-up call at a small size does not raise every size.

A record whose timer could put the host's issue into a long call's time (`timing` not "device":
one eager call between two CUDA events, taken for a call whose first timing was >= EVENTS_TIMED_S)
holds, for a class whose smallest cell took that path, a plateau of cells at the host's issue time
of one call. The host term prices that issue already (counted aten ops, Triton launches), so those
cells carry no kernel time: `strip_host_plateau` gives them the rate of the nearest cell above the
plateau that is no smaller in any size (a measured device rate) and the floor of one kernel.

A grid cell the calibration could not measure (past its memory or work cap) takes the rate of the
nearest measured cell no larger in any size (`fill_nearest`): a rate is never invented above what
was measured, and a table's `measured` mask says which cells are real.

`from_roofs` builds the same classes from two roofs (a datasheet entry or an old calibration
record with only matmul FLOP/s and copy bandwidth): the roofline as a degenerate calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workloads.errors import UserError

CLASSES = ("gemm", "gather", "grad_reduce", "elementwise", "reduction", "optimizer", "hstu_attention")
# harness.calibration.timing times a call eagerly, between two CUDA events, when its first timing
# is at least this long; a record without `timing: "device"` had the host's issue inside that time
EVENTS_TIMED_S = 300e-6


def _arr(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise UserError(f"calibration table {what}: needs positive finite numbers")
    return a


@dataclass(frozen=True)
class Grid:
    """Values on a grid of sizes (one axis per size), interpolated multilinearly in log-log space,
    clamped at the grid's edges. `values` has shape (len(axis) for axis in axes)."""

    axes: tuple[np.ndarray, ...]
    values: np.ndarray

    @classmethod
    def make(cls, axes: Any, values: Any, what: str = "grid") -> Grid:
        ax = tuple(_arr(a, f"{what} axis").ravel() for a in axes)
        for a in ax:
            if np.any(np.diff(a) <= 0):
                raise UserError(f"calibration table {what}: axis values must increase")
        v = _arr(values, f"{what} values").reshape(tuple(len(a) for a in ax))
        return cls(ax, v)

    def __call__(self, *xs: Any) -> Any:
        """The interpolated value at sizes `xs` (numbers or broadcastable numpy arrays)."""
        logv = np.log(self.values)
        pos = []
        for a, x in zip(self.axes, xs, strict=True):
            lx = np.log(np.clip(np.asarray(x, dtype=float), a[0], a[-1]))
            la = np.log(a)
            if len(a) == 1:
                pos.append((np.zeros_like(lx, dtype=int), np.zeros_like(lx)))
                continue
            i = np.clip(np.searchsorted(la, lx, side="right") - 1, 0, len(a) - 2)
            w = (lx - la[i]) / (la[i + 1] - la[i])
            pos.append((i, w))
        out = 0.0
        for corner in np.ndindex(*(2,) * len(self.axes)):
            idx, weight = [], 1.0
            for (i, w), c, a in zip(pos, corner, self.axes, strict=True):
                if len(a) == 1:
                    idx.append(i)
                    weight = weight * (1.0 if c == 0 else 0.0)
                else:
                    idx.append(i + c)
                    weight = weight * (w if c else 1.0 - w)
            out = out + weight * logv[tuple(idx)]
        return np.exp(out)

    def to_dict(self) -> dict:
        return {"axes": [a.tolist() for a in self.axes], "values": self.values.tolist()}


def fill_nearest(values: Any, measured: Any) -> np.ndarray:
    """`values` with every unmeasured cell (`measured` False) set to the value of the nearest
    measured cell that is no larger along any axis (distance: grid steps, summed); the cell at the
    grid's origin must be measured. Why dominated cells only: rates rise with size up to a
    saturation, so a smaller measured shape's rate never overstates a bigger one's."""
    v = np.array(values, dtype=float)
    ok = np.asarray(measured, dtype=bool).reshape(v.shape)
    if not ok.flat[0]:
        raise UserError("calibration table: the smallest cell was not measured")
    idx = np.argwhere(ok)
    for cell in np.argwhere(~ok):
        below = idx[np.all(idx <= cell, axis=1)]
        near = below[np.argmin(np.abs(cell - below).sum(axis=1))]
        v[tuple(cell)] = v[tuple(near)]
    return v


def hstu_cell_flops(axes: Any, shape: dict) -> np.ndarray:
    """Mask-aware forward + backward FLOPs of each (max length, targets, sequences) cell of the
    hstu_attention table, as harness.calibration.hstu measures them (targets < length)."""
    L, t, B = np.meshgrid(*(np.asarray(a, dtype=float) for a in axes), indexing="ij")
    t = np.minimum(t, L - 1)
    h = L - t
    pairs = h * (h + 1) / 2 + t * (h + 1)
    return 3 * 2 * shape["heads"] * (shape["d_qk"] + shape["d_v"]) * B * pairs


def isotonic(times: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """`times` made non-decreasing along each of `axes`: each time at most the time of any bigger
    size (a running min from the big end). Why not a running max from the small end: a timing's
    noise is upward (a warm-up call, a clock ramp, a host stall), and a running max lets one slow
    call at the smallest size set the time of every size up to where the device catches up."""
    t = np.array(times, dtype=float)
    for ax in axes:
        t = np.flip(np.minimum.accumulate(np.flip(t, axis=ax), axis=ax), axis=ax)
    return t


def strip_host_plateau(rg: RateGrid, work: Any, floor_s: float) -> RateGrid:
    """`rg` without the host-issue plateau of an events-timed smallest cell (module docstring):
    the cells whose time is the floor take the rate of the nearest cell above it that is no
    smaller in any size (none such: the nearest above it), are marked unmeasured, and the floor
    becomes `floor_s`. A table whose floor is below EVENTS_TIMED_S, or with no cell above the
    plateau, is returned as it is."""
    if rg.floor_s < EVENTS_TIMED_S:
        return rg
    w = np.broadcast_to(np.asarray(work, dtype=float), rg.grid.values.shape)
    plateau = w / rg.grid.values <= rg.floor_s * (1 + 1e-6)
    above = np.argwhere(~plateau)
    if not len(above):
        return rg
    rate = np.array(rg.grid.values)
    for cell in np.argwhere(plateau):
        dom = above[np.all(above >= cell, axis=1)]
        pool = dom if len(dom) else above
        near = pool[np.argmin(np.abs(pool - cell).sum(axis=1))]
        rate[tuple(cell)] = rate[tuple(near)]
    measured = ~plateau if rg.measured is None else rg.measured & ~plateau
    return RateGrid(Grid(rg.grid.axes, rate), float(floor_s), measured)


@dataclass(frozen=True)
class Curve:
    """Seconds of one kernel vs its size (bytes), log-log interpolated; below the smallest size the
    smallest time (the fixed cost), above the largest the largest size's rate."""

    sizes: np.ndarray
    seconds: np.ndarray

    @classmethod
    def make(cls, sizes: Any, seconds: Any, what: str = "curve") -> Curve:
        g = Grid.make([sizes], seconds, what)
        return cls(g.axes[0], isotonic(g.values, (0,)))

    def __call__(self, size: Any) -> Any:
        x = np.asarray(size, dtype=float)
        lt = np.interp(np.log(np.clip(x, self.sizes[0], None)), np.log(self.sizes), np.log(self.seconds))
        t = np.exp(lt)
        return np.where(x > self.sizes[-1], self.seconds[-1] * x / self.sizes[-1], t)

    def to_dict(self) -> dict:
        return {"sizes": self.sizes.tolist(), "seconds": self.seconds.tolist()}

    @classmethod
    def from_dict(cls, d: dict, what: str) -> Curve:
        return cls.make(d["sizes"], d["seconds"], what)


@dataclass(frozen=True)
class RateGrid:
    """Work per second on a grid of sizes: time = work / rate(sizes), at least `floor_s`.
    Built from measured seconds made monotone in every size, so time never falls with size.
    `measured`: which cells were measured (None: all); the others hold `fill_nearest`'s rate."""

    grid: Grid
    floor_s: float
    measured: np.ndarray | None = None

    @classmethod
    def from_times(cls, axes: Any, seconds: Any, work: Any, what: str, measured: Any = None) -> RateGrid:
        """`seconds` may hold NaN where `measured` is False (or NaN cells are the unmeasured ones)."""
        t = np.array(seconds, dtype=float)
        ok = np.isfinite(t) if measured is None else np.asarray(measured, dtype=bool).reshape(t.shape)
        w = _arr(work, f"{what} work").reshape(t.shape)
        rate = fill_nearest(np.where(ok, w / np.where(ok, t, 1.0), np.nan), ok)
        g = Grid.make(axes, w / rate, what)
        t = isotonic(g.values, tuple(range(len(g.axes))))
        return cls(Grid(g.axes, w / t), float(t[ok].min()), None if ok.all() else ok)

    def seconds(self, work: Any, *sizes: Any) -> Any:
        return np.maximum(np.asarray(work, dtype=float) / self.grid(*sizes), self.floor_s)

    def to_dict(self) -> dict:
        out = {**self.grid.to_dict(), "floor_s": self.floor_s}
        if self.measured is not None:
            out["measured"] = self.measured.tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict, what: str) -> RateGrid:
        g = Grid.make(d["axes"], d["values"], what)
        m = d.get("measured")
        return cls(g, float(d["floor_s"]), None if m is None else np.asarray(m, dtype=bool).reshape(g.values.shape))


@dataclass(frozen=True)
class Host:
    """Host-side costs (seconds): per aten op of an eager training step, per bare eager op,
    per CUDA-graph replay, per device synchronization, per Triton kernel launched from Python
    (0 where the calibration has none: an older record, or no Triton)."""

    per_op_s: float
    per_launch_s: float
    graph_launch_s: float
    per_sync_s: float
    per_triton_launch_s: float = 0.0
    # {model preset: {layout: per aten op}} from that preset's own step at a few requests
    # (harness.calibration.host); per_op_s for any other model
    per_op_by_model: dict = field(default_factory=dict)

    def per_op(self, model: str | None, layout: str) -> float:
        """Host seconds per aten op of `model`'s eager step in `layout`."""
        return float(self.per_op_by_model.get(model or "", {}).get(str(layout), self.per_op_s))

    def to_dict(self) -> dict:
        return {**self.__dict__, "per_op_by_model": {m: dict(v) for m, v in self.per_op_by_model.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> Host:
        by_model = {
            str(m): {str(lay): float(x) for lay, x in v.items()} for m, v in (d.get("per_op_by_model") or {}).items()
        }
        scalars = {k: float(v) for k, v in d.items() if k in cls.__dataclass_fields__ and k != "per_op_by_model"}
        return cls(**scalars, per_op_by_model=by_model)


@dataclass(frozen=True)
class KernelClasses:
    """Every class's table (see the module docstring), plus where they came from."""

    gemm: dict[str, RateGrid]  # per dtype: "bf16", "fp32"
    gather: Curve
    grad_reduce: RateGrid  # axes (ids, duplicates per distinct row); work = ids
    grad_reduce_dim: int
    elementwise: Curve
    reduction: Curve
    optimizer: Curve
    # axes (max length, targets per sequence[, sequences]); work = one call's FLOPs
    hstu_attention: RateGrid | None
    host: Host
    source: str
    serial: bool = False  # host and kernels share one thread (CPU): their times add, never overlap

    def gemm_s(self, m: Any, k: Any, n: Any, dtype: str) -> Any:
        g = (
            self.gemm.get(dtype)
            or self.gemm.get("fp32" if dtype == "fp32" else "bf16")
            or next(iter(self.gemm.values()))
        )
        return g.seconds(2.0 * np.asarray(m, float) * k * n, m, k, n)

    def hstu_attention_s(self, flops: Any, max_len: Any, targets: Any, seqs: Any, calls: int = 1) -> Any:
        """Seconds of `calls` equal attention calls (one per layer) doing `flops` in all. A table
        of an older calibration has no sequences axis and was measured at one large token count,
        so its floor is no per-call cost: it prices the work as one call."""
        h = self.hstu_attention
        if h is None:
            raise UserError("calibration has no hstu_attention class")
        if len(h.grid.axes) == 2:
            return h.seconds(flops, max_len, targets)
        sizes = (max_len, targets, seqs)
        return calls * h.seconds(np.asarray(flops, dtype=float) / calls, *sizes)

    def grad_reduce_s(self, ids: Any, distinct: Any, dim: int) -> Any:
        """Seconds of one table's update: `ids` of width `dim` priced as ids x dim / (the table's
        dim) ids of the measured width, at the same duplicates per row. Why the work and not the
        time is scaled: the bytes per id grow with the width, a call's fixed cost does not."""
        ids = np.maximum(np.asarray(ids, dtype=float), 1.0)
        dup = ids / np.clip(distinct, 1.0, ids)
        eq = ids * (dim / self.grad_reduce_dim)
        return self.grad_reduce.seconds(eq, eq, dup)

    def to_dict(self) -> dict:
        return {
            "gemm": {k: v.to_dict() for k, v in self.gemm.items()},
            "gather": self.gather.to_dict(),
            "grad_reduce": {**self.grad_reduce.to_dict(), "dim": self.grad_reduce_dim},
            "elementwise": self.elementwise.to_dict(),
            "reduction": self.reduction.to_dict(),
            "optimizer": self.optimizer.to_dict(),
            "hstu_attention": None if self.hstu_attention is None else self.hstu_attention.to_dict(),
            "host": self.host.to_dict(),
            "source": self.source,
            "serial": self.serial,
            "timing": "device",  # host plateaus, if any, were stripped on load
        }

    @classmethod
    def from_dict(cls, d: dict) -> KernelClasses:
        try:
            hstu = d.get("hstu_attention")
            elementwise = Curve.from_dict(d["elementwise"], "elementwise")
            red = RateGrid.from_dict(d["grad_reduce"], "grad_reduce")
            att = None if hstu is None else RateGrid.from_dict(hstu, "hstu_attention")
            if d.get("timing") != "device":  # an older timer: strip the host-issue plateaus
                kernel = float(elementwise.seconds[0])
                red = strip_host_plateau(red, red.grid.axes[0][:, None], kernel)
                if att is not None and d.get("hstu_shape") and len(att.grid.axes) == 3:
                    att = strip_host_plateau(att, hstu_cell_flops(att.grid.axes, d["hstu_shape"]), kernel)
            return cls(
                gemm={k: RateGrid.from_dict(v, f"gemm {k}") for k, v in d["gemm"].items()},
                gather=Curve.from_dict(d["gather"], "gather"),
                grad_reduce=red,
                grad_reduce_dim=int(d["grad_reduce"]["dim"]),
                elementwise=elementwise,
                reduction=Curve.from_dict(d["reduction"], "reduction"),
                optimizer=Curve.from_dict(d["optimizer"], "optimizer"),
                hstu_attention=att,
                host=Host.from_dict(d["host"]),
                source=str(d.get("source", "calibration")),
                serial=bool(d.get("serial", False)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"calibration's kernel_classes is malformed ({type(e).__name__}: {e})") from None

    @classmethod
    def from_roofs(
        cls, flops: dict[str, float], bandwidth: float, launch_s: float, source: str = "roofs", serial: bool = False
    ) -> KernelClasses:
        """The roofline as kernel classes: every rate constant, every kernel at least `launch_s`."""
        one = [[1.0], [1.0], [1.0]]

        def bw_curve() -> Curve:  # max(launch_s, bytes / bandwidth)
            return Curve.make([1.0, max(2.0, launch_s * bandwidth)], [launch_s, launch_s])

        return cls(
            gemm={k: RateGrid(Grid.make(one, [[[f]]]), launch_s) for k, f in flops.items()},
            gather=bw_curve(),
            grad_reduce=RateGrid(Grid.make([[1.0], [1.0]], [[bandwidth / (64 * 4 * 6)]]), launch_s),
            grad_reduce_dim=64,
            elementwise=bw_curve(),
            reduction=bw_curve(),
            optimizer=bw_curve(),
            hstu_attention=None,
            host=Host(launch_s, launch_s, launch_s, 0.0),
            source=source,
            serial=serial,
        )
