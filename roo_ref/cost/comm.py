"""Analytic communication model of model-parallel embeddings: all-to-all bytes per training step.

Pure functions (no torch.distributed): the expected-value versions take a WorkloadSpec (for
planning and the cost model), the exact versions take a RequestBatch (the global batch of one step)
and reproduce, byte for byte, what `harness.comm` hands to `torch.distributed.all_to_all_single`.

Setting (as torchrec's sharded EmbeddingBagCollection, one table per sparse feature):
- W ranks train data-parallel: the global batch of requests is cut into W contiguous slices
  (`rank_slices`); rank s owns the rows of its slice. Each sparse feature (every feature of the
  spec's `user_sparse` and `item_sparse` groups) has one table of `rows_t = min(cardinality,
  row_cap)` rows (ids are taken modulo rows_t) and `dim` columns, pooled with sum.
- Rows of a table: item tables always have one row (bag) per impression. User tables have one
  row per impression in the impression layout (the user's ids copied into each impression), and
  one row per request in the ROO layout (pooled once, expanded to impressions after the exchange,
  as torchrec VBE does).
- Table-wise sharding ("table"): table t lives whole on rank owner(t) (`assign_tables`).
- Row-wise sharding ("row"): table t is cut into W blocks of `ceil(rows_t / W)` rows; id i lives on
  rank i // block_t. Every rank computes partial sums for every bag; the partials are summed at the
  bag's home rank (torchrec's reduce-scatter, done here as an all-to-all + sum).

One step = four all-to-alls (`COLLECTIVES_PER_STEP`, all counted), every feature batched into each
(the shape of torchrec's KJTAllToAll and pooled-embedding all-to-all):
  ids_lengths  int64 bag lengths of the input redistribution (with a history sequence: one more
               int64 per destination, the count of history ids sent to it),
  ids_values   int64 ids of the input redistribution (pooled features' ids, then history ids),
  pooled_fwd   embeddings forward (`dim * emb_bytes` per pooled bag handed, and per history event),
  grad_bwd     their gradients backward (the same shapes in reverse).
The lengths all-to-all is the exchange of split sizes: its splits (bags per destination) follow from
the step's shape, which every rank knows (as torchrec's stride); the values' splits are summed from
the lengths sent and received and read by the host once per step (the one sync the collective API
needs).

History sequence (HSTU, `history_cap > 0`): the last `history_cap` events of each request are looked
up one row per event (no pooling) in one more table (`side == "history"`, rows = min(history item
cardinality, row_cap)), sharded like the others. Under ROO a request's events are sent once; in
the impression layout once per impression (k times). With E_s the events of rank s:
  table-wise  values += 8*E_s, fwd = bwd += e*D*E_s (cross: s != owner(history))
  row-wise    values += 8*E_s, fwd = bwd += e*D*E_s (cross: the events with id // block != s)
  both        lengths += 8*W per rank (cross: 8*(W-1) per rank)
Per component two counts are given, both summed over all W ranks:
  handed  every byte of the input tensors handed to all_to_all_single (the chunk a rank sends to
          itself included) — what `harness.comm` counts by wrapping the collective;
  cross   only the bytes whose source and destination ranks differ (what crosses a link).
With B_s(t) the bags of table t on rank s, L_s(t) its ids, e = emb_bytes, D = dim:
  table-wise  handed: lengths 8*sum B_s(t)   values 8*sum L_s(t)   fwd = bwd = e*D*sum B_s(t)
              cross:  the same sums restricted to s != owner(t)
  row-wise    handed: lengths 8*W*sum B_s(t) values 8*sum L_s(t)   fwd = bwd = e*D*W*sum B_s(t)
              cross:  lengths and fwd/bwd times (W-1)/W exactly; values: the ids with
                      id // block_t != s (exact version), (W-1)/W of them in expectation.
The row counts B_s are known to every rank (each generates the same global batch), so no
exchange of split sizes beyond the lengths all-to-all is needed or counted. The bytes of the dense data-parallel
all-reduce are a separate function (`allreduce_bytes`) and not part of the all-to-all totals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from workloads.errors import UserError
from workloads.layout import LAYOUTS
from workloads.spec import WorkloadSpec

if TYPE_CHECKING:
    import torch

    from workloads.batch import RequestBatch
SHARDINGS = ("table", "row")
ASSIGNMENTS = ("greedy", "round_robin")
COMPONENTS = ("ids_lengths", "ids_values", "pooled_fwd", "grad_bwd")
COLLECTIVES_PER_STEP = len(COMPONENTS)  # one all-to-all per component, every feature batched
ID_BYTES = 8  # ids and lengths travel as int64 (torchrec's default index/offset type)
DEFAULT_ROW_CAP = 65_536


@dataclass(frozen=True)
class Table:
    """One embedding table (one sparse feature)."""

    name: str
    side: str  # "user" (request-only) or "item" (per impression)
    rows: int  # after the row cap
    ids_per_row_mean: float  # expected pooling factor (ids per bag)


@dataclass(frozen=True)
class A2ABytes:
    """All-to-all bytes of one step, summed over ranks (floats for the expected-value version)."""

    ids_lengths: float
    ids_values: float
    pooled_fwd: float
    grad_bwd: float
    cross_ids_lengths: float
    cross_ids_values: float
    cross_pooled_fwd: float
    cross_grad_bwd: float
    seq_bytes: float = 0.0  # of the total handed, the history sequence's part (ids, rows, counts)

    @property
    def total(self) -> float:
        """Bytes handed to the collectives per step (all ranks)."""
        return self.ids_lengths + self.ids_values + self.pooled_fwd + self.grad_bwd

    @property
    def cross_total(self) -> float:
        return self.cross_ids_lengths + self.cross_ids_values + self.cross_pooled_fwd + self.cross_grad_bwd

    def handed(self) -> dict[str, float]:
        return {c: getattr(self, c) for c in COMPONENTS}

    def cross(self) -> dict[str, float]:
        return {c: getattr(self, f"cross_{c}") for c in COMPONENTS}

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["total"] = self.total
        d["cross_total"] = self.cross_total
        return d


# --- tables, sharding plan -------------------------------------------------------------------------
def embedding_tables(
    spec: WorkloadSpec, row_cap: int | None = DEFAULT_ROW_CAP, history_cap: int = 0
) -> tuple[Table, ...]:
    """One table per sparse feature: user features first, then item features (batch order); with
    `history_cap > 0` and a history in the spec, the history sequence's table last."""
    if row_cap is not None and row_cap < 1:
        raise UserError(f"row_cap={row_cap} must be >= 1 (or None for full cardinality)")
    if history_cap < 0:
        raise UserError(f"history_cap={history_cap} must be >= 0 (0: no history sequence)")
    out = []
    for side, feats in (("user", spec.user_features()), ("item", spec.item_features())):
        for name, g in feats:
            rows = g.cardinality if row_cap is None else min(g.cardinality, row_cap)
            out.append(Table(name, side, rows, g.pooling.mean()))
    if history_cap and spec.history.length.mean() > 0:
        card = spec.history.item_cardinality
        xs, ps = spec.history.length.pmf_table
        events = float((xs.clip(max=history_cap) * ps).sum())  # E[min(length, cap)]
        out.append(Table("history", "history", card if row_cap is None else min(card, row_cap), events))
    return tuple(out)


def pooled_tables(tables: Sequence[Table]) -> int:
    """How many of `tables` are pooled (all but a trailing history table)."""
    return len(tables) - (1 if tables and tables[-1].side == "history" else 0)


def check_world_size(world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise UserError(f"world_size={world_size!r} must be an integer >= 1")


def assign_tables(tables: Sequence[Table], world_size: int, method: str = "greedy") -> tuple[int, ...]:
    """Owner rank of each table for table-wise sharding (deterministic).

    round_robin: table i -> rank i % W. greedy: largest tables first (ties by table order), each to
    the rank with the fewest rows so far (ties to the lowest rank) — balances memory."""
    check_world_size(world_size)
    if method == "round_robin":
        return tuple(i % world_size for i in range(len(tables)))
    if method != "greedy":
        raise UserError(f"assign={method!r}; allowed: {', '.join(ASSIGNMENTS)}")
    load = [0] * world_size
    owner = [0] * len(tables)
    for i in sorted(range(len(tables)), key=lambda i: (-tables[i].rows, i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += tables[i].rows
    return tuple(owner)


def row_block(rows: int, world_size: int) -> int:
    """Rows per rank of a row-wise sharded table (the last block may be shorter or empty)."""
    return -(-rows // world_size)


def rank_slices(n_requests: int, world_size: int) -> list[tuple[int, int]]:
    """Contiguous, balanced data-parallel slices [lo, hi) of the global batch's requests."""
    check_world_size(world_size)
    return [(s * n_requests // world_size, (s + 1) * n_requests // world_size) for s in range(world_size)]


def _check(layout: str, sharding: str, dim: int, emb_bytes: int) -> None:
    if layout not in LAYOUTS:
        raise UserError(f"layout={layout!r}; allowed: {', '.join(LAYOUTS)}")
    if sharding not in SHARDINGS:
        raise UserError(f"sharding={sharding!r}; allowed: {', '.join(SHARDINGS)}")
    if dim < 1:
        raise UserError(f"embedding_dim={dim} must be >= 1")
    if emb_bytes not in (1, 2, 4, 8):
        raise UserError(f"emb_bytes={emb_bytes} must be 1, 2, 4 or 8 (bytes per embedding element)")


def _combine(
    bags: Sequence[Sequence[float]],  # bags[s][t], pooled tables
    ids: Sequence[Sequence[float]],  # ids[s][t], pooled tables
    cross_ids_rw: float | None,  # row-wise: ids that leave their rank (None for table-wise)
    owners: Sequence[int] | None,
    world_size: int,
    sharding: str,
    dim: int,
    emb_bytes: int,
    seq: Sequence[float] | None = None,  # history events per rank (None: no history table)
    cross_seq_rw: float = 0.0,  # row-wise: history events whose home shard is another rank
) -> A2ABytes:
    W = world_size
    n_tab = len(bags[0]) if bags else 0
    all_bags = sum(sum(b) for b in bags)
    all_ids = sum(sum(i) for i in ids)
    row_bytes = dim * emb_bytes
    ev = float(sum(seq)) if seq is not None else 0.0
    if sharding == "table":
        assert owners is not None
        x_bags = sum(bags[s][t] for s in range(W) for t in range(n_tab) if owners[t] != s)
        x_ids = sum(ids[s][t] for s in range(W) for t in range(n_tab) if owners[t] != s)
        x_ev = sum(seq[s] for s in range(W) if owners[-1] != s) if seq is not None else 0.0
        lengths, x_lengths = ID_BYTES * all_bags, ID_BYTES * x_bags
        rows, x_rows = all_bags, x_bags
    else:
        assert cross_ids_rw is not None
        x_ids, x_ev = cross_ids_rw, cross_seq_rw
        lengths, x_lengths = ID_BYTES * W * all_bags, ID_BYTES * (W - 1) * all_bags
        rows, x_rows = W * all_bags, (W - 1) * all_bags
    counts = ID_BYTES * W * W if seq is not None else 0  # one history-id count per (source, destination)
    x_counts = ID_BYTES * W * (W - 1) if seq is not None else 0
    return A2ABytes(
        ids_lengths=lengths + counts,
        ids_values=ID_BYTES * (all_ids + ev),
        pooled_fwd=row_bytes * (rows + ev),
        grad_bwd=row_bytes * (rows + ev),
        cross_ids_lengths=x_lengths + x_counts,
        cross_ids_values=ID_BYTES * (x_ids + x_ev),
        cross_pooled_fwd=row_bytes * (x_rows + x_ev),
        cross_grad_bwd=row_bytes * (x_rows + x_ev),
        seq_bytes=counts + ev * (ID_BYTES + 2 * row_bytes),
    )


# --- expected values from the spec -------------------------------------------------------------------
def expected_a2a_bytes(
    spec: WorkloadSpec,
    layout: str,
    world_size: int,
    requests_per_rank: float | None = None,
    sharding: str = "table",
    embedding_dim: int = 128,
    emb_bytes: int = 4,
    row_cap: int | None = DEFAULT_ROW_CAP,
    assign: str = "greedy",
    history_cap: int = 0,
) -> A2ABytes:
    """Expected all-to-all bytes per step for `requests_per_rank` requests on each of W ranks
    (default: the spec's requests_per_batch). Uses E[k] and E[pooling] from the spec's
    distributions; in the impression layout a user bag holds E[k]*E[pool] ids per request (k and
    pooling are drawn independently). Row-wise cross ids are exactly (W-1)/W of all ids in
    expectation whatever the id popularity, because every rank draws from the same distribution."""
    _check(layout, sharding, embedding_dim, emb_bytes)
    check_world_size(world_size)
    r = float(spec.requests_per_batch if requests_per_rank is None else requests_per_rank)
    if r <= 0:
        raise UserError(f"requests_per_rank={requests_per_rank} must be > 0")
    k = spec.impressions.mean()
    tables = embedding_tables(spec, row_cap, history_cap)
    n_pooled = pooled_tables(tables)
    bags_t, ids_t = [], []
    for t in tables[:n_pooled]:
        rows = r if (t.side == "user" and layout == "roo") else r * k
        bags_t.append(rows)
        ids_t.append(rows * t.ids_per_row_mean)
    bags = [list(bags_t) for _ in range(world_size)]
    ids = [list(ids_t) for _ in range(world_size)]
    owners = assign_tables(tables, world_size, assign) if sharding == "table" else None
    cross_ids = sum(ids_t) * (world_size - 1) if sharding == "row" else None
    seq = None
    if n_pooled < len(tables):  # a request's events once under ROO, once per impression otherwise
        seq = [r * (1.0 if layout == "roo" else k) * tables[-1].ids_per_row_mean] * world_size
    cross_seq = sum(seq) * (world_size - 1) / world_size if seq is not None else 0.0
    return _combine(bags, ids, cross_ids, owners, world_size, sharding, embedding_dim, emb_bytes, seq, cross_seq)


# --- exact values from a batch ------------------------------------------------------------------------
def local_bag_counts(batch: RequestBatch, layout: str, lo: int, hi: int) -> tuple[int, int]:
    """(user bags, item bags) per table of requests [lo, hi) in a layout."""
    n_imp = int(batch.num_impressions[lo:hi].sum())
    return (hi - lo if layout == "roo" else n_imp), n_imp


def exact_a2a_bytes(
    batch: RequestBatch,
    layout: str,
    world_size: int,
    sharding: str = "table",
    embedding_dim: int = 128,
    emb_bytes: int = 4,
    row_cap: int | None = DEFAULT_ROW_CAP,
    assign: str = "greedy",
    spec: WorkloadSpec | None = None,
    tables: Sequence[Table] | None = None,
    history_cap: int = 0,
) -> A2ABytes:
    """Exact all-to-all bytes of one step on the global batch `batch` (its requests cut by
    `rank_slices`). Give `tables` (or `spec`, from which they are derived with `row_cap` and
    `history_cap`); the table order is the batch's feature order (user features, then item
    features, then the history table when there is one: its events are each request's last
    `history_cap`)."""
    import torch

    _check(layout, sharding, embedding_dim, emb_bytes)
    check_world_size(world_size)
    if tables is None:
        if spec is None:
            raise UserError("exact_a2a_bytes needs the spec or the tables")
        tables = embedding_tables(spec, row_cap, history_cap)
    fu, r = batch.user_sparse_lengths.shape
    fi = batch.item_sparse_lengths.shape[0]
    n_pooled = pooled_tables(tables)
    if n_pooled < len(tables) and history_cap < 1:
        raise UserError("a history table needs history_cap >= 1 (the events kept per request)")
    if fu + fi != n_pooled:
        raise UserError(f"the batch has {fu}+{fi} sparse features but {len(tables)} tables were given")
    k = batch.num_impressions.to(torch.int64)
    u_len = batch.user_sparse_lengths.to(torch.int64)
    i_len = batch.item_sparse_lengths.to(torch.int64)
    imp_off = batch.impression_offsets().tolist()
    slices = rank_slices(r, world_size)
    bags: list[list[int]] = []
    ids: list[list[int]] = []
    for lo, hi in slices:
        nb_user, nb_item = local_bag_counts(batch, layout, lo, hi)
        # user ids of the slice: per request, times k in the impression layout (copied per impression)
        uw = u_len[:, lo:hi] * (k[lo:hi] if layout == "impression" else 1)
        iw = i_len[:, imp_off[lo] : imp_off[hi]]
        bags.append([nb_user] * fu + [nb_item] * fi)
        ids.append([int(x) for x in uw.sum(1).tolist()] + _row_sums(iw))
    owners = assign_tables(tables, world_size, assign) if sharding == "table" else None
    cross_ids = None
    if sharding == "row":
        cross_ids = _row_wise_cross_ids(batch, layout, tables[:n_pooled], slices, world_size)
    seq, cross_seq = None, 0
    if n_pooled < len(tables):
        seq, cross_seq = _history_events(batch, layout, tables[-1], slices, world_size, history_cap)
    return _combine(bags, ids, cross_ids, owners, world_size, sharding, embedding_dim, emb_bytes, seq, float(cross_seq))


def history_window(lengths: torch.Tensor, cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last `cap` events of each row of a jagged history: (kept lengths, index of each kept
    event into the values), in row order."""
    import torch

    kept = lengths.clamp(max=cap)
    ends = torch.cumsum(lengths, 0)
    starts = ends - kept  # the window ends where the row ends
    row = torch.repeat_interleave(torch.arange(lengths.numel()), kept)
    first = torch.cumsum(kept, 0) - kept
    return kept, starts[row] + torch.arange(row.numel()) - first[row]


def _history_events(
    batch: RequestBatch, layout: str, table: Table, slices: list[tuple[int, int]], world_size: int, cap: int
) -> tuple[list[int], int]:
    """History events each rank sends (per request under ROO, per impression otherwise), and
    row-wise, how many of them live on another rank's shard."""
    import torch

    kept, idx = history_window(batch.history_lengths.to(torch.int64), cap)
    w = batch.num_impressions.to(torch.int64) if layout == "impression" else torch.ones_like(kept)
    per_req = kept * w
    events = [int(per_req[lo:hi].sum()) for lo, hi in slices]
    req_rank = torch.empty(kept.numel(), dtype=torch.int64)
    for s, (lo, hi) in enumerate(slices):
        req_rank[lo:hi] = s
    req = torch.repeat_interleave(torch.arange(kept.numel()), kept)
    home = (batch.history_item_ids[idx] % table.rows) // row_block(table.rows, world_size)
    cross = int(w[req][home != req_rank[req]].sum())
    return events, cross


def _row_sums(lengths: torch.Tensor) -> list[int]:
    return [int(x) for x in lengths.sum(1).tolist()] if lengths.shape[0] else []


def _bag_tables_rows(lengths: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each id of a keyed jagged tensor (feature-major lengths [F, rows]): its feature and row."""
    import torch

    f, rows = lengths.shape
    flat = lengths.reshape(-1)
    bag = torch.repeat_interleave(torch.arange(f * rows), flat, output_size=values.numel())
    return bag // max(rows, 1), bag % max(rows, 1)


def _row_wise_cross_ids(
    batch: RequestBatch, layout: str, tables: Sequence[Table], slices: list[tuple[int, int]], world_size: int
) -> int:
    """Ids whose row-wise home rank differs from the rank whose slice holds their bag."""
    import torch

    fu, r = batch.user_sparse_lengths.shape
    cross = 0
    req_rank = torch.empty(r, dtype=torch.int64)
    for s, (lo, hi) in enumerate(slices):
        req_rank[lo:hi] = s
    rows_t = torch.tensor([t.rows for t in tables], dtype=torch.int64)
    block_t = torch.tensor([row_block(t.rows, world_size) for t in tables], dtype=torch.int64)
    # user ids: the bag's request decides the rank; in the impression layout each id is sent once
    # per impression of its request (weight k)
    if batch.user_sparse_values.numel():
        feat, req = _bag_tables_rows(batch.user_sparse_lengths, batch.user_sparse_values)
        home = (batch.user_sparse_values % rows_t[feat]) // block_t[feat]
        w = batch.num_impressions[req] if layout == "impression" else torch.ones_like(req)
        cross += int(w[home != req_rank[req]].sum())
    if batch.item_sparse_values.numel():
        feat, imp = _bag_tables_rows(batch.item_sparse_lengths, batch.item_sparse_values)
        feat = feat + fu
        imp_rank = req_rank[batch.impression_to_request()]
        home = (batch.item_sparse_values % rows_t[feat]) // block_t[feat]
        cross += int((home != imp_rank[imp]).sum())
    return cross


# --- derived quantities -------------------------------------------------------------------------------
def saving(impression: A2ABytes, roo: A2ABytes, cross: bool = False) -> float:
    """1 - roo/impression of the bytes handed (or crossing ranks) per step."""
    a = impression.cross_total if cross else impression.total
    b = roo.cross_total if cross else roo.total
    return 1.0 - b / a if a else 0.0


def allreduce_bytes(param_bytes: float, world_size: int) -> float:
    """Bytes each rank sends in a ring all-reduce of `param_bytes` (data-parallel dense grads):
    2 (W-1)/W * param_bytes (reduce-scatter then all-gather); W times that over all ranks."""
    check_world_size(world_size)
    return 2.0 * (world_size - 1) / world_size * param_bytes


def alltoall_time_s(bytes_per_rank: float, world_size: int, bus_bw: float, latency_s: float = 0.0) -> float:
    """Bandwidth model of one all-to-all where each rank hands `bytes_per_rank` bytes: the
    (W-1)/W share that leaves the rank moves at the bus bandwidth (nccl-tests' busbw definition:
    busbw = algbw * (W-1)/W with algbw = bytes_per_rank / time)."""
    check_world_size(world_size)
    if bus_bw <= 0:
        raise UserError(f"bus_bw={bus_bw} must be > 0")
    return latency_s + bytes_per_rank * (world_size - 1) / world_size / bus_bw


def allreduce_time_s(param_bytes: float, world_size: int, bus_bw: float, latency_s: float = 0.0) -> float:
    """Ring all-reduce time: 2 (W-1)/W * bytes at the bus bandwidth (nccl-tests' allreduce busbw)."""
    if bus_bw <= 0:
        raise UserError(f"bus_bw={bus_bw} must be > 0")
    return latency_s + allreduce_bytes(param_bytes, world_size) / bus_bw


def step_a2a_time_s(b: A2ABytes, world_size: int, bus_bw: float, latency_s: float = 0.0) -> float:
    """Time of the `COLLECTIVES_PER_STEP` all-to-alls of a step at a bus bandwidth, with `latency_s` per collective:
    the cross bytes (the share that leaves each rank) at busbw."""
    check_world_size(world_size)
    if bus_bw <= 0:
        raise UserError(f"bus_bw={bus_bw} must be > 0")
    return COLLECTIVES_PER_STEP * latency_s + b.cross_total / world_size / bus_bw


__all__ = [
    "A2ABytes",
    "ASSIGNMENTS",
    "COLLECTIVES_PER_STEP",
    "COMPONENTS",
    "DEFAULT_ROW_CAP",
    "ID_BYTES",
    "LAYOUTS",
    "SHARDINGS",
    "Table",
    "allreduce_bytes",
    "allreduce_time_s",
    "alltoall_time_s",
    "assign_tables",
    "embedding_tables",
    "exact_a2a_bytes",
    "expected_a2a_bytes",
    "history_window",
    "local_bag_counts",
    "pooled_tables",
    "rank_slices",
    "row_block",
    "saving",
    "step_a2a_time_s",
]
