"""Distributed benchmark of model-parallel embeddings: the all-to-alls of one training step, both layouts.

Launch with torchrun (or `roo-bench comm --nproc W`, which runs this under torchrun):

    torchrun --standalone --nproc-per-node W -m harness.comm --preset early-ranking --device cuda

Every rank generates the same global batch (W * requests_per_rank requests, same seed) and takes
its contiguous slice of requests (data parallel). Each sparse feature has one embedding table
(torch.nn.functional.embedding_bag, sum pooling, `--embedding-dim` columns, ids modulo
`--row-cap`), sharded table-wise or row-wise across the ranks (roo_ref.comm_cost). One step:

1. input redistribution: all_to_all_single of the bag lengths, then of the ids (int64);
2. lookup on the local tables/shards (one embedding_bag over all received bags, as a table-batched
   embedding does);
3. all_to_all_single of the pooled embeddings back to the bags' ranks (row-wise: partial sums,
   summed at the destination — torchrec's reduce-scatter);
4. a small dense head and a loss; autograd runs the reverse all_to_all_single of the gradients.

Layouts: "impression" sends user features once per impression (the user's ids copied into every
impression); "roo" sends them once per request and expands the pooled embeddings to impressions
after the exchange (torchrec VBE). Item features are per impression in both.

Every all_to_all_single goes through `CountingComm`, which counts the bytes of the tensors handed
to it (and those of them addressed to other ranks) and times each call; rank 0 checks the counts
against roo_ref.comm_cost.exact_a2a_bytes, and every rank checks that the ROO exchange, expanded,
gives every impression exactly the embeddings of the impression-level exchange. Rank 0 writes one
result record (kind "comm") per sharding.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

# NVLink multicast (NVLS) can take a shared host's GPUs down; keep it off in every rank, whatever
# the launcher's environment says. Set before torch.distributed creates any NCCL communicator.
os.environ["NCCL_NVLS_ENABLE"] = "0"

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from roo_ref import comm_cost  # noqa: E402
from workloads.batch import RequestBatch  # noqa: E402
from workloads.jagged import jagged_index_select, keyed_index_select, offsets_from_lengths  # noqa: E402
from workloads.errors import UserError  # noqa: E402
from workloads.generator import generate  # noqa: E402
from workloads.presets import get_preset  # noqa: E402

BACKENDS = ("auto", "gloo", "nccl", "mpi", "ucc")
DEVICES = ("cpu", "cuda")
COMM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TAGS_FWD = ("ids_lengths", "ids_values", "pooled_fwd")


@dataclass(frozen=True)
class CommConfig:
    """What one `harness.comm` run measures (validated on construction)."""

    preset: str = "tiny"
    overrides: tuple[str, ...] = ()
    device: str = "cpu"
    backend: str = "auto"
    shardings: tuple[str, ...] = ("table",)
    assign: str = "greedy"
    embedding_dim: int = 128
    row_cap: int = comm_cost.DEFAULT_ROW_CAP
    requests_per_rank: int | None = None  # None: the spec's requests_per_batch
    steps: int = 20
    warmup: int = 3
    seed: int = 0
    comm_dtype: str = "fp32"
    init_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise UserError(f"--device={self.device!r}; allowed: {', '.join(DEVICES)}")
        if self.backend not in BACKENDS:
            raise UserError(f"--backend={self.backend!r}; allowed: {', '.join(BACKENDS)}")
        if self.backend == "nccl" and self.device != "cuda":
            raise UserError("--backend=nccl needs --device cuda (NCCL runs on GPUs); use gloo on CPU")
        if not self.shardings or any(s not in comm_cost.SHARDINGS for s in self.shardings):
            got = ",".join(self.shardings)
            raise UserError(f"--sharding={got!r}; allowed: {', '.join(comm_cost.SHARDINGS)}")
        if self.assign not in comm_cost.ASSIGNMENTS:
            raise UserError(f"--assign={self.assign!r}; allowed: {', '.join(comm_cost.ASSIGNMENTS)}")
        for name, v, lo in (("--embedding-dim", self.embedding_dim, 1), ("--row-cap", self.row_cap, 1),
                            ("--steps", self.steps, 1), ("--warmup", self.warmup, 0),
                            ("--seed", self.seed, 0)):
            if v < lo:
                raise UserError(f"{name}={v} must be >= {lo}")
        if self.requests_per_rank is not None and self.requests_per_rank < 1:
            raise UserError(f"--requests={self.requests_per_rank} must be >= 1 (requests per rank per step)")
        if self.comm_dtype not in COMM_DTYPES:
            raise UserError(f"--comm-dtype={self.comm_dtype!r}; allowed: {', '.join(COMM_DTYPES)}")
        if not self.init_timeout_s > 0:
            raise UserError(f"--init-timeout={self.init_timeout_s} must be > 0 seconds")
        self.spec()  # an unknown preset or a bad override fails here, before any rank starts

    def spec(self):
        spec = get_preset(self.preset)
        return spec.with_overrides(list(self.overrides)) if self.overrides else spec

    @property
    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "nccl" if self.device == "cuda" else "gloo"

    def requests(self) -> int:
        return self.requests_per_rank or self.spec().requests_per_batch


def check_devices(device: str, nproc: int, backend: str = "auto") -> None:
    """The launch-time checks (before any process starts): ranks >= 1, a GPU per rank for cuda."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise UserError(f"--nproc={nproc} must be >= 1 (ranks to launch)")
    wants_gpu = device == "cuda" or backend == "nccl"
    if wants_gpu and not torch.cuda.is_available():
        raise UserError(
            f"--device {device} --backend {backend}: NCCL needs CUDA GPUs, but none is visible on this "
            "machine (torch.cuda.is_available() is False); use --device cpu (gloo)"
        )
    if device == "cuda" and nproc > torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise UserError(f"--nproc={nproc} ranks but only {n} CUDA device{'s' if n != 1 else ''} visible; "
                        f"use --nproc <= {n}")


# --- the counted collective ----------------------------------------------------------------------------
class CountingComm:
    """all_to_all_single that counts what it is handed: per tag, the bytes of the input tensor
    (numel * element_size, the self-addressed chunk included) and the bytes addressed to other ranks
    (all chunks but input_split_sizes[rank]); and times each call (CUDA events on GPU, perf_counter
    on CPU, where gloo's collective is synchronous)."""

    def __init__(self, rank: int, world: int, device: torch.device):
        self.rank, self.world, self.device = rank, world, device
        self.cuda = device.type == "cuda"
        self.reset()

    def reset(self) -> None:
        self.handed = dict.fromkeys(comm_cost.COMPONENTS, 0)
        self.cross = dict.fromkeys(comm_cost.COMPONENTS, 0)
        self.calls = 0
        self._events: list = []
        self._cpu_s = 0.0

    def all_to_all(self, x: torch.Tensor, send: list[int], recv: list[int], tag: str) -> torch.Tensor:
        x = x.contiguous()
        row = x[0].numel() if x.dim() > 1 else 1
        out = x.new_empty((sum(recv), *x.shape[1:]))
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dist.all_to_all_single(out, x, output_split_sizes=recv, input_split_sizes=send)
            end.record()
            self._events.append((start, end))
        else:
            t = time.perf_counter()
            dist.all_to_all_single(out, x, output_split_sizes=recv, input_split_sizes=send)
            self._cpu_s += time.perf_counter() - t
        nbytes = x.numel() * x.element_size()
        self.handed[tag] += nbytes
        self.cross[tag] += nbytes - send[self.rank] * row * x.element_size()
        self.calls += 1
        return out

    def elapsed_ms(self) -> float:
        """Time spent in the collectives since reset (synchronizes the device)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return sum(s.elapsed_time(e) for s, e in self._events)
        return self._cpu_s * 1e3


class _AllToAll(torch.autograd.Function):
    """Differentiable all_to_all_single: the backward is the reverse exchange of the gradient,
    through the same counter (tag grad_bwd)."""

    @staticmethod
    def forward(ctx, x, comm: CountingComm, send: list[int], recv: list[int]):
        ctx.comm, ctx.send, ctx.recv = comm, send, recv
        return comm.all_to_all(x, send, recv, "pooled_fwd")

    @staticmethod
    def backward(ctx, grad):
        return ctx.comm.all_to_all(grad, ctx.recv, ctx.send, "grad_bwd"), None, None, None


def _segment_sums(lengths: torch.Tensor, splits: list[int]) -> list[int]:
    """Sums of consecutive chunks of `lengths` (chunk sizes `splits`) as host ints (one sync)."""
    offs = offsets_from_lengths(lengths)
    bounds = torch.tensor([0, *splits], device=lengths.device).cumsum(0)
    return torch.diff(offs[bounds]).tolist()


# --- per-layout inputs ---------------------------------------------------------------------------------
@dataclass
class LocalInput:
    """One rank's sparse input in one layout: bags in table order (all bags of table 0, then 1...)."""

    layout: str
    lengths: torch.Tensor  # int64 [local bags]
    values: torch.Tensor  # int64 ids, already modulo the table's rows
    bags: list[list[int]]  # bags[s][t]: bags of table t on rank s (every rank knows all of them)
    n_user_rows: int  # local bags per user table (impressions or requests)
    n_impressions: int
    n_requests: int
    expand: torch.Tensor | None  # roo: local impression -> local request
    labels: torch.Tensor  # float32 [local impressions]


def local_input(batch: RequestBatch, layout: str, tables, rank: int, world: int, device) -> LocalInput:
    r = batch.num_requests
    slices = comm_cost.rank_slices(r, world)
    fu, fi = batch.user_sparse_lengths.shape[0], batch.item_sparse_lengths.shape[0]
    bags = []
    for lo, hi in slices:
        nu, ni = comm_cost.local_bag_counts(batch, layout, lo, hi)
        bags.append([nu] * fu + [ni] * fi)
    lo, hi = slices[rank]
    k = batch.num_impressions[lo:hi]
    imp = batch.impression_offsets()
    imp_idx = torch.arange(int(imp[lo]), int(imp[hi]))
    local_req = torch.repeat_interleave(torch.arange(hi - lo), k)
    user_idx = torch.arange(lo, hi) if layout == "roo" else lo + local_req
    usv, usl = keyed_index_select(batch.user_sparse_values, batch.user_sparse_lengths, user_idx)
    isv, isl = keyed_index_select(batch.item_sparse_values, batch.item_sparse_lengths, imp_idx)
    lengths = torch.cat([usl.reshape(-1), isl.reshape(-1)])
    values = torch.cat([usv, isv])
    bag_table = torch.repeat_interleave(torch.arange(fu + fi), torch.tensor(bags[rank]))
    rows = torch.tensor([t.rows for t in tables], dtype=torch.int64)
    values = values % rows[torch.repeat_interleave(bag_table, lengths, output_size=values.numel())]
    return LocalInput(
        layout=layout,
        lengths=lengths.to(device),
        values=values.to(device),
        bags=bags,
        n_user_rows=hi - lo if layout == "roo" else imp_idx.numel(),
        n_impressions=imp_idx.numel(),
        n_requests=hi - lo,
        expand=local_req.to(device) if layout == "roo" else None,
        labels=batch.labels[imp_idx, 0].to(device),
    )


# --- sharded embeddings ----------------------------------------------------------------------------------
def _init_table(t: int, rows: int, dim: int, seed: int) -> torch.Tensor:
    """Table t's full weight, the same on every rank and for every sharding (CPU generator)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + t)
    return torch.randn(rows, dim, generator=g) * 0.05


class ShardedEmbeddings:
    """This rank's part of every table, concatenated into one weight (as a table-batched embedding);
    `exchange` runs steps 1-3 of a step and returns the pooled embeddings of this rank's bags."""

    def __init__(self, tables, sharding: str, owners, rank: int, world: int, dim: int, seed: int,
                 device: torch.device, comm: CountingComm, comm_dtype: torch.dtype):
        self.tables, self.sharding, self.owners = tables, sharding, owners
        self.rank, self.world, self.dim, self.device, self.comm = rank, world, dim, device, comm
        self.comm_dtype = comm_dtype
        parts, self.offset = [], []
        n = 0
        self.block = [comm_cost.row_block(t.rows, world) for t in tables]
        for i, t in enumerate(tables):
            if sharding == "table":
                part = _init_table(i, t.rows, dim, seed) if owners[i] == rank else None
            else:
                lo = rank * self.block[i]
                part = _init_table(i, t.rows, dim, seed)[lo : lo + self.block[i]]
            self.offset.append(n)
            if part is not None:
                parts.append(part)
                n += part.shape[0]
        w = torch.cat(parts) if parts else torch.zeros(0, dim)
        self.weight = w.to(device).requires_grad_(True)
        self._plans: dict[int, dict] = {}

    def _lookup(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.weight.shape[0] == 0 or lengths.numel() == 0:
            # no local rows: still hand a grad-requiring tensor to the exchange, so that this rank
            # joins the backward all-to-all (a collective every rank must enter)
            return torch.zeros(lengths.numel(), self.dim, device=self.device, requires_grad=True)
        return F.embedding_bag(ids, self.weight, offsets_from_lengths(lengths)[:-1], mode="sum", sparse=True)

    def _plan(self, inp: LocalInput) -> dict:
        key = id(inp)
        if key in self._plans:
            return self._plans[key]
        me, W, T = self.rank, self.world, len(self.tables)
        dev = self.device
        bags = inp.bags
        starts = [0]
        for t in range(T):
            starts.append(starts[-1] + bags[me][t])
        p: dict = {}
        if self.sharding == "table":
            owned = [[t for t in range(T) if self.owners[t] == d] for d in range(W)]
            perm = [i for d in range(W) for t in owned[d] for i in range(starts[t], starts[t + 1])]
            p["perm"] = torch.tensor(perm, dtype=torch.int64, device=dev)
            p["inv_perm"] = torch.argsort(p["perm"])
            p["send_bags"] = [sum(bags[me][t] for t in owned[d]) for d in range(W)]
            p["recv_bags"] = [sum(bags[s][t] for t in owned[me]) for s in range(W)]
            off = [self.offset[t] for s in range(W) for t in owned[me] for _ in range(bags[s][t])]
        else:
            nb = [sum(b) for b in bags]
            p["bag_table"] = torch.repeat_interleave(torch.arange(T), torch.tensor(bags[me])).to(dev)
            p["block"] = torch.tensor(self.block, dtype=torch.int64, device=dev)
            p["send_bags"] = [nb[me]] * W
            p["recv_bags"] = nb
            off = [self.offset[t] for s in range(W) for t in range(T) for _ in range(bags[s][t])]
        p["recv_offset"] = torch.tensor(off, dtype=torch.int64, device=dev)
        self._plans[key] = p
        return p

    def exchange(self, inp: LocalInput) -> torch.Tensor:
        """Pooled embeddings [local bags, dim] in table order, differentiable into the tables."""
        p = self._plan(inp)
        comm, W = self.comm, self.world
        if self.sharding == "table":
            lengths = inp.lengths[p["perm"]]
            values, _ = jagged_index_select(inp.values, inp.lengths, p["perm"])
        else:
            nb = p["send_bags"][0]
            bag = torch.repeat_interleave(torch.arange(nb, device=self.device), inp.lengths,
                                          output_size=inp.values.numel())
            blk = p["block"][p["bag_table"][bag]]
            dest = torch.div(inp.values, blk, rounding_mode="floor")
            key = dest * nb + bag
            order = torch.argsort(key, stable=True)
            values = (inp.values - dest * blk)[order]  # ids local to the destination's shard
            lengths = torch.bincount(key, minlength=W * nb)
        send_vals = _segment_sums(lengths, p["send_bags"])
        recv_lengths = comm.all_to_all(lengths, p["send_bags"], p["recv_bags"], "ids_lengths")
        recv_vals = _segment_sums(recv_lengths, p["recv_bags"])
        recv_values = comm.all_to_all(values, send_vals, recv_vals, "ids_values")
        ids = recv_values + torch.repeat_interleave(p["recv_offset"], recv_lengths,
                                                    output_size=recv_values.numel())
        pooled = self._lookup(ids, recv_lengths).to(self.comm_dtype)
        out = _AllToAll.apply(pooled, comm, p["recv_bags"], p["send_bags"]).float()
        if self.sharding == "table":
            return out[p["inv_perm"]]
        parts = out.view(W, p["send_bags"][0], self.dim)
        acc = parts[0]
        for d in range(1, W):  # a fixed order, so every bag's sum is bitwise reproducible
            acc = acc + parts[d]
        return acc


def forward_backward(emb: ShardedEmbeddings, head: torch.nn.Module, inp: LocalInput, fu: int, fi: int):
    """One step; returns the per-impression (user [N, Fu, D], item [N, Fi, D]) embeddings."""
    d = emb.dim
    pooled = emb.exchange(inp)
    nu, n = inp.n_user_rows, inp.n_impressions
    user = pooled[: fu * nu].view(fu, nu, d).transpose(0, 1)
    if inp.expand is not None:
        user = user.index_select(0, inp.expand)  # ROO: request -> its impressions, after the exchange
    item = pooled[fu * nu :].view(fi, n, d).transpose(0, 1)
    x = torch.cat([user, item], 1).reshape(n, (fu + fi) * d)
    loss = F.binary_cross_entropy_with_logits(head(x).squeeze(-1), inp.labels)
    loss.backward()
    return user.detach(), item.detach()


# --- the run -----------------------------------------------------------------------------------------
def _barrier(device: torch.device) -> None:
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def _max_over_ranks(values: list[float], device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def _sum_over_ranks(values: list[int], device) -> list[int]:
    t = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return [int(x) for x in t.tolist()]


def _stats(samples: list[float]) -> dict:
    from harness.timers import Stats

    return Stats.from_samples(samples).to_dict()


def calibrate_alltoall(device: torch.device, world: int, nbytes: int = 16 << 20, reps: int = 5) -> dict:
    """Bus bandwidth and latency of a plain, even all_to_all_single on this group (uncounted):
    busbw = bytes_per_rank * (W-1)/W / time (nccl-tests' definition), latency = a 1-element-per-rank
    exchange. The bandwidth model of the step uses these two numbers."""
    def timed(n_per_peer: int) -> float:
        x = torch.zeros(n_per_peer * world, dtype=torch.float32, device=device)
        out = torch.empty_like(x)
        ts = []
        for _ in range(reps + 1):
            _barrier(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            dist.all_to_all_single(out, x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            ts.append(time.perf_counter() - t)
        return sorted(ts[1:])[len(ts[1:]) // 2]

    per_peer = max(1, nbytes // 4 // world)
    t_big = max(_max_over_ranks([timed(per_peer)], device))
    t_small = max(_max_over_ranks([timed(1)], device))
    size = per_peer * world * 4
    bw = size * (world - 1) / world / max(t_big - t_small, 1e-9) if world > 1 else None
    return {"bytes_per_rank": size, "time_ms": t_big * 1e3, "latency_us": t_small * 1e6, "bus_bw_gbps":
            None if bw is None else bw / 1e9, "method": f"all_to_all_single even splits, median of {reps}"}


def run_sharding(cfg: CommConfig, sharding: str, batch: RequestBatch, spec, rank: int, world: int,
                 device: torch.device, calib: dict) -> dict | None:
    tables = comm_cost.embedding_tables(spec, cfg.row_cap)
    owners = comm_cost.assign_tables(tables, world, cfg.assign) if sharding == "table" else None
    fu, fi = spec.n_user_sparse, spec.n_item_sparse
    comm = CountingComm(rank, world, device)
    emb = ShardedEmbeddings(tables, sharding, owners, rank, world, cfg.embedding_dim, cfg.seed, device, comm,
                            COMM_DTYPES[cfg.comm_dtype])
    torch.manual_seed(cfg.seed)  # the same head on every rank and in both layouts
    head = torch.nn.Linear((fu + fi) * cfg.embedding_dim, 1).to(device)
    inputs = {lay: local_input(batch, lay, tables, rank, world, device) for lay in comm_cost.LAYOUTS}
    params = [emb.weight, *head.parameters()]

    def zero():
        for q in params:
            q.grad = None

    # verification step (untimed): ROO, expanded, must equal the impression-level exchange exactly
    got, grads = {}, {}
    for lay in comm_cost.LAYOUTS:
        zero()
        got[lay] = forward_backward(emb, head, inputs[lay], fu, fi)
        g = emb.weight.grad
        grads[lay] = g.coalesce() if g is not None and g.is_sparse else g
    emb_diff = max(float((a - b).abs().max()) if a.numel() else 0.0
                   for a, b in zip(got["impression"], got["roo"], strict=True))
    emb_equal = all(torch.equal(a, b) for a, b in zip(got["impression"], got["roo"], strict=True))
    gi, gr = grads["impression"], grads["roo"]
    if gi is None or gr is None:
        grad_diff, grad_scale, same_rows = 0.0, 0.0, gi is None and gr is None
    else:
        same_rows = bool(torch.equal(gi.indices(), gr.indices())) if gi.is_sparse else True
        vi, vr = (gi.values(), gr.values()) if gi.is_sparse else (gi, gr)
        if not same_rows:
            grad_diff = float("inf")
        else:
            grad_diff = float((vi - vr).abs().max()) if vi.numel() else 0.0
        grad_scale = float(vi.abs().max()) if vi.numel() else 0.0
    flags = _sum_over_ranks([int(not emb_equal), int(not same_rows)], device)
    emb_diff, grad_diff, grad_scale = _max_over_ranks([emb_diff, grad_diff, grad_scale], device)
    del got, grads

    for _ in range(cfg.warmup):
        for lay in comm_cost.LAYOUTS:
            zero()
            forward_backward(emb, head, inputs[lay], fu, fi)
    samples = {lay: ([], [], []) for lay in comm_cost.LAYOUTS}
    # the layouts alternate step by step, so that drift in a shared machine's load hits both alike
    for _ in range(cfg.steps):
        for lay in comm_cost.LAYOUTS:
            step_ms, comm_ms, per_step = samples[lay]
            zero()
            comm.reset()
            _barrier(device)
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                forward_backward(emb, head, inputs[lay], fu, fi)
                end.record()
                torch.cuda.synchronize(device)
                step_ms.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                forward_backward(emb, head, inputs[lay], fu, fi)
                step_ms.append((time.perf_counter() - t) * 1e3)
            comm_ms.append(comm.elapsed_ms())
            per_step.append([comm.handed[c] for c in comm_cost.COMPONENTS]
                            + [comm.cross[c] for c in comm_cost.COMPONENTS] + [comm.calls])
    layouts = {}
    for lay in comm_cost.LAYOUTS:
        inp = inputs[lay]
        step_ms, comm_ms, per_step = samples[lay]
        # a step's time is its slowest rank's
        step_ms = _max_over_ranks(step_ms, device)
        comm_ms = _max_over_ranks(comm_ms, device)
        same_every_step = all(row == per_step[0] for row in per_step)
        counts = _sum_over_ranks(per_step[0] + [int(not same_every_step)], device)
        nc = len(comm_cost.COMPONENTS)
        counted = dict(zip(comm_cost.COMPONENTS, counts[:nc], strict=True))
        counted_cross = dict(zip(comm_cost.COMPONENTS, counts[nc : 2 * nc], strict=True))
        totals = _sum_over_ranks([inp.n_impressions, inp.n_requests], device)
        layouts[lay] = {
            "counted": counted,
            "counted_cross": counted_cross,
            "calls_per_step": counts[2 * nc],
            "bytes_same_every_step": counts[2 * nc + 1] == 0,
            "step_ms": step_ms,
            "comm_ms": comm_ms,
            "impressions_per_step": totals[0],
            "requests_per_step": totals[1],
        }
    if rank != 0:
        return None
    # the tables' gradients agree up to fp32 summation order (ROO sums a request's impressions before
    # the exchange), or to the rounding of a 16-bit exchange
    rtol = 1e-5 if cfg.comm_dtype == "fp32" else 2e-2
    return _record(cfg, sharding, spec, batch, tables, owners, world, device, calib, layouts, {
        "embeddings_equal": flags[0] == 0,
        "grads_close": flags[1] == 0 and grad_diff <= rtol * grad_scale + 1e-7,
        "embeddings_max_abs_diff": emb_diff,
        "grad_rows_equal": flags[1] == 0,
        "grad_max_abs_diff": grad_diff,
        "grad_max_abs": grad_scale,
    })


def _record(cfg, sharding, spec, batch, tables, owners, world, device, calib, layouts, verify) -> dict:
    from harness.provenance import collect
    from harness.results import make_record

    eb = torch.empty(0, dtype=COMM_DTYPES[cfg.comm_dtype]).element_size()
    common = dict(world_size=world, sharding=sharding, embedding_dim=cfg.embedding_dim, emb_bytes=eb,
                  row_cap=cfg.row_cap, assign=cfg.assign)
    out_layouts = {}
    for lay, m in layouts.items():
        exact = comm_cost.exact_a2a_bytes(batch, lay, tables=tables, **common)
        expected = comm_cost.expected_a2a_bytes(spec, lay, requests_per_rank=cfg.requests(), **common)
        counted_total = sum(m["counted"].values())
        cross_total = sum(m["counted_cross"].values())
        step = _stats(m["step_ms"])
        comm = _stats(m["comm_ms"])
        comm_s = comm["median"] / 1e3
        bw = calib.get("bus_bw_gbps")
        predicted_ms = None
        if bw:
            predicted_ms = 1e3 * comm_cost.step_a2a_time_s(exact, world, bw * 1e9, calib["latency_us"] * 1e-6)
        out_layouts[lay] = {
            "counted_bytes_per_step": counted_total,
            "analytic_bytes_per_step": exact.total,
            "expected_bytes_per_step": expected.total,
            "cross_bytes_per_step": cross_total,
            "analytic_cross_bytes_per_step": exact.cross_total,
            "counted": m["counted"],
            "counted_cross": m["counted_cross"],
            "analytic": exact.to_dict(),
            "expected": expected.to_dict(),
            "bytes_match": m["counted"] == exact.handed() and m["counted_cross"] == exact.cross(),
            "bytes_same_every_step": m["bytes_same_every_step"],
            "collective_calls_per_step": m["calls_per_step"],
            "step_ms": step,
            "comm_ms": comm,
            "step_ms_median": step["median"],
            "comm_ms_median": comm["median"],
            # bytes that leave a rank per rank and second of collective time (= nccl-tests busbw for an
            # even all-to-all); algbw counts every byte handed
            "bus_bw_gbps": cross_total / world / comm_s / 1e9 if comm_s > 0 else None,
            "alg_bw_gbps": counted_total / world / comm_s / 1e9 if comm_s > 0 else None,
            "predicted_comm_ms": predicted_ms,
            "comm_error": (comm["median"] / predicted_ms - 1.0) if predicted_ms else None,
            "impressions_per_step": m["impressions_per_step"],
            "requests_per_step": m["requests_per_step"],
            "impressions_per_s": m["impressions_per_step"] / (step["median"] / 1e3),
            "requests_per_s": m["requests_per_step"] / (step["median"] / 1e3),
        }
    imp, roo = out_layouts["impression"], out_layouts["roo"]

    def save(key):
        return 1.0 - roo[key] / imp[key] if imp[key] else None

    metrics = {
        "layouts": out_layouts,
        "saving": save("counted_bytes_per_step"),
        "saving_cross": save("cross_bytes_per_step"),
        "saving_expected": save("expected_bytes_per_step"),
        "saving_step_ms": save("step_ms_median"),
        "saving_comm_ms": save("comm_ms_median"),
        "bytes_match": imp["bytes_match"] and roo["bytes_match"],
        "verify": verify,
        "calibration": calib,
        "counting": "bytes handed to all_to_all_single (input tensors, self chunk included), summed over "
                    "ranks; cross = the part addressed to other ranks",
    }
    config = {
        "preset": cfg.preset,
        "overrides": list(cfg.overrides),
        "spec": spec.to_dict(),
        "model": {"embedding_dim": cfg.embedding_dim, "row_cap": cfg.row_cap, "sharding": sharding,
                  "assign": cfg.assign, "comm_dtype": cfg.comm_dtype, "tables": len(tables),
                  "table_rows": [t.rows for t in tables], "owners": list(owners) if owners else None},
        "device": cfg.device,
        "dtype": "fp32",
        "backend": cfg.resolved_backend,
        "warmup": cfg.warmup,
        "steps": cfg.steps,
        "world_size": world,
        "requests_per_rank": cfg.requests(),
        "seed": cfg.seed,
    }
    prov = collect(seed=cfg.seed, device=str(device))
    prov["world_size"] = world
    prov["backend"] = cfg.resolved_backend
    return make_record("comm", config, metrics, provenance=prov)


def _init(cfg: CommConfig, rank: int, world: int, local_rank: int) -> torch.device:
    if cfg.device == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: NCCL needs CUDA GPUs, but none is visible on this machine; "
                            "use --device cpu (gloo)")
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                            "launch at most that many ranks per node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = cfg.resolved_backend
    kw = {"backend": backend, "timeout": _dt.timedelta(seconds=cfg.init_timeout_s)}
    if backend == "nccl":
        kw["device_id"] = device
    try:
        dist.init_process_group(**kw)
    except Exception as e:  # noqa: BLE001 — any backend failure is reported as one line
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"backend {backend!r} failed to initialize on rank {rank}: {msg}") from None
    return device


def _write_atomic(path: str, text: str) -> None:
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.comm", description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--sharding", nargs="+", default=["table"], choices=comm_cost.SHARDINGS,
                   help="one or more shardings, each measured and recorded (default table)")
    p.add_argument("--out", default=None, help="append the result records to this JSONL file (rank 0)")
    p.add_argument("--record-file", default=None, help="write the records as one JSON list here (rank 0)")
    p.add_argument("--error-file", default=None, help="a failing rank writes its error line to FILE.rankN")
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared with `roo-bench comm`."""
    p.add_argument("--preset", default="tiny", help="workload preset (default tiny)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. impressions.mean=20 (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per rank)")
    p.add_argument("--backend", default="auto", help="|".join(BACKENDS) + " (auto: gloo/cpu, nccl/cuda)")
    p.add_argument("--assign", default="greedy", help="table placement: greedy (size balance) | round_robin")
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument("--row-cap", type=int, default=comm_cost.DEFAULT_ROW_CAP,
                   help="rows per table at most (ids modulo the rows), so tables fit")
    p.add_argument("--requests", type=int, default=None,
                   help="requests per rank per step (default: the preset's requests_per_batch)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--comm-dtype", default="fp32", help="dtype of the exchanged embeddings: fp32|bf16|fp16")
    p.add_argument("--init-timeout", type=float, default=60.0,
                   help="process-group timeout (s): init and every collective")


def config_from_args(args, shardings) -> CommConfig:
    return CommConfig(
        preset=args.preset, overrides=tuple(args.overrides), device=args.device, backend=args.backend,
        shardings=tuple(shardings), assign=args.assign, embedding_dim=args.embedding_dim,
        row_cap=args.row_cap,
        requests_per_rank=args.requests, steps=args.steps, warmup=args.warmup, seed=args.seed,
        comm_dtype=args.comm_dtype, init_timeout_s=args.init_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    try:
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise UserError("harness.comm runs under torchrun: `torchrun --standalone --nproc-per-node W -m "
                            "harness.comm ...` or `roo-bench comm --nproc W ...`")
        world = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cfg = config_from_args(args, args.sharding)
        device = _init(cfg, rank, world, local_rank)
        try:
            spec = cfg.spec()
            batch = generate(spec, cfg.requests() * world, seed=cfg.seed)
            calib_bytes = (64 << 20) if device.type == "cuda" else (2 << 20)
            calib = calibrate_alltoall(device, world, nbytes=calib_bytes)
            records = [run_sharding(cfg, s, batch, spec, rank, world, device, calib) for s in cfg.shardings]
            _barrier(device)
        finally:
            dist.destroy_process_group()
        if rank == 0:
            if args.record_file:
                _write_atomic(args.record_file, json.dumps(records))
            if args.out:
                from harness.results import append_record

                for rec in records:
                    append_record(args.out, rec)
            for rec in records:
                print(summary_line(rec), flush=True)
        return 0
    except UserError as e:
        return _fail(args, rank, f"roo-bench comm: error: {e}", 2)
    except Exception as e:  # noqa: BLE001 — a crash: the traceback, and one line for the launcher
        traceback.print_exc()
        return _fail(args, rank, f"roo-bench comm: rank {rank} failed: {type(e).__name__}: {e}", 1)


def _fail(args, rank: int, line: str, code: int) -> int:
    line = " ".join(line.split())  # one line, whatever the exception text held
    print(line, file=sys.stderr, flush=True)
    if args.error_file:
        try:
            _write_atomic(f"{args.error_file}.rank{rank}", json.dumps({"line": line, "code": code}))
        except OSError:
            pass
    return code


def summary_line(rec: dict) -> str:
    m, c = rec["metrics"], rec["config"]
    parts = [f"{c['preset']} W={c['world_size']} {c['backend']} {c['model']['sharding']}-wise:"]
    for lay, L in m["layouts"].items():
        parts.append(f"{lay} {L['counted_bytes_per_step'] / 1e6:.3f} MB/step (analytic "
                     f"{L['analytic_bytes_per_step'] / 1e6:.3f}) {L['step_ms_median']:.2f} ms/step;")
    parts.append(f"saving {100 * (m['saving'] or 0):.1f}%, bytes match: {m['bytes_match']}, "
                 f"embeddings equal: {m['verify']['embeddings_equal']}")
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
