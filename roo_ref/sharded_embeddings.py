"""Model-parallel embedding tables: table-wise or row-wise sharded, pooled lookup, both layouts.

Each sparse feature has one table (roo_ref.cost.comm.embedding_tables: sum pooling, `dim` columns,
ids modulo the table's rows), sharded across W ranks table-wise (table t whole on rank owner(t)) or
row-wise (W blocks of rows). One exchange of a step, as torchrec's sharded EmbeddingBagCollection:

1. input redistribution: an all-to-all of the bag lengths, then of the ids (int64);
2. lookup on the local tables/shards (one embedding_bag over all received bags, as a table-batched
   embedding does);
3. an all-to-all of the pooled embeddings back to the bags' ranks (row-wise: partial sums, summed at
   the destination, torchrec's reduce-scatter); autograd runs the reverse all-to-all of the
   gradients.

Layouts: "impression" sends user features once per impression (the user's ids copied into every
impression); "roo" sends them once per request and expands the pooled embeddings to impressions
after the exchange (torchrec VBE). Item features are per impression in both.

History sequence (HSTU): with a history table (roo_ref.cost.comm.embedding_tables' `history_cap`),
each request's last events are looked up one row per event (no pooling) and ride in the same
collectives: their count per destination is one more int in the lengths all-to-all, their ids follow
each destination's bag ids, and their rows follow its pooled rows. ROO sends a request's events once,
the impression layout once per impression.

Host syncs: the bag splits of the lengths all-to-all follow from the step's shape, known to every
rank; the splits of the later exchanges are read from the device once per step (the one read the
uneven all_to_all_single needs).

This is model code: the all-to-alls go through a `Collective` handed in (the benchmark's counting
wrapper around torch.distributed), so that this module stays free of process groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from roo_ref.cost import comm as comm_cost
from workloads.batch import RequestBatch
from workloads.jagged import jagged_index_select, keyed_index_select, offsets_from_lengths
from workloads.layout import Layout


class Collective(Protocol):
    """An all_to_all_single with uneven splits: `send[d]` rows of `x` go to rank d, `recv[s]` rows
    come from rank s; `tag` names the exchange (one of roo_ref.cost.comm.COMPONENTS)."""

    def all_to_all(self, x: torch.Tensor, send: list[int], recv: list[int], tag: str) -> torch.Tensor: ...


class _AllToAll(torch.autograd.Function):
    """Differentiable all-to-all: the backward is the reverse exchange of the gradient, through the
    same collective (tag grad_bwd)."""

    @staticmethod
    def forward(ctx, x, comm: Collective, send: list[int], recv: list[int]):
        ctx.comm, ctx.send, ctx.recv = comm, send, recv
        return comm.all_to_all(x, send, recv, "pooled_fwd")

    @staticmethod
    def backward(ctx, grad):
        return ctx.comm.all_to_all(grad, ctx.recv, ctx.send, "grad_bwd"), None, None, None


def _segment_sums(lengths: torch.Tensor, splits: list[int]) -> torch.Tensor:
    """Sums of consecutive chunks of `lengths` (chunk sizes `splits`), on the device (no sync)."""
    offs = offsets_from_lengths(lengths)
    bounds = torch.tensor([0, *splits], device=lengths.device).cumsum(0)
    return torch.diff(offs[bounds])


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
    seq_lengths: torch.Tensor | None = None  # history events per user row (None: no history table)
    seq_values: torch.Tensor | None = None  # their ids, already modulo the history table's rows


def local_input(
    batch: RequestBatch, layout: str, tables, rank: int, world: int, device, history_cap: int = 0
) -> LocalInput:
    """Rank `rank`'s contiguous slice of the global batch's requests, in `layout`; with a history
    table, each user row's last `history_cap` events."""
    roo = layout == Layout.ROO
    n_pooled = comm_cost.pooled_tables(tables)
    slices = comm_cost.rank_slices(batch.num_requests, world)
    fu, fi = batch.user_sparse_lengths.shape[0], batch.item_sparse_lengths.shape[0]
    bags = []
    for lo, hi in slices:
        nu, ni = comm_cost.local_bag_counts(batch, layout, lo, hi)
        bags.append([nu] * fu + [ni] * fi + [0] * (len(tables) - n_pooled))
    lo, hi = slices[rank]
    k = batch.num_impressions[lo:hi]
    imp = batch.impression_offsets()
    imp_idx = torch.arange(int(imp[lo]), int(imp[hi]))
    local_req = torch.repeat_interleave(torch.arange(hi - lo), k)
    user_idx = torch.arange(lo, hi) if roo else lo + local_req
    usv, usl = keyed_index_select(batch.user_sparse_values, batch.user_sparse_lengths, user_idx)
    isv, isl = keyed_index_select(batch.item_sparse_values, batch.item_sparse_lengths, imp_idx)
    lengths = torch.cat([usl.reshape(-1), isl.reshape(-1)])
    values = torch.cat([usv, isv])
    bag_table = torch.repeat_interleave(torch.arange(fu + fi), torch.tensor(bags[rank][: fu + fi]))
    rows = torch.tensor([t.rows for t in tables], dtype=torch.int64)
    values = values % rows[torch.repeat_interleave(bag_table, lengths, output_size=values.numel())]
    seq_lengths = seq_values = None
    if n_pooled < len(tables):
        kept, idx = comm_cost.history_window(batch.history_lengths.to(torch.int64), history_cap)
        seq = batch.history_item_ids[idx] % tables[-1].rows
        seq_values, seq_lengths = jagged_index_select(seq, kept, user_idx)
        seq_lengths, seq_values = seq_lengths.to(device), seq_values.to(device)
    return LocalInput(
        layout=layout,
        lengths=lengths.to(device),
        values=values.to(device),
        bags=bags,
        n_user_rows=hi - lo if roo else imp_idx.numel(),
        n_impressions=imp_idx.numel(),
        n_requests=hi - lo,
        expand=local_req.to(device) if roo else None,
        labels=batch.labels[imp_idx, 0].to(device),
        seq_lengths=seq_lengths,
        seq_values=seq_values,
    )


# --- sharded embeddings ----------------------------------------------------------------------------------
def _init_table(t: int, rows: int, dim: int, seed: int) -> torch.Tensor:
    """Table t's full weight, the same on every rank and for every sharding (CPU generator)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + t)
    return torch.randn(rows, dim, generator=g) * 0.05


class ShardedEmbeddings:
    """This rank's part of every table, concatenated into one weight (as a table-batched embedding);
    `exchange` runs the lookup's three exchanges and returns the pooled embeddings of this rank's
    bags."""

    def __init__(
        self,
        tables,
        sharding: str,
        owners,
        rank: int,
        world: int,
        dim: int,
        seed: int,
        device: torch.device,
        comm: Collective,
        comm_dtype: torch.dtype,
    ):
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
        """The routing of `inp`'s bags (cached per input): split sizes of both exchanges, the bag
        permutation (table-wise) or shard blocks (row-wise), and every received bag's table offset."""
        key = id(inp)
        if key not in self._plans:
            starts = [0]
            for t in range(len(self.tables)):
                starts.append(starts[-1] + inp.bags[self.rank][t])
            plan = self._table_plan(inp.bags, starts) if self.sharding == "table" else self._row_plan(inp.bags)
            self._plans[key] = plan
        return self._plans[key]

    def _table_plan(self, bags: list[list[int]], starts: list[int]) -> dict:
        me, W, T, dev = self.rank, self.world, len(self.tables), self.device
        owned = [[t for t in range(T) if self.owners[t] == d] for d in range(W)]
        perm = [i for d in range(W) for t in owned[d] for i in range(starts[t], starts[t + 1])]
        p: dict = {"perm": torch.tensor(perm, dtype=torch.int64, device=dev)}
        p["inv_perm"] = torch.argsort(p["perm"])
        p["send_bags"] = [sum(bags[me][t] for t in owned[d]) for d in range(W)]
        p["recv_bags"] = [sum(bags[s][t] for t in owned[me]) for s in range(W)]
        off = [self.offset[t] for s in range(W) for t in owned[me] for _ in range(bags[s][t])]
        p["recv_offset"] = torch.tensor(off, dtype=torch.int64, device=dev)
        return p

    def _row_plan(self, bags: list[list[int]]) -> dict:
        me, W, T, dev = self.rank, self.world, len(self.tables), self.device
        nb = [sum(b) for b in bags]
        p: dict = {"bag_table": torch.repeat_interleave(torch.arange(T), torch.tensor(bags[me])).to(dev)}
        p["block"] = torch.tensor(self.block, dtype=torch.int64, device=dev)
        p["send_bags"] = [nb[me]] * W
        p["recv_bags"] = nb
        off = [self.offset[t] for s in range(W) for t in range(T) for _ in range(bags[s][t])]
        p["recv_offset"] = torch.tensor(off, dtype=torch.int64, device=dev)
        return p

    def _route(self, inp: LocalInput, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(lengths, values) to send, grouped by destination rank; row-wise, every bag goes to every
        rank with the ids of that rank's shard, made local to it."""
        if self.sharding == "table":
            values, _ = jagged_index_select(inp.values, inp.lengths, p["perm"])
            return inp.lengths[p["perm"]], values
        nb = p["send_bags"][0]
        bag = torch.repeat_interleave(torch.arange(nb, device=self.device), inp.lengths, output_size=inp.values.numel())
        blk = p["block"][p["bag_table"][bag]]
        dest = torch.div(inp.values, blk, rounding_mode="floor")
        key = dest * nb + bag
        order = torch.argsort(key, stable=True)
        values = (inp.values - dest * blk)[order]  # ids local to the destination's shard
        return torch.bincount(key, minlength=self.world * nb), values

    def _route_seq(self, inp: LocalInput):
        """History ids grouped by destination rank (made local to its shard), their count per
        destination (a device tensor) and, row-wise, the grouping's order (None table-wise)."""
        if inp.seq_values is None:
            return None
        ids, W = inp.seq_values, self.world
        if self.sharding == "table":
            counts = torch.zeros(W, dtype=torch.int64, device=self.device)
            counts[self.owners[-1]] = ids.numel()  # every event goes to the table's owner
            return ids, counts, None
        blk = self.block[-1]
        dest = torch.div(ids, blk, rounding_mode="floor")
        order = torch.argsort(dest, stable=True)
        return (ids - dest * blk)[order], torch.bincount(dest, minlength=W), order

    def _lookup_seq(self, ids: torch.Tensor) -> torch.Tensor:
        if self.weight.shape[0] == 0 or ids.numel() == 0:
            return torch.zeros(ids.numel(), self.dim, device=self.device, requires_grad=True)
        return F.embedding(ids + self.offset[-1], self.weight, sparse=True)

    def exchange(self, inp: LocalInput) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(pooled embeddings [local bags, dim] in table order, history rows [local events, dim] in
        event order or None), differentiable into the tables."""
        p = self._plan(inp)
        comm, W = self.comm, self.world
        send_bags, recv_bags = p["send_bags"], p["recv_bags"]
        lengths, values = self._route(inp, p)
        seq = self._route_seq(inp)
        if seq is None:
            recv_lengths = comm.all_to_all(lengths, send_bags, recv_bags, "ids_lengths")
            sums = [_segment_sums(lengths, send_bags), _segment_sums(recv_lengths, recv_bags)]
        else:  # each destination's chunk ends with the count of history ids sent to it
            ones = [1] * W
            send = _interleave([lengths, seq[1]], [send_bags, ones])
            got = comm.all_to_all(send, _add(send_bags, ones), _add(recv_bags, ones), "ids_lengths")
            recv_lengths, recv_counts = _deinterleave(got, [recv_bags, ones])
            sums = [_segment_sums(lengths, send_bags), _segment_sums(recv_lengths, recv_bags), seq[1], recv_counts]
        host = [int(x) for x in torch.cat(sums).tolist()]  # the step's one device -> host read
        send_vals, recv_vals = host[:W], host[W : 2 * W]
        seq_send, seq_recv = (host[2 * W : 3 * W], host[3 * W :]) if seq is not None else ([0] * W, [0] * W)
        if seq is not None:
            values = _interleave([values, seq[0]], [send_vals, seq_send])
        got = comm.all_to_all(values, _add(send_vals, seq_send), _add(recv_vals, seq_recv), "ids_values")
        recv_values, recv_seq = _deinterleave(got, [recv_vals, seq_recv])
        ids = recv_values + torch.repeat_interleave(p["recv_offset"], recv_lengths, output_size=recv_values.numel())
        rows = self._lookup(ids, recv_lengths).to(self.comm_dtype)
        if seq is not None:
            rows = _interleave([rows, self._lookup_seq(recv_seq).to(self.comm_dtype)], [recv_bags, seq_recv])
        out = _AllToAll.apply(rows, comm, _add(recv_bags, seq_recv), _add(send_bags, seq_send)).float()
        out, hist = _deinterleave(out, [send_bags, seq_send])
        if seq is not None and seq[2] is not None:  # row-wise: back to event order
            inv = torch.empty_like(seq[2])
            inv[seq[2]] = torch.arange(seq[2].numel(), device=self.device)
            hist = hist.index_select(0, inv)
        return self._unroute(out, p), hist if seq is not None else None

    def _unroute(self, out: torch.Tensor, p: dict) -> torch.Tensor:
        """The pooled rows back in this rank's bag order (row-wise: the shards' partials summed)."""
        if self.sharding == "table":
            return out[p["inv_perm"]]
        parts = out.view(self.world, p["send_bags"][0], self.dim)
        acc = parts[0]
        for d in range(1, self.world):  # a fixed order, so every bag's sum is bitwise reproducible
            acc = acc + parts[d]
        return acc


def _add(a: list[int], b: list[int]) -> list[int]:
    return [x + y for x, y in zip(a, b, strict=True)]


def _interleave(parts: list[torch.Tensor], splits: list[list[int]]) -> torch.Tensor:
    """One tensor grouped by destination: for each rank d, chunk d of every part in turn."""
    chunks = [torch.split(x, s) for x, s in zip(parts, splits, strict=True)]
    return torch.cat([c[d] for d in range(len(splits[0])) for c in chunks])


def _deinterleave(x: torch.Tensor, splits: list[list[int]]) -> list[torch.Tensor]:
    """The inverse of `_interleave`: the parts of a tensor grouped by source rank."""
    n = len(splits)
    pieces = torch.split(x, [s[d] for d in range(len(splits[0])) for s in splits])
    return [torch.cat(pieces[i::n]) for i in range(n)]


def forward_backward(emb: ShardedEmbeddings, head: torch.nn.Module, inp: LocalInput, fu: int, fi: int):
    """One step; returns the per-impression embeddings: user [N, Fu, D], item [N, Fi, D] and, with a
    history table, the history rows of every impression's events [sum of events, D]."""
    d = emb.dim
    pooled, seq = emb.exchange(inp)
    nu, n = inp.n_user_rows, inp.n_impressions
    user = pooled[: fu * nu].view(fu, nu, d).transpose(0, 1)
    if inp.expand is not None:
        user = user.index_select(0, inp.expand)  # ROO: request -> its impressions, after the exchange
    item = pooled[fu * nu :].view(fi, n, d).transpose(0, 1)
    feats = [user, item]
    out = [user.detach(), item.detach()]
    if seq is not None:
        assert inp.seq_lengths is not None
        row = torch.repeat_interleave(torch.arange(nu, device=seq.device), inp.seq_lengths, output_size=seq.shape[0])
        hist = torch.zeros(nu, d, device=seq.device, dtype=seq.dtype).index_add(0, row, seq)
        per_imp = seq
        if inp.expand is not None:  # ROO: each request's history, pooled once, joins its impressions
            hist = hist.index_select(0, inp.expand)
            per_imp, _ = jagged_index_select(seq, inp.seq_lengths, inp.expand)
        feats.append(hist.unsqueeze(1))
        out.append(per_imp.detach())
    x = torch.cat(feats, 1).reshape(n, -1)
    loss = F.binary_cross_entropy_with_logits(head(x).squeeze(-1), inp.labels)
    loss.backward()
    return tuple(out)
