"""Profiler labels of a training step's parts, so a profile splits a step's GPU time by component
(e.g. the user-side share s_u of the impression layout, which bounds what ROO can save).

    roo/user         the user side: what runs once per user row, i.e. once per request under ROO
                     and once per impression without it. DLRM: the user tables and UserArch;
                     two-tower: the user tower and the in-batch similarity ([rows, N]); HSTU: the
                     context token, the history's embeddings and the stack over the sequences
                     (whose work is the history's: one target token per impression sequence)
    roo/item         the item side: item tables, item MLPs / tower, the HSTU target tokens
    roo/interaction  the rest of the forward: ROO's expansion, the interaction and top MLP, the
                     heads
    roo/loss         the loss
    roo/optimizer    the optimizers' steps (roo_ref.train)

Each label is a `torch.profiler.record_function` range around the part's forward; its backward
nodes (the autograd nodes the part created) run inside a range of the same name too, so both
passes' kernels fall under it. When no profiler is running, every label is a no-op (one check).

The embedding optimizer's work is the work of the side that looked the rows up: updating the rows
of the user's history is user-side work (it shrinks k-fold under ROO like the lookup itself). So
inside roo/optimizer each table's update runs in a range naming its sides (`optimizer_range`):
    roo/optimizer/user                every id the table got this step came from a user-side lookup
    roo/optimizer/item                ... from an item-side lookup
    roo/optimizer/user=0.9,item=0.1   a table both sides read (the item table serves the user's
                                      history and the candidate items): the shares are the step's
                                      ids (nnz) per side, which the host knows without a sync
A lookup's side is the USER or ITEM region open when it runs forward (`current_side`); ids from
a lookup outside both, or a weight's own .grad, belong to no side, and a table with no sided ids
gets no such range. The harness (harness.profile_step) still reports all of it as optimizer time,
and adds each range's busy time times its shares to that side's count for the user-side share s_u.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping

import torch
from torch.autograd.profiler import record_function

USER, ITEM, INTERACTION, LOSS, OPTIMIZER = REGIONS = (
    "roo/user",
    "roo/item",
    "roo/interaction",
    "roo/loss",
    "roo/optimizer",
)


def profiling() -> bool:
    return torch.autograd._profiler_enabled()


SIDES = {USER: "user", ITEM: "item"}
_active = threading.local()  # the names of the regions open on this thread, innermost last


@contextlib.contextmanager
def region(name: str) -> Iterator[None]:
    """A record_function range named `name` while a profiler runs; nothing otherwise."""
    if not profiling():
        yield
        return
    names = getattr(_active, "names", None)
    if names is None:
        names = _active.names = []
    with record_function(name):
        names.append(name)
        try:
            yield
        finally:
            names.pop()


def current_side() -> str | None:
    """ "user" / "item": the innermost USER / ITEM region open on this thread; None outside both
    (and always while no profiler runs, when no region opens)."""
    for name in reversed(getattr(_active, "names", ())):
        if name in SIDES:
            return SIDES[name]
    return None


def optimizer_range(nnz_by_side: Mapping[str | None, int]) -> str | None:
    """The range of a table's update from its step's ids per side (see the module docstring), or
    None when no id has a side."""
    total = sum(nnz_by_side.values())
    shares = {s: nnz_by_side.get(s, 0) / total for s in SIDES.values() if total and nnz_by_side.get(s, 0)}
    if not shares:
        return None
    if len(shares) == 1 and next(iter(shares.values())) == 1.0:
        return f"{OPTIMIZER}/{next(iter(shares))}"
    return f"{OPTIMIZER}/" + ",".join(f"{s}={v:.6g}" for s, v in shares.items())


def optimizer_region(nnz_by_side: Mapping[str | None, int]) -> contextlib.AbstractContextManager:
    """`region(optimizer_range(...))` while a profiler runs and the table has sided ids."""
    name = optimizer_range(nnz_by_side) if profiling() else None
    return contextlib.nullcontext() if name is None else region(name)


_open = threading.local()  # the range of the backward node running on this thread


def _pre(name: str):
    def hook(grad_outputs):
        rf = record_function(name)
        rf.__enter__()
        _open.rf = rf

    return hook


def _post(grad_inputs, grad_outputs):
    rf = getattr(_open, "rf", None)
    if rf is not None:
        _open.rf = None
        rf.__exit__(None, None, None)


class Regions:
    """One forward pass's labels: `with regions(name): out = ...` then `regions.tag(name, out)`
    labels the backward nodes behind `out` not labelled yet (parts are tagged in forward order, so
    a later part never claims an earlier one's nodes). A no-op without a profiler."""

    def __init__(self) -> None:
        self.on = profiling()
        self._seen: set[int] = set()

    def __call__(self, name: str) -> contextlib.AbstractContextManager:
        return region(name) if self.on else contextlib.nullcontext()

    def tag(self, name: str, *outputs: torch.Tensor) -> None:
        if not self.on:
            return
        todo = [t.grad_fn for t in outputs if isinstance(t, torch.Tensor) and t.grad_fn is not None]
        while todo:
            node = todo.pop()
            # a parameter's AccumulateGrad node outlives the step: a hook on it would pile up
            if node is None or id(node) in self._seen or type(node).__name__ == "AccumulateGrad":
                continue
            self._seen.add(id(node))
            node.register_prehook(_pre(name))
            node.register_hook(_post)
            todo.extend(nxt for nxt, _ in node.next_functions)
