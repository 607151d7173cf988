"""A RequestBatch's sparse features as torchrec KeyedJaggedTensor inputs, in either layout.

- impression layout: a plain KJT of stride N (impressions): every key has one bag per impression,
  the user features' bags copied into each impression of their request;
- ROO layout: a variable-batch (VBE) KJT: user keys have one bag per request (R), item keys one per
  impression (N), given as `stride_per_key_per_rank` ([[R]] per user key, [[N]] per item key, one
  rank), with `inverse_indices` ([F, N]: per key, the bag each impression reads) so that torchrec's
  EmbeddingBagCollection hands back per-impression pooled embeddings.

`kjt_parts` builds the tensors with torch alone (tested without torchrec); `to_kjt` makes the
torchrec object where torchrec is installed. Keys are the spec's feature names in batch order (user
features, then item features); ids are as generated (no row cap: a torchrec table of the feature's
cardinality takes them as they are).
"""

from __future__ import annotations

from typing import Any

import torch

from workloads.batch import RequestBatch
from workloads.jagged import keyed_index_select
from workloads.layout import LAYOUTS, Layout


def kjt_parts(batch: RequestBatch, layout: str, keys: list[str]) -> dict[str, Any]:
    """The KJT of `batch` in `layout`: {"keys", "values", "lengths", "stride",
    "stride_per_key_per_rank" (ROO only), "inverse_indices" (ROO only)}; lengths are key-major."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; allowed: {', '.join(LAYOUTS)}")
    fu, r = batch.user_sparse_lengths.shape
    fi, n = batch.item_sparse_lengths.shape
    if len(keys) != fu + fi:
        raise ValueError(f"{len(keys)} keys for {fu}+{fi} sparse features")
    if layout == Layout.ROO:
        uv, ul = batch.user_sparse_values, batch.user_sparse_lengths
    else:
        uv, ul = keyed_index_select(batch.user_sparse_values, batch.user_sparse_lengths, batch.impression_to_request())
    parts: dict[str, Any] = {
        "keys": list(keys),
        "values": torch.cat([uv, batch.item_sparse_values]).to(torch.int64),
        "lengths": torch.cat([ul.reshape(-1), batch.item_sparse_lengths.reshape(-1)]).to(torch.int64),
        "stride": n,
    }
    if layout == Layout.ROO:
        parts["stride_per_key_per_rank"] = [[r]] * fu + [[n]] * fi
        inv = torch.cat([batch.impression_to_request().expand(fu, n), torch.arange(n).expand(fi, n)]).to(torch.int64)
        parts["inverse_indices"] = (list(keys), inv)
    return parts


def to_kjt(parts: dict[str, Any]):
    """A torchrec KeyedJaggedTensor of `kjt_parts`' output (needs torchrec)."""
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    kw: dict[str, Any] = {"keys": parts["keys"], "values": parts["values"], "lengths": parts["lengths"]}
    if "stride_per_key_per_rank" in parts:
        kw["stride_per_key_per_rank"] = parts["stride_per_key_per_rank"]
        kw["inverse_indices"] = parts["inverse_indices"]
    else:
        kw["stride"] = parts["stride"]
    return KeyedJaggedTensor(**kw)


__all__ = ["kjt_parts", "to_kjt"]
