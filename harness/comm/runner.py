"""One rank of the comm benchmark, run under torchrun (`roo-bench comm` launches the ranks).

Per sharding: build this rank's shards and inputs (roo_ref.sharded_embeddings), run one untimed
verification step per layout (ROO, expanded, must give every impression exactly the embeddings of
the impression-level exchange), then `warmup` and `steps` timed steps per layout, alternating, and
reduce the samples and byte counts over the ranks. Rank 0 checks the counts against
roo_ref.cost.comm.exact_a2a_bytes and builds the record (harness.comm.record).
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from harness.comm.collective import CountingComm, barrier, calibrate_alltoall, max_over_ranks, sum_over_ranks
from harness.comm.config import CommConfig
from harness.comm.record import ShardingRun, build_record
from roo_ref.cost import comm as comm_cost
from roo_ref.sharded_embeddings import LocalInput, ShardedEmbeddings, forward_backward, local_input
from workloads.batch import RequestBatch
from workloads.errors import UserError
from workloads.generator import generate
from workloads.layout import LAYOUTS, Layout

ENTRY = "harness.commands.comm"  # the module torchrun runs on every rank


def rank_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise UserError(
            f"{ENTRY} runs under torchrun: `torchrun --standalone --nproc-per-node W -m {ENTRY} ...` "
            "or `roo-bench comm --nproc W ...`"
        )
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))


def init_process_group(cfg: CommConfig, rank: int, local_rank: int) -> torch.device:
    """This rank's device, and the process group joined on it."""
    # NVLink multicast (NVLS) can take a shared host's GPUs down: keep it off in every rank, whatever
    # the launcher's environment says, before torch.distributed creates any NCCL communicator.
    os.environ["NCCL_NVLS_ENABLE"] = "0"
    if cfg.device == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                "--device cuda: NCCL needs CUDA GPUs, but none is visible on this machine; use --device cpu (gloo)"
            )
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                "launch at most that many ranks per node"
            )
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


def run_rank(cfg: CommConfig, rank: int, world: int, local_rank: int) -> list[dict] | None:
    """Every sharding of `cfg` on this rank; rank 0 returns the records (one per sharding)."""
    device = init_process_group(cfg, rank, local_rank)
    try:
        spec = cfg.spec()
        batch = generate(spec, cfg.requests() * world, seed=cfg.seed)
        calib_bytes = (64 << 20) if device.type == "cuda" else (2 << 20)
        calib = calibrate_alltoall(device, world, nbytes=calib_bytes)
        records = [run_sharding(cfg, s, batch, spec, rank, world, device, calib) for s in cfg.shardings]
        barrier(device)
    finally:
        dist.destroy_process_group()
    return records if rank == 0 else None


@dataclass
class _Model:
    """This rank's part of one sharding: shards, dense head, per-layout inputs, counted collective."""

    emb: ShardedEmbeddings
    head: torch.nn.Module
    inputs: dict[Layout, LocalInput]
    comm: CountingComm
    fu: int
    fi: int

    def zero_grad(self) -> None:
        for q in (self.emb.weight, *self.head.parameters()):
            q.grad = None

    def run(self, lay: Layout):
        """One training step of `lay`; the per-impression (user, item) embeddings."""
        return forward_backward(self.emb, self.head, self.inputs[lay], self.fu, self.fi)

    def step(self, lay: Layout):
        """`run` from zeroed gradients."""
        self.zero_grad()
        return self.run(lay)


def _build(
    cfg: CommConfig, sharding: str, batch: RequestBatch, spec, rank: int, world: int, device: torch.device
) -> tuple[_Model, tuple, tuple | None]:
    tables = comm_cost.embedding_tables(spec, cfg.row_cap, cfg.max_history)
    owners = comm_cost.assign_tables(tables, world, cfg.assign) if sharding == "table" else None
    comm = CountingComm(rank, world, device)
    emb = ShardedEmbeddings(
        tables, sharding, owners, rank, world, cfg.embedding_dim, cfg.seed, device, comm, cfg.torch_comm_dtype()
    )
    fu, fi = spec.n_user_sparse, spec.n_item_sparse
    torch.manual_seed(cfg.seed)  # the same head on every rank and in both layouts
    n_feats = fu + fi + len(tables) - comm_cost.pooled_tables(tables)  # the pooled history is one more
    head = torch.nn.Linear(n_feats * cfg.embedding_dim, 1).to(device)
    inputs = {lay: local_input(batch, lay, tables, rank, world, device, cfg.max_history) for lay in LAYOUTS}
    return _Model(emb, head, inputs, comm, fu, fi), tables, owners


def _grad_diff(gi, gr) -> tuple[float, float, bool]:
    """(max |difference|, max |impression grad|, same rows) of the two layouts' table gradients."""
    if gi is None or gr is None:
        return 0.0, 0.0, gi is None and gr is None
    same_rows = bool(torch.equal(gi.indices(), gr.indices())) if gi.is_sparse else True
    vi, vr = (gi.values(), gr.values()) if gi.is_sparse else (gi, gr)
    if not same_rows:
        grad_diff = float("inf")
    else:
        grad_diff = float((vi - vr).abs().max()) if vi.numel() else 0.0
    grad_scale = float(vi.abs().max()) if vi.numel() else 0.0
    return grad_diff, grad_scale, same_rows


def _verify(model: _Model, cfg: CommConfig, device: torch.device) -> dict:
    """One untimed step per layout: ROO, expanded, must equal the impression-level exchange exactly."""
    got, grads = {}, {}
    for lay in LAYOUTS:
        got[lay] = model.step(lay)
        g = model.emb.weight.grad
        grads[lay] = g.coalesce() if g is not None and g.is_sparse else g
    pairs = list(zip(got[Layout.IMPRESSION], got[Layout.ROO], strict=True))
    emb_diff = max(float((a - b).abs().max()) if a.numel() else 0.0 for a, b in pairs)
    emb_equal = all(torch.equal(a, b) for a, b in pairs)
    grad_diff, grad_scale, same_rows = _grad_diff(grads[Layout.IMPRESSION], grads[Layout.ROO])
    flags = sum_over_ranks([int(not emb_equal), int(not same_rows)], device)
    emb_diff, grad_diff, grad_scale = max_over_ranks([emb_diff, grad_diff, grad_scale], device)
    # the tables' gradients agree up to fp32 summation order (ROO sums a request's impressions before
    # the exchange), or to the rounding of a 16-bit exchange
    rtol = 1e-5 if cfg.comm_dtype == "fp32" else 2e-2
    return {
        "embeddings_equal": flags[0] == 0,
        "grads_close": flags[1] == 0 and grad_diff <= rtol * grad_scale + 1e-7,
        "embeddings_max_abs_diff": emb_diff,
        "grad_rows_equal": flags[1] == 0,
        "grad_max_abs_diff": grad_diff,
        "grad_max_abs": grad_scale,
    }


def _timed_step_ms(fn, device: torch.device) -> float:
    """One step's time: CUDA events on GPU, perf_counter on CPU.

    harness.timers.time_steps times one function for a run of steps after a dropped one; the layouts
    here alternate step by step instead, so each step is timed on its own."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def _timed_steps(model: _Model, cfg: CommConfig, device: torch.device) -> dict:
    """Per layout: (step ms, collective ms, per-step byte and call counts) of `cfg.steps` steps."""
    comm = model.comm
    for _ in range(cfg.warmup):
        for lay in LAYOUTS:
            model.step(lay)
    samples = {lay: ([], [], []) for lay in LAYOUTS}
    # the layouts alternate step by step, so that drift in a shared machine's load hits both alike
    for _ in range(cfg.steps):
        for lay in LAYOUTS:
            step_ms, comm_ms, per_step = samples[lay]
            model.zero_grad()
            comm.reset()
            barrier(device)
            step_ms.append(_timed_step_ms(lambda lay=lay: model.run(lay), device))
            comm_ms.append(comm.elapsed_ms())
            per_step.append(
                [comm.handed[c] for c in comm_cost.COMPONENTS]
                + [comm.cross[c] for c in comm_cost.COMPONENTS]
                + [comm.calls]
            )
    return samples


def _reduce(model: _Model, samples: dict, device: torch.device) -> dict:
    """The samples over the ranks: a step's time is its slowest rank's; bytes and bags are summed."""
    layouts = {}
    nc = len(comm_cost.COMPONENTS)
    for lay in LAYOUTS:
        inp = model.inputs[lay]
        step_ms, comm_ms, per_step = samples[lay]
        step_ms = max_over_ranks(step_ms, device)
        comm_ms = max_over_ranks(comm_ms, device)
        same_every_step = all(row == per_step[0] for row in per_step)
        counts = sum_over_ranks(per_step[0] + [int(not same_every_step)], device)
        totals = sum_over_ranks([inp.n_impressions, inp.n_requests], device)
        layouts[lay] = {
            "counted": dict(zip(comm_cost.COMPONENTS, counts[:nc], strict=True)),
            "counted_cross": dict(zip(comm_cost.COMPONENTS, counts[nc : 2 * nc], strict=True)),
            "calls_per_step": counts[2 * nc],
            "bytes_same_every_step": counts[2 * nc + 1] == 0,
            "step_ms": step_ms,
            "comm_ms": comm_ms,
            "impressions_per_step": totals[0],
            "requests_per_step": totals[1],
        }
    return layouts


def run_sharding(
    cfg: CommConfig, sharding: str, batch: RequestBatch, spec, rank: int, world: int, device: torch.device, calib: dict
) -> dict | None:
    """Verify, time and reduce one sharding; rank 0 returns its record."""
    model, tables, owners = _build(cfg, sharding, batch, spec, rank, world, device)
    verify = _verify(model, cfg, device)
    layouts = _reduce(model, _timed_steps(model, cfg, device), device)
    if rank != 0:
        return None
    run = ShardingRun(sharding=sharding, tables=tables, owners=owners, layouts=layouts, verify=verify)
    return build_record(cfg, run, spec, batch, world, device, calib)
