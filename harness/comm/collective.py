"""The all-to-all of the comm benchmark: counted and timed per call (`CountingComm`, the
`roo_ref.sharded_embeddings.Collective` of a run), the plain even exchange that calibrates the
bandwidth model (`calibrate_alltoall`), and the small cross-rank reductions of the results."""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist

from harness.timers import time_steps
from roo_ref.cost import comm as comm_cost


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
        row = math.prod(x.shape[1:])  # elements per row, also of an empty tensor (a rank owning no table)
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


def barrier(device: torch.device) -> None:
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def max_over_ranks(values: list[float], device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def sum_over_ranks(values: list[int], device) -> list[int]:
    t = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return [int(x) for x in t.tolist()]


def calibrate_alltoall(device: torch.device, world: int, nbytes: int = 16 << 20, reps: int = 5) -> dict:
    """Bus bandwidth and latency of a plain, even all_to_all_single on this group (uncounted):
    busbw = bytes_per_rank * (W-1)/W / time (nccl-tests' definition), latency = a 1-element-per-rank
    exchange. The bandwidth model of the step uses these two numbers."""

    def timed_s(n_per_peer: int) -> float:
        """Median of `reps` exchanges (after one dropped), each started in step by a barrier."""
        x = torch.zeros(n_per_peer * world, dtype=torch.float32, device=device)
        out = torch.empty_like(x)
        timing = time_steps(
            lambda: dist.all_to_all_single(out, x), warmup=0, steps=reps, device=device, before=lambda: barrier(device)
        )
        return timing.stats.median / 1e3

    per_peer = max(1, nbytes // 4 // world)
    t_big = max(max_over_ranks([timed_s(per_peer)], device))
    t_small = max(max_over_ranks([timed_s(1)], device))
    size = per_peer * world * 4
    bw = size * (world - 1) / world / max(t_big - t_small, 1e-9) if world > 1 else None
    return {
        "bytes_per_rank": size,
        "time_ms": t_big * 1e3,
        "latency_us": t_small * 1e6,
        "bus_bw_gbps": None if bw is None else bw / 1e9,
        "method": f"all_to_all_single even splits, median of {reps}",
    }
