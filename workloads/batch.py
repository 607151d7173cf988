"""The two layouts of the same data, as torch tensors (CPU or any torch device).

RequestBatch (ROO): one row per request. Request-only (RO) features once per request; non-request-
only (NRO) features and labels jagged over the request's k impressions.

ImpressionBatch: one row per impression, RO features copied into each of the request's rows —
what a classic pipeline stores and trains on.

Jagged conventions (as torchrec's KeyedJaggedTensor and fbgemm): sparse features are
`values` (all ids, feature-major) + `lengths` of shape [F, rows] (ids per feature per row).
The history is `history_lengths` [rows] + flat `history_item_ids`, `history_actions`,
`history_timestamps`. Offsets are always derived from lengths; the jagged ops are in workloads.jagged.

Invariants (checked by `validate()`): every request has >= 1 impression; the rows of one request
are adjacent in an ImpressionBatch built by `to_impressions()`; `to_requests()` accepts any row
order and groups by `request_id` in order of first appearance, keeping impression order.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TypeVar

import torch

from workloads.errors import UserError
from workloads.expand import gather_rows
from workloads.jagged import jagged_index_select, keyed_index_select, offsets_from_lengths, row_index

RO_FIELDS = (
    "timestamp",
    "user_dense",
    "user_sparse_lengths",
    "user_sparse_values",
    "history_lengths",
    "history_item_ids",
    "history_actions",
    "history_timestamps",
)
NRO_FIELDS = ("item_id", "item_sparse_lengths", "item_sparse_values", "item_dense", "labels")


_B = TypeVar("_B", bound="_Batch")


@dataclass
class _Batch:
    def to(self: _B, device: torch.device | str) -> _B:
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def equal(self, other: _Batch) -> bool:
        if type(self) is not type(other):
            return False
        return all(
            a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
            for a, b in zip(self.tensors().values(), other.tensors().values(), strict=True)
        )


@dataclass
class RequestBatch(_Batch):
    request_id: torch.Tensor  # int64 [R]
    timestamp: torch.Tensor  # int64 [R], seconds
    num_impressions: torch.Tensor  # int64 [R], k_r >= 1
    user_dense: torch.Tensor  # float32 [R, Du]
    user_sparse_lengths: torch.Tensor  # int64 [Fu, R]
    user_sparse_values: torch.Tensor  # int64 [sum]
    history_lengths: torch.Tensor  # int64 [R]
    history_item_ids: torch.Tensor  # int64 [H]
    history_actions: torch.Tensor  # int64 [H]
    history_timestamps: torch.Tensor  # int64 [H], ascending within a request
    item_id: torch.Tensor  # int64 [N], the candidate item (same id space as history items)
    item_sparse_lengths: torch.Tensor  # int64 [Fi, N]
    item_sparse_values: torch.Tensor  # int64 [sum]
    item_dense: torch.Tensor  # float32 [N, Di]
    labels: torch.Tensor  # float32 [N, T]

    @property
    def num_requests(self) -> int:
        return self.request_id.numel()

    @property
    def num_impressions_total(self) -> int:
        return self.item_id.numel()

    def impression_offsets(self) -> torch.Tensor:
        return offsets_from_lengths(self.num_impressions)

    def impression_to_request(self) -> torch.Tensor:
        """For each impression row, the index of its request (the request→impression expansion map)."""
        return row_index(self.num_impressions, self.num_impressions_total)

    def validate(self) -> None:
        r, n = self.num_requests, self.num_impressions_total
        if (self.num_impressions < 1).any():
            raise UserError("every request needs at least one impression")
        if int(self.num_impressions.sum()) != n:
            raise UserError(f"num_impressions sums to {int(self.num_impressions.sum())}, but there are {n} impressions")
        _check_rows(self, r, ("timestamp", "user_dense", "history_lengths"))
        _check_rows(self, n, ("item_id", "item_dense", "labels"))
        _check_keyed(self.user_sparse_lengths, self.user_sparse_values, r, "user_sparse")
        _check_keyed(self.item_sparse_lengths, self.item_sparse_values, n, "item_sparse")
        _check_jagged_history(self)

    def __post_init__(self) -> None:
        self._expanded: tuple[int, int] | None = None

    def to(self, device: torch.device | str) -> RequestBatch:
        out = super().to(device)
        out._expanded = self._expanded
        return out

    def set_expanded_totals(self, user_sparse_values: int, history_events: int) -> None:
        """Record the sizes of `to_impressions()`'s jagged fields, known on the host when the batch
        is made (the generators do): sum over requests of k_r x (user ids of r), and of k_r x
        (history events of r). The caller vouches for them; `to_impressions()` trusts them."""
        self._expanded = (int(user_sparse_values), int(history_events))

    def expanded_totals(self) -> tuple[int, int]:
        """(user-sparse values, history events) of the impression layout: the recorded totals, or
        computed here in one device->host read (a batch read from a file, or built by hand)."""
        if self._expanded is None:
            k = self.num_impressions
            sums = torch.stack([(self.user_sparse_lengths.sum(0) * k).sum(), (self.history_lengths * k).sum()])
            u, h = sums.tolist()
            self._expanded = (int(u), int(h))
        return self._expanded

    def to_impressions(self, backend: str = "auto") -> ImpressionBatch:
        """Expand: copy every RO feature into each of the request's impression rows.

        No device->host sync once the expanded totals are known (see `expanded_totals`): every
        output size is one of them or a tensor's shape. `backend` picks workloads.expand's
        implementation (all give identical batches)."""
        user_total, hist_total = self.expanded_totals()
        idx = self.impression_to_request()
        (usv,), usl = gather_rows([self.user_sparse_values], self.user_sparse_lengths, idx, user_total, backend)
        hist = [self.history_item_ids, self.history_actions, self.history_timestamps]
        (h_ids, h_act, h_ts), h_len = gather_rows(hist, self.history_lengths, idx, hist_total, backend)
        return ImpressionBatch(
            request_id=self.request_id[idx],
            timestamp=self.timestamp[idx],
            user_dense=self.user_dense[idx],
            user_sparse_lengths=usl,
            user_sparse_values=usv,
            history_lengths=h_len,
            history_item_ids=h_ids,
            history_actions=h_act,
            history_timestamps=h_ts,
            **_gather_nro(self, None),
        )


@dataclass
class ImpressionBatch(_Batch):
    request_id: torch.Tensor  # int64 [N], the request key
    timestamp: torch.Tensor  # int64 [N]
    user_dense: torch.Tensor  # float32 [N, Du] (copied per impression)
    user_sparse_lengths: torch.Tensor  # int64 [Fu, N]
    user_sparse_values: torch.Tensor
    history_lengths: torch.Tensor  # int64 [N]
    history_item_ids: torch.Tensor
    history_actions: torch.Tensor
    history_timestamps: torch.Tensor
    item_id: torch.Tensor  # int64 [N]
    item_sparse_lengths: torch.Tensor  # int64 [Fi, N]
    item_sparse_values: torch.Tensor
    item_dense: torch.Tensor  # float32 [N, Di]
    labels: torch.Tensor  # float32 [N, T]

    @property
    def num_impressions_total(self) -> int:
        return self.request_id.numel()

    def validate(self) -> None:
        n = self.num_impressions_total
        _check_rows(self, n, ("timestamp", "user_dense", "history_lengths", "item_id", "item_dense", "labels"))
        _check_keyed(self.user_sparse_lengths, self.user_sparse_values, n, "user_sparse")
        _check_keyed(self.item_sparse_lengths, self.item_sparse_values, n, "item_sparse")
        _check_jagged_history(self)

    def permute(self, perm: torch.Tensor) -> ImpressionBatch:
        """Rows in a new order (e.g. a training shuffle)."""
        return ImpressionBatch(**_gather_ro(self, perm), **_gather_nro(self, perm))

    def request_grouping(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(perm, first_rows, counts): `perm` orders rows by request (requests in order of first
        appearance, impressions in their original order); `first_rows` is each request's first row
        in the original order; `counts` its number of impressions."""
        rid = self.request_id
        n = rid.numel()
        uniq, inv, counts = torch.unique(rid, return_inverse=True, return_counts=True)
        pos = torch.arange(n, device=rid.device)
        first = torch.full((uniq.numel(),), n, dtype=torch.int64, device=rid.device)
        first.scatter_reduce_(0, inv, pos, reduce="amin")
        order = torch.argsort(first)  # groups by first appearance
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=rid.device)
        perm = torch.argsort(rank[inv], stable=True)
        return perm, first[order], counts[order]

    def to_requests(self, check_constant: bool = True) -> RequestBatch:
        """Group rows by request_id; RO features are taken from each request's first row.

        With check_constant, a request whose rows disagree on any RO feature is an error (the
        data is not request-level clean; `roo-bench convert --on-conflict first` handles that)."""
        perm, first, counts = self.request_grouping()
        if check_constant:
            _check_ro_constant(self, first, counts)
        return RequestBatch(
            num_impressions=counts.to(torch.int64), **_gather_ro(self, first), **_gather_nro(self, perm)
        )


def _gather_ro(b: RequestBatch | ImpressionBatch, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows `idx` of every RO field (request key, time, user features, history)."""
    usv, usl = keyed_index_select(b.user_sparse_values, b.user_sparse_lengths, idx)
    hl = b.history_lengths
    h_ids, h_len = jagged_index_select(b.history_item_ids, hl, idx)
    h_act, _ = jagged_index_select(b.history_actions, hl, idx)
    h_ts, _ = jagged_index_select(b.history_timestamps, hl, idx)
    return {
        "request_id": b.request_id[idx],
        "timestamp": b.timestamp[idx],
        "user_dense": b.user_dense[idx],
        "user_sparse_lengths": usl,
        "user_sparse_values": usv,
        "history_lengths": h_len,
        "history_item_ids": h_ids,
        "history_actions": h_act,
        "history_timestamps": h_ts,
    }


def _gather_nro(b: RequestBatch | ImpressionBatch, idx: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Impression rows `idx` of every NRO field (all rows, as they are, for idx=None)."""
    if idx is None:
        return {name: getattr(b, name) for name in NRO_FIELDS}
    isv, isl = keyed_index_select(b.item_sparse_values, b.item_sparse_lengths, idx)
    return {
        "item_id": b.item_id[idx],
        "item_sparse_lengths": isl,
        "item_sparse_values": isv,
        "item_dense": b.item_dense[idx],
        "labels": b.labels[idx],
    }


def _check_ro_constant(b: ImpressionBatch, first: torch.Tensor, counts: torch.Tensor) -> None:
    """Every row of a request must carry the RO features of the request's first row."""
    req_of_row = torch.empty_like(b.request_id)
    uniq_first_row = torch.repeat_interleave(first, counts)
    perm, _, _ = b.request_grouping()
    req_of_row[perm] = uniq_first_row  # for each row, its request's first row
    expanded = b.permute(req_of_row)
    for name in RO_FIELDS:
        if not torch.equal(getattr(expanded, name), getattr(b, name)):
            raise UserError(
                f"RO feature {name!r} differs between impressions of the same request; "
                "this is not request-level data (use roo-bench convert --on-conflict first)"
            )


def _check_rows(b: _Batch, n: int, names: tuple[str, ...]) -> None:
    for name in names:
        t = getattr(b, name)
        if t.shape[0] != n:
            raise UserError(f"{name} has {t.shape[0]} rows, expected {n}")


def _check_keyed(lengths: torch.Tensor, values: torch.Tensor, rows: int, name: str) -> None:
    if lengths.dim() != 2 or lengths.shape[1] != rows:
        raise UserError(f"{name}_lengths has shape {tuple(lengths.shape)}, expected [F, {rows}]")
    if (lengths < 0).any() or int(lengths.sum()) != values.numel():
        raise UserError(f"{name}_lengths (sum {int(lengths.sum())}) do not match {values.numel()} values")


def _check_jagged_history(b: RequestBatch | ImpressionBatch) -> None:
    total = int(b.history_lengths.sum())
    for name in ("history_item_ids", "history_actions", "history_timestamps"):
        if getattr(b, name).numel() != total:
            raise UserError(f"{name} has {getattr(b, name).numel()} values, history_lengths sum to {total}")
