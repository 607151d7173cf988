"""A training step captured once per bucket as a CUDA graph and replayed (`--graph`).

    gt = GraphTrainer(Trainer(model, layout, ...))
    gt.plan(batches)         # optional: one bucket all of these fit (else planned batch by batch)
    gb = gt.prepare(batch)   # pad to a bucket (roo_ref.pad) + the model's prepare: outside timing
    gt.capture([gb, ...])    # capture every bucket these batches need (else: on first use)
    loss = gt.step(gb)       # copy gb into the bucket's static buffers, replay, return the loss

Why: an eager step launches hundreds of kernels at tens of microseconds of host time each, so the
GPU idles for much of a step (docs/performance.md); a graph replays all of them in one launch. The step is
already sync-free once prepared (tests/test_sync_free.py), which is what capture needs.

Per bucket, capture (`_capture`): a clone of the first prepared batch becomes the static input
buffers; warm-up steps run on a side stream with the loss scaled by 0 (every gradient exactly 0:
the embedding tables and their row-wise Adagrad state stay bit-equal, and the dense parameters
and their optimizer state are restored from a snapshot afterwards, so the warm-up trains nothing);
then zero_grad + forward + backward + both optimizers' steps (`Trainer.step`) are captured.
The dense Adam runs with `capturable=True` (its step count stays on the device); the fused
row-wise Adagrad (roo_ref.sparse_optim) is sync-free and its only host state, the row-gradient
lists, is filled and emptied within the captured step.

Buckets (roo_ref.pad.BucketPlan): a batch goes to the smallest planned bucket it fits; if none, a
new bucket is planned that covers the batch and every earlier bucket (so sizes that drift upwards
re-capture rarely), up to `max_buckets` (default 4); past that a batch that fits no bucket is a
UserError naming the batch's sizes and the largest bucket. `plan(batches)` plans one bucket for a
known set of batches (what the harness does), so they share one graph. All graphs share one
memory pool (a graph's temporaries are only alive during its own replay; the loss is copied out
right after the replay).
`close()` (or leaving `with GraphTrainer(...)`) frees the graphs.

Results: `step` returns a copy of the loss; the dense parameters' `.grad` after a replay belong
to the graph and are not meaningful outside it. The profiler sees the replayed kernels but not
the models' `roo/*` ranges (no Python runs in a replay).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

import torch

from roo_ref.pad import Bucket, BucketPlan, batch_sizes, pad_batch
from roo_ref.train import Trainer
from workloads.errors import UserError

MAX_BUCKETS = 4
WARMUP = 2


# --- the tensors of a prepared batch: flatten, clone, signature -----------------------------------
def _walk(obj: Any, path: str, out: list) -> None:
    """(path, leaf) for every tensor and host value under a prepared batch (dataclasses, tuples)."""
    if isinstance(obj, torch.Tensor):
        out.append((path, obj))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _walk(getattr(obj, f.name), f"{path}.{f.name}", out)
    elif isinstance(obj, list | tuple):
        for i, x in enumerate(obj):
            _walk(x, f"{path}[{i}]", out)
    else:
        out.append((path, obj))


def leaves(obj: Any) -> list[tuple[str, Any]]:
    out: list = []
    _walk(obj, "", out)
    return out


def signature(obj: Any) -> tuple:
    """What a captured graph depends on: every tensor's shape, dtype and device, every host value."""
    sig = []
    for path, x in leaves(obj):
        if isinstance(x, torch.Tensor):
            sig.append((path, tuple(x.shape), x.dtype, x.device))
        else:
            sig.append((path, x.value if isinstance(x, enum.Enum) else x))
    return tuple(sig)


def tensors(obj: Any) -> list[torch.Tensor]:
    return [x for _, x in leaves(obj) if isinstance(x, torch.Tensor)]


def clone_tree(obj: Any) -> Any:
    """A copy of a prepared batch whose every tensor is a fresh clone (no two alias)."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        kw = {f.name: clone_tree(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        return type(obj)(**kw)
    if isinstance(obj, list | tuple):
        return type(obj)(clone_tree(x) for x in obj)
    return obj


def copy_into(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """dst[i].copy_(src[i]) for all i, in as few launches as torch allows."""
    if dst:
        torch._foreach_copy_(dst, src)


# --- dense state: snapshot and restore around the warm-up -----------------------------------------
def snapshot(opt: torch.optim.Optimizer | None) -> dict | None:
    """Clones of `opt`'s parameters and state tensors."""
    if opt is None:
        return None
    params = [p for g in opt.param_groups for p in g["params"]]
    state = {id(p): {k: v.clone() for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)} for p in opt.state}
    return {"params": [p.detach().clone() for p in params], "state": state}


@torch.no_grad()
def restore(opt: torch.optim.Optimizer | None, snap: dict | None) -> None:
    """Back to `snap`: the parameters, and each state tensor; a state made since the snapshot is
    zeroed, which is a fresh Adam state (step 0, both moments 0)."""
    if opt is None or snap is None:
        return
    params = [p for g in opt.param_groups for p in g["params"]]
    for p, saved in zip(params, snap["params"], strict=True):
        p.copy_(saved)
    for p, st in opt.state.items():
        saved = snap["state"].get(id(p), {})
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k in saved:
                v.copy_(saved[k])
            elif isinstance(v, torch.Tensor):
                v.zero_()


def make_capturable(opt: torch.optim.Optimizer | None) -> None:
    """Adam with its step count on the device (capturable), before its first step."""
    if opt is None:
        return
    if opt.state:
        raise UserError("the dense optimizer has already stepped; build the GraphTrainer before training")
    opt.defaults["capturable"] = True
    for g in opt.param_groups:
        if "capturable" not in g:
            raise UserError(f"{type(opt).__name__} has no capturable mode; a CUDA-graph step needs one (Adam)")
        g["capturable"] = True


# --- the trainer ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphBatch:
    """A batch padded to `bucket` and prepared; `real` its own sizes."""

    bucket: Bucket
    real: Bucket
    prepared: Any
    signature: tuple
    tensors: list


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    static: list
    signature: tuple
    loss: torch.Tensor


class GraphTrainer:
    """`Trainer`'s step as CUDA-graph replays, one graph per bucket (module docstring)."""

    def __init__(self, trainer: Trainer, max_buckets: int = MAX_BUCKETS, warmup: int = WARMUP):
        if trainer.device_type != "cuda":
            raise UserError(f"a CUDA-graph step needs a CUDA device; the model is on {trainer.device_type!r}")
        if max_buckets < 1 or warmup < 1:
            raise UserError(f"max_buckets={max_buckets}, warmup={warmup}: both must be >= 1")
        make_capturable(trainer.dense_opt)
        self.trainer, self.max_buckets, self.warmup = trainer, max_buckets, warmup
        self.model, self.layout = trainer.model, trainer.layout
        self.sequences = not getattr(self.model, "pooled_history", True)
        self.max_history_len = self.model.config.max_history_len if self.sequences else 0
        self.plans = BucketPlan(max_buckets)
        self.graphs: dict[Bucket, _Graph] = {}
        self._pool = None

    def __enter__(self) -> GraphTrainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Free every graph and its memory pool (the dense gradients live in it too)."""
        for opt in (self.trainer.dense_opt, self.trainer.emb_opt):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
        self.graphs.clear()
        self._pool = None
        torch.cuda.synchronize()
        torch.cuda.empty_cache()

    # -- host side: buckets and padding
    @property
    def buckets(self) -> list[Bucket]:
        return self.plans.buckets

    def plan(self, batches) -> Bucket | None:
        """Plan one bucket that every raw batch of `batches` fits, so a timed loop over them
        captures a single graph: a second capture's eager warm-up would run beside the first
        graph's memory pool, which at production HSTU shapes does not fit twice."""
        raw = [b for b in batches if not isinstance(b, GraphBatch)]
        return self.plans.plan_all([batch_sizes(b, self.max_history_len, self.sequences) for b in raw])

    def prepare(self, batch) -> GraphBatch:
        """`batch` padded to its bucket and prepared (syncs: call it outside a timed step)."""
        if isinstance(batch, GraphBatch):
            return batch
        need = batch_sizes(batch, self.max_history_len, self.sequences)
        bucket = self.plans.choose(need)
        prepared = self.trainer.prepare(pad_batch(batch, bucket, need))
        if self.sequences:  # the attention bound is the bucket's, whatever this batch's longest sequence
            prepared = dataclasses.replace(prepared, extra=dataclasses.replace(prepared.extra, max_len=bucket.seq_len))
        return GraphBatch(bucket, need, prepared, signature(prepared), tensors(prepared))

    def eager_step(self, batch) -> torch.Tensor:
        """The padded batch through the eager step (what a replay runs; e.g. to count its FLOPs)."""
        return self.trainer.step(self.prepare(batch).prepared)

    # -- device side: capture and replay
    def capture(self, batches) -> None:
        """Capture the graph of every bucket `batches` (GraphBatches) need, not captured yet."""
        for gb in batches:
            if gb.bucket not in self.graphs:
                self.graphs[gb.bucket] = self._capture(gb)

    def _warm_up(self, static) -> None:
        t = self.trainer
        for _ in range(self.warmup):
            for opt in (t.dense_opt, t.emb_opt):
                if opt is not None:
                    opt.zero_grad(set_to_none=True)
            (t.loss(static) * 0).backward()  # every gradient exactly 0
            for opt in (t.dense_opt, t.emb_opt):
                if opt is not None:
                    opt.step()

    def _capture(self, gb: GraphBatch) -> _Graph:
        t = self.trainer
        static = clone_tree(gb.prepared)
        saved = snapshot(t.dense_opt)
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._warm_up(static)
        torch.cuda.current_stream().wait_stream(side)
        restore(t.dense_opt, saved)
        del saved
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # the warm-up's cached blocks go back before the graph's pool fills
        graph = torch.cuda.CUDAGraph()
        for opt in (t.dense_opt, t.emb_opt):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph, pool=self._pool):
            loss = t.step(static)
        if self._pool is None:
            self._pool = graph.pool()
        return _Graph(graph, tensors(static), gb.signature, loss)

    def step(self, batch) -> torch.Tensor:
        """One training step of `batch` (a GraphBatch, or a raw batch prepared here) by replay."""
        gb = self.prepare(batch)
        g = self.graphs.get(gb.bucket)
        if g is None:
            self.capture([gb])
            g = self.graphs[gb.bucket]
        if gb.signature != g.signature:
            raise UserError(f"a batch prepared for bucket ({gb.bucket.describe()}) has other shapes than its graph's")
        copy_into(g.static, gb.tensors)
        g.graph.replay()
        return g.loss.clone()
