"""Padding a batch to a bucket's capacity, so that one CUDA graph (roo_ref.graph_step) replays every
batch of the bucket: every tensor of the prepared batch then has the bucket's shape.

    need = batch_sizes(batch, max_history_len, sequences)   # what the batch holds (host ints)
    cap = bucket_for(need)                                    # sizes rounded up on a coarse grid
    padded = pad_batch(batch, cap, need)                      # a PaddedRequestBatch / PaddedImpressionBatch
    BucketPlan(max_buckets)                                   # a run's buckets: choose / plan_all

A `Bucket` is the capacity of every size a step's shapes depend on: rows (requests in the ROO
layout, impressions in the impression layout), impressions, user / item sparse values, history
events (after the model's history cap for sequence models) and, for sequence models (HSTU), the
longest sequence (the attention kernel's bound). `bucket_for` rounds each up on a geometric grid
of `GRID_STEPS` steps per octave (a size grows by at most ~4.4%), so the few distinct batch sizes
of a run share a few buckets; `floor` makes a bucket that also covers an earlier one.

Why the result trains exactly as the unpadded batch (up to float summation order):
- padding rows carry `impression_weight` 0, and the models' losses (roo_ref.models.common) sum
  the weighted per-row terms and divide by `real_impressions`, a device tensor (no sync); two-tower
  also masks the padding items out of its in-batch negatives;
- padding rows and values are fresh rows (their own requests / impressions), never added to a real
  row, so real rows compute what they did; every padding row's output gradient is 0, so its
  lookups' gradient rows are exactly 0: the row-wise Adagrad adds 0 to a row's state and moves
  the row by 0 (tests/test_graph_step.py checks the tables stay bit-equal);
- sequence models: padding tokens go into padding sequences no longer than the batch's longest
  sequence (at least 3 tokens), and attention is per sequence, so real sequences are untouched
  and the wasted attention work stays about (padding tokens) x (longest sequence).

Every padding row gets at least one padding impression / row, so a batch always pads (the capacity
is at least one above every row count): that keeps the padding rules free of special cases.
Padding ids are 0 (any valid id would do: its gradient rows are 0).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from roo_ref.jagged import jagged_tail
from workloads.batch import ImpressionBatch, RequestBatch
from workloads.errors import UserError

GRID_STEPS = 16  # grid points per octave: a bucket is at most 2**(1/16) - 1 ~ 4.4% above a size
MIN_SEQ = 3  # a padding sequence may hold context + one history token + one target


@dataclass(frozen=True)
class Bucket:
    """Sizes of a batch (batch_sizes) or capacities of a bucket (bucket_for); host ints.
    seq_len: the longest sequence (at least MIN_SEQ) for sequence models, 0 otherwise."""

    roo: bool
    rows: int
    impressions: int
    user_values: int
    item_values: int
    history: int
    seq_len: int = 0
    max_history_len: int = 0  # the history each row keeps (sequence models; 0: all)

    @property
    def sequences(self) -> bool:
        return self.seq_len > 0

    def describe(self) -> str:
        layout = "roo" if self.roo else "impression"
        seq = f", seq_len={self.seq_len}" if self.sequences else ""
        return (
            f"{layout}: rows={self.rows}, impressions={self.impressions}, user_values={self.user_values}, "
            f"item_values={self.item_values}, history={self.history}{seq}"
        )


@dataclass
class PaddedRequestBatch(RequestBatch):
    """A RequestBatch padded to a bucket: `impression_weight` [N] is 1 on real impressions and 0
    on padding ones; `real_impressions` a 0-d float32 tensor, the real impression count."""

    impression_weight: torch.Tensor
    real_impressions: torch.Tensor


@dataclass
class PaddedImpressionBatch(ImpressionBatch):
    """An ImpressionBatch padded to a bucket (fields as PaddedRequestBatch's)."""

    impression_weight: torch.Tensor
    real_impressions: torch.Tensor


def grid_ceil(n: int, steps: int = GRID_STEPS) -> int:
    """The smallest integer >= n of the form ceil(2**(k / steps)) (0 for n <= 0)."""
    if n <= 0:
        return 0
    k = max(0, math.floor(steps * math.log2(n)) - 1)
    while math.ceil(2 ** (k / steps)) < n:
        k += 1
    return math.ceil(2 ** (k / steps))


def _truncate(batch, max_history_len: int):
    """The batch with each row's history cut to its last `max_history_len` events (what an HSTU
    model keeps), so the kept history's size is the padded size."""
    if not max_history_len:
        return batch
    h = batch.history_lengths
    if h.numel() == 0 or int(h.max()) <= max_history_len:
        return batch
    keep, h_len = jagged_tail(h, max_history_len, batch.history_item_ids.numel())
    cut = {k: getattr(batch, k)[keep] for k in ("history_item_ids", "history_actions", "history_timestamps")}
    return dataclasses.replace(batch, history_lengths=h_len, **cut)


def batch_sizes(batch: RequestBatch | ImpressionBatch, max_history_len: int = 0, sequences: bool = False) -> Bucket:
    """What `batch` holds, after the history cap `max_history_len` (0: none; HSTU's
    `max_history_len`). sequences: the model runs attention over [context, history, targets]
    sequences (HSTU), so the longest one counts. Syncs (the lengths): outside a timed step."""
    if not isinstance(batch, RequestBatch | ImpressionBatch):
        raise UserError(f"can only pad a RequestBatch or an ImpressionBatch, got {type(batch).__name__}")
    roo = isinstance(batch, RequestBatch)
    b = _truncate(batch, max_history_len)
    n = b.item_id.numel()
    seq = 0
    if sequences:
        targets = b.num_impressions if roo else torch.ones_like(b.history_lengths)
        lengths = 1 + b.history_lengths + targets
        seq = max(MIN_SEQ, int(lengths.max()) if lengths.numel() else 0)
    return Bucket(
        roo=roo,
        rows=b.request_id.numel(),
        impressions=n,
        user_values=b.user_sparse_values.numel(),
        item_values=b.item_sparse_values.numel(),
        history=b.history_item_ids.numel(),
        seq_len=seq,
        max_history_len=max_history_len if sequences else 0,
    )


def _row_caps(need: Bucket) -> tuple[int | None, int | None]:
    """(history + targets, history) a padding row may hold (None: any number). A padding sequence
    is no longer than the batch's longest, and its history no longer than the model keeps (else
    the model's own cut would change the kept history's size)."""
    if not need.sequences:
        return None, need.max_history_len or None
    # ROO: a padding request is 1 context token + history + targets; impression: + exactly 1 target
    tokens = need.seq_len - 1 if need.roo else need.seq_len - 2
    return tokens, min(tokens, need.max_history_len) if need.max_history_len else tokens


def _padding_rows(need: Bucket, cap: Bucket) -> int:
    """The fewest padding rows that hold the padding history and impressions within _row_caps."""
    p_hist, p_imp = cap.history - need.history, cap.impressions - need.impressions
    tokens, hist = _row_caps(need)
    rows = 1
    if hist is not None:
        rows = max(rows, math.ceil(p_hist / hist))
    if need.roo and tokens is not None:
        rows = max(rows, math.ceil((p_hist + p_imp) / tokens))
    return rows


def fits(need: Bucket, cap: Bucket) -> bool:
    """Whether a batch of sizes `need` pads to bucket `cap` (by the rules of pad_batch)."""
    if (need.roo, need.sequences, need.max_history_len) != (cap.roo, cap.sequences, cap.max_history_len):
        return False
    sizes = ("user_values", "item_values", "history", "seq_len")
    if any(getattr(cap, s) < getattr(need, s) for s in sizes):
        return False
    if cap.impressions <= need.impressions or cap.rows <= need.rows:
        return False
    return cap.rows - need.rows >= _padding_rows(need, cap)


def bucket_for(need: Bucket, floor: Bucket | None = None, steps: int = GRID_STEPS) -> Bucket:
    """The smallest grid bucket `need` fits, and at least `floor` in every size (a bucket that
    also covers an earlier one)."""
    if floor is not None and (floor.roo, floor.sequences, floor.max_history_len) != (
        need.roo,
        need.sequences,
        need.max_history_len,
    ):
        raise UserError(f"bucket floor ({floor.describe()}) is for another layout or model than ({need.describe()})")
    f = floor or Bucket(need.roo, 0, 0, 0, 0, 0, 0, need.max_history_len)

    def g(attr: str, n: int) -> int:
        return grid_ceil(max(n, getattr(f, attr)), steps)

    cap = Bucket(
        roo=need.roo,
        rows=0,
        impressions=g("impressions", need.impressions + 1) if need.roo else 0,
        user_values=g("user_values", need.user_values),
        item_values=g("item_values", need.item_values),
        history=g("history", need.history),
        seq_len=g("seq_len", need.seq_len) if need.sequences else 0,
        max_history_len=need.max_history_len,
    )
    rows = g("rows", need.rows + _padding_rows(need, cap))
    if not need.roo:  # rows are the impressions
        rows = g("impressions", rows)
    return dataclasses.replace(cap, rows=rows, impressions=cap.impressions if need.roo else rows)


def _split(total: int, rows: int, per_row: int | None) -> torch.Tensor:
    """[rows] counts summing to `total`, each <= per_row, filled greedily. per_row None: spread
    evenly (ceil(total / rows) each): a kernel that gives a bag or a sequence to one thread block
    (ATen's embedding_bag) would otherwise run the whole padding as one serial bag."""
    if per_row is None:
        per_row = max(1, math.ceil(total / rows))
    start = torch.arange(rows, dtype=torch.int64) * per_row
    return (total - start).clamp(0, per_row)


def _padding_layout(need: Bucket, cap: Bucket) -> tuple[torch.Tensor, torch.Tensor]:
    """(impressions [padding rows] (ROO only; ones otherwise), history events [padding rows]):
    the history fills rows greedily up to its cap, then the impressions the room left."""
    p_rows, p_imp, p_hist = cap.rows - need.rows, cap.impressions - need.impressions, cap.history - need.history
    tokens, hist_cap = _row_caps(need)
    hist = _split(p_hist, p_rows, hist_cap)
    if not need.roo:
        return torch.ones(p_rows, dtype=torch.int64), hist
    if tokens is None:
        return _split(p_imp, p_rows, None), hist
    room = tokens - hist
    before = torch.cumsum(room, 0) - room  # room of earlier padding rows
    return torch.minimum(room, (p_imp - before).clamp(min=0)), hist


def _pad_keyed(lengths: torch.Tensor, values: torch.Tensor, rows: int, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keyed jagged [F, r] -> [F, rows]: `extra` padding ids (0) in feature 0, spread evenly over the
    padding rows (_split)."""
    n_feat, r = lengths.shape
    out = lengths.new_zeros((n_feat, rows))
    out[:, :r] = lengths
    if extra == 0:
        return out, values
    if n_feat == 0:
        raise UserError(f"cannot pad {extra} sparse values into a batch with no sparse features")
    out[0, r:] = _split(extra, rows - r, None)
    first = int(lengths[0].sum())  # feature 0's values come first (feature-major)
    pad = values.new_zeros(extra)
    return out, torch.cat([values[:first], pad, values[first:]])


def _grow(t: torch.Tensor, rows: int, fill: int | float = 0) -> torch.Tensor:
    """`t` with rows appended (value `fill`) up to `rows` rows."""
    pad = t.new_full((rows - t.shape[0], *t.shape[1:]), fill)
    return torch.cat([t, pad])


def pad_batch(
    batch: RequestBatch | ImpressionBatch, cap: Bucket, need: Bucket | None = None
) -> PaddedRequestBatch | PaddedImpressionBatch:
    """`batch` (its history cut to the bucket's `max_history_len`, as batch_sizes does) padded to
    bucket `cap`. `need`: batch_sizes of it (computed when None). A batch that does not fit the
    bucket is a UserError naming both."""
    need = need or batch_sizes(batch, cap.max_history_len, cap.sequences)
    if not fits(need, cap):
        raise UserError(f"a batch of ({need.describe()}) does not fit the graph bucket ({cap.describe()})")
    b = _truncate(batch, cap.max_history_len)
    dev = b.item_id.device
    p_targets, p_hist = (t.to(dev) for t in _padding_layout(need, cap))
    usl, usv = _pad_keyed(b.user_sparse_lengths, b.user_sparse_values, cap.rows, cap.user_values - need.user_values)
    isl, isv = _pad_keyed(
        b.item_sparse_lengths, b.item_sparse_values, cap.impressions, cap.item_values - need.item_values
    )
    weight = torch.zeros(cap.impressions, dtype=torch.float32, device=dev)
    weight[: need.impressions] = 1.0
    out = {
        "request_id": _grow(b.request_id, cap.rows, -1),
        "timestamp": _grow(b.timestamp, cap.rows),
        "user_dense": _grow(b.user_dense, cap.rows),
        "user_sparse_lengths": usl,
        "user_sparse_values": usv,
        "history_lengths": torch.cat([b.history_lengths, p_hist]),
        "history_item_ids": _grow(b.history_item_ids, cap.history),
        "history_actions": _grow(b.history_actions, cap.history),
        "history_timestamps": _grow(b.history_timestamps, cap.history),
        "item_id": _grow(b.item_id, cap.impressions),
        "item_sparse_lengths": isl,
        "item_sparse_values": isv,
        "item_dense": _grow(b.item_dense, cap.impressions),
        "labels": _grow(b.labels, cap.impressions),
        "impression_weight": weight,
        "real_impressions": torch.tensor(float(need.impressions), dtype=torch.float32, device=dev),
    }
    if need.roo:
        return PaddedRequestBatch(num_impressions=torch.cat([b.num_impressions, p_targets]), **out)
    return PaddedImpressionBatch(**out)


def cover(buckets: list[Bucket]) -> Bucket | None:
    """The elementwise maximum of `buckets` (None for none): a floor covering each of them."""
    if not buckets:
        return None
    rows = [dataclasses.astuple(b) for b in buckets]
    return Bucket(*(max(col) for col in zip(*rows, strict=True)))


class BucketPlan:
    """The buckets of one run (host only), at most `max_buckets` of them."""

    def __init__(self, max_buckets: int):
        self.max_buckets = max_buckets
        self.buckets: list[Bucket] = []

    def _add(self, bucket: Bucket, need: Bucket) -> Bucket:
        if bucket in self.buckets:
            return bucket
        if len(self.buckets) >= self.max_buckets:
            largest = max(self.buckets, key=lambda b: (b.rows, b.impressions, b.history))
            raise UserError(
                f"a batch of ({need.describe()}) fits none of the {len(self.buckets)} CUDA-graph buckets "
                f"(the largest: {largest.describe()}) and max_buckets={self.max_buckets} are planned; "
                "raise max_buckets or keep the batch sizes steadier"
            )
        self.buckets.append(bucket)
        return bucket

    def choose(self, need: Bucket) -> Bucket:
        """The smallest planned bucket `need` fits, else a new one covering it and every earlier one."""
        fitting = [b for b in self.buckets if fits(need, b)]
        if fitting:
            return min(fitting, key=lambda b: (b.rows, b.impressions, b.history, b.seq_len))
        return self._add(bucket_for(need, cover(self.buckets)), need)

    def plan_all(self, needs: list[Bucket]) -> Bucket | None:
        """One bucket (covering the planned ones) that every one of `needs` fits: grown pass by
        pass until all fit (each pass only grows it, so this ends)."""
        bucket = cover(self.buckets)
        if not needs:
            return bucket
        while bucket is None or not all(fits(n, bucket) for n in needs):
            for n in needs:
                if bucket is None or not fits(n, bucket):
                    bucket = bucket_for(n, bucket)
        return self._add(bucket, max(needs, key=lambda n: n.rows))
