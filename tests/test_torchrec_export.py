"""roo_ref.torchrec_export: the KJT tensors checked against the batch (no torchrec needed), and the
torchrec objects where torchrec imports."""

from __future__ import annotations

import random

import pytest
import torch

from roo_ref.torchrec_export import kjt_parts, to_kjt
from workloads.generator import generate
from workloads.presets import get_preset


def _batch(seed: int):
    spec = get_preset(random.Random(seed).choice(["tiny", "early-ranking"]))
    keys = [n for n, _ in spec.user_features()] + [n for n, _ in spec.item_features()]
    return generate(spec, random.Random(seed).randint(3, 12), seed=seed), keys


def _bags(parts: dict, n_rows: list[int]) -> list[list[torch.Tensor]]:
    """Per key, its bags' ids."""
    lengths, values = parts["lengths"], parts["values"]
    out, pos, v = [], 0, 0
    for rows in n_rows:
        key = []
        for length in lengths[pos : pos + rows].tolist():
            key.append(values[v : v + length])
            v += length
        pos += rows
        out.append(key)
    assert pos == lengths.numel() and v == values.numel()
    return out


@pytest.mark.parametrize("seed", range(4))
def test_roo_vbe_expands_to_the_impression_kjt(seed):
    batch, keys = _batch(seed)
    fu, r = batch.user_sparse_lengths.shape
    fi, n = batch.item_sparse_lengths.shape
    imp, roo = kjt_parts(batch, "impression", keys), kjt_parts(batch, "roo", keys)
    assert imp["stride"] == roo["stride"] == n and "stride_per_key_per_rank" not in imp
    assert roo["stride_per_key_per_rank"] == [[r]] * fu + [[n]] * fi
    # the ROO KJT holds every user id once per request; the impression KJT k times
    k = batch.num_impressions
    assert roo["values"].numel() == batch.user_sparse_values.numel() + batch.item_sparse_values.numel()
    assert imp["values"].numel() == int((batch.user_sparse_lengths.sum(0) * k).sum()) + batch.item_sparse_values.numel()
    roo_bags = _bags(roo, [r] * fu + [n] * fi)
    imp_bags = _bags(imp, [n] * (fu + fi))
    inv_keys, inv = roo["inverse_indices"]
    assert inv_keys == keys and inv.shape == (fu + fi, n)
    for f in range(fu + fi):  # impression j of key f reads ROO bag inv[f, j]: the same ids
        for j in range(n):
            assert torch.equal(roo_bags[f][int(inv[f, j])], imp_bags[f][j])


def test_torchrec_kjt_where_installed():
    pytest.importorskip("torchrec")
    batch, keys = _batch(1)
    fu, r = batch.user_sparse_lengths.shape
    for lay in ("impression", "roo"):
        parts = kjt_parts(batch, lay, keys)
        kjt = to_kjt(parts)
        assert kjt.keys() == keys and torch.equal(kjt.lengths(), parts["lengths"])
        assert torch.equal(kjt.values(), parts["values"])
        if lay == "roo":
            assert kjt.variable_stride_per_key() and kjt.stride_per_key()[0] == r
