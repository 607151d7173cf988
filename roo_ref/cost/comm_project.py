"""The embedding all-to-all projected to W ranks on a two-level topology (alpha-beta model).

A step's four all-to-alls (roo_ref.cost.comm, `COLLECTIVES_PER_STEP`) carry the expected cross
bytes of `expected_a2a_bytes` for W ranks of `requests_per_rank` requests each. The bytes that leave
a rank, X = cross_total / W, are taken to spread evenly over the other W - 1 ranks; with G GPUs per
node, g = min(W, G) ranks share a node, so

  intra = X (g - 1) / (W - 1)    over NVLink, at the in-node bus bandwidth B_nvl
  inter = X (W - g) / (W - 1)    over the network, at the per-GPU bandwidth B_net

and the two paths run at once (NCCL's all-to-all is concurrent point-to-point sends):

  T_comm(W) = C * alpha(W) + max(intra / B_nvl, inter / B_net),   C = COLLECTIVES_PER_STEP,
  alpha(W) = alpha_nvl for W <= G, alpha_net for W > G.

The share of the step is T_comm / (T_compute + T_comm), with T_compute one rank's analytic step
(roo_ref.cost.step, no overlap of the exchange with the dense part). docs/cost-model.md has the
formulas and their assumptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from roo_ref.cost import comm
from workloads.errors import UserError
from workloads.layout import LAYOUTS
from workloads.spec import WorkloadSpec

WORLD_SIZES = tuple(2**i for i in range(1, 11))  # 2 ... 1024


@dataclass(frozen=True)
class Topology:
    """Two-level interconnect: NVLink inside a node of `gpus_per_node`, a network across nodes."""

    gpus_per_node: int = 8
    nvlink_bw: float = 241e9  # bytes/s, all-to-all bus bandwidth inside a node (H100 pair, calibrated)
    network_bw: float = 50e9  # bytes/s per GPU across nodes (a 400 Gb/s NIC per GPU)
    nvlink_latency_s: float = 20e-6  # per collective inside a node
    network_latency_s: float = 40e-6  # per collective spanning nodes

    def __post_init__(self) -> None:
        if isinstance(self.gpus_per_node, bool) or not isinstance(self.gpus_per_node, int) or self.gpus_per_node < 1:
            raise UserError(f"--gpus-per-node={self.gpus_per_node!r} must be an integer >= 1")
        for name, v in (("--nvlink-gbps", self.nvlink_bw), ("--network-gbps", self.network_bw)):
            if not v > 0:
                raise UserError(f"{name}={v / 1e9:g} must be > 0")
        for name, v in (("nvlink latency", self.nvlink_latency_s), ("network latency", self.network_latency_s)):
            if not v >= 0:
                raise UserError(f"{name}={v} must be >= 0 seconds")

    def to_dict(self) -> dict:
        return {
            "gpus_per_node": self.gpus_per_node,
            "nvlink_gbps": self.nvlink_bw / 1e9,
            "network_gbps": self.network_bw / 1e9,
            "nvlink_latency_us": self.nvlink_latency_s * 1e6,
            "network_latency_us": self.network_latency_s * 1e6,
        }


def split_bytes(cross_per_rank: float, world_size: int, gpus_per_node: int) -> tuple[float, float]:
    """(intra-node, inter-node) bytes of one rank's cross bytes, spread evenly over its peers."""
    comm.check_world_size(world_size)
    if world_size == 1:
        return 0.0, 0.0
    g = min(world_size, gpus_per_node)
    return cross_per_rank * (g - 1) / (world_size - 1), cross_per_rank * (world_size - g) / (world_size - 1)


def collective_time_s(b: comm.A2ABytes, world_size: int, topo: Topology) -> float:
    """T_comm(W) of one step's all-to-alls (the module docstring's formula)."""
    if world_size == 1:
        return 0.0
    intra, inter = split_bytes(b.cross_total / world_size, world_size, topo.gpus_per_node)
    alpha = topo.nvlink_latency_s if world_size <= topo.gpus_per_node else topo.network_latency_s
    return comm.COLLECTIVES_PER_STEP * alpha + max(intra / topo.nvlink_bw, inter / topo.network_bw)


def project(
    spec: WorkloadSpec,
    topo: Topology,
    worlds: Sequence[int] = WORLD_SIZES,
    requests_per_rank: float | None = None,
    sharding: str = "table",
    embedding_dim: int = 128,
    emb_bytes: int = 4,
    row_cap: int | None = comm.DEFAULT_ROW_CAP,
    history_cap: int = 0,
    compute_s: dict | None = None,
) -> list[dict]:
    """One row per W: per layout the bytes handed and crossing per step (all ranks), the collective
    time and, given `compute_s` (one rank's compute step per layout, s), its share of the step;
    ROO's byte and time saving."""
    if not worlds:
        raise UserError("give at least one world size")
    for w in worlds:
        comm.check_world_size(w)
    rows = []
    for w in sorted(set(worlds)):
        row: dict = {"world_size": w, "nodes": -(-w // topo.gpus_per_node), "layouts": {}}
        for lay in LAYOUTS:
            b = comm.expected_a2a_bytes(
                spec, lay, w, requests_per_rank, sharding, embedding_dim, emb_bytes, row_cap, history_cap=history_cap
            )
            t = collective_time_s(b, w, topo)
            intra, inter = split_bytes(b.cross_total / w, w, topo.gpus_per_node)
            L = {
                "bytes_per_step": b.total,
                "cross_bytes_per_step": b.cross_total,
                "intra_node_bytes_per_rank": intra,
                "inter_node_bytes_per_rank": inter,
                "comm_ms": t * 1e3,
            }
            if compute_s is not None:
                L["compute_ms"] = compute_s[lay] * 1e3
                L["step_ms"] = (compute_s[lay] + t) * 1e3
                L["comm_share"] = t / (compute_s[lay] + t) if compute_s[lay] + t > 0 else 0.0
            row["layouts"][lay] = L
        imp, roo = row["layouts"]["impression"], row["layouts"]["roo"]
        row["saving_bytes"] = 1 - roo["cross_bytes_per_step"] / imp["cross_bytes_per_step"]
        row["saving_comm_ms"] = 1 - roo["comm_ms"] / imp["comm_ms"] if imp["comm_ms"] > 0 else None
        if compute_s is not None:
            row["saving_step_ms"] = 1 - roo["step_ms"] / imp["step_ms"]
        rows.append(row)
    return rows


__all__ = ["WORLD_SIZES", "Topology", "collective_time_s", "project", "split_bytes"]
