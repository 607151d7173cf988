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
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

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


@contextlib.contextmanager
def region(name: str) -> Iterator[None]:
    """A record_function range named `name` while a profiler runs; nothing otherwise."""
    if not profiling():
        yield
        return
    with record_function(name):
        yield


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
