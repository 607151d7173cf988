"""count_flops: totals equal FlopCounterMode's, the per-module breakdown is exact (checked against
closed forms for UserArch and the padded HSTU attention) and ROO saves FLOPs when k > 1."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from roo_ref.flops import count_flops
from roo_ref.models import build_model
from workloads.generator import generate
from workloads.presets import get_preset

ARCHS = {
    "dot": ["arch=dlrm"],
    "dcn": ["arch=dlrm", "interaction=dcn"],
    "two_tower": ["arch=two_tower"],
    "hstu": ["arch=hstu"],
}


def _case(arch):
    spec = get_preset("tiny")
    rb = generate(spec, 6, seed=2)
    return spec, build_model(spec, overrides=ARCHS[arch], seed=0), rb


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("layout", ["impression", "roo"])
def test_total_matches_flop_counter_mode(arch, layout):
    _, model, rb = _case(arch)
    batch = rb if layout == "roo" else rb.to_impressions()
    res = count_flops(model, batch, layout)
    model.zero_grad(set_to_none=True)
    fc = FlopCounterMode(display=False)
    with fc:
        model(batch, layout)["loss"].backward()
    assert res["total"] == fc.get_total_flops() > 0
    assert res["total"] == res["forward"] + res["backward"] == sum(res["by_op"].values())
    top = [k for k in res["by_module"] if k and "." not in k]
    assert sum(res["by_module"][k] for k in top) == res["total"]  # nothing unattributed
    fwd_only = count_flops(model, batch, layout, backward=False)
    assert fwd_only["total"] == fwd_only["forward"] == res["forward"] and fwd_only["backward"] == 0


@pytest.mark.parametrize("layout", ["impression", "roo"])
def test_user_arch_closed_form(layout):
    spec, model, rb = _case("dot")
    batch = rb if layout == "roo" else rb.to_impressions()
    res = count_flops(model, batch, layout)
    rows = rb.num_requests if layout == "roo" else rb.num_impressions_total
    linears = [m for m in model.user_arch if isinstance(m, torch.nn.Linear)]
    fwd = sum(2 * rows * m.in_features * m.out_features for m in linears)
    assert res["by_module_forward"]["user_arch"] == fwd
    # backward: grad wrt input and wrt weight for every layer (inputs come from trainable tables)
    assert res["by_module_backward"]["user_arch"] == 2 * fwd


def test_hstu_names_and_attention_closed_form():
    spec, model, rb = _case("hstu")
    res = count_flops(model, rb, "roo")
    cfg = model.config
    for i in range(cfg.hstu_layers):
        for part in ("uvqk", "attention", "out"):
            assert res["by_module"][f"hstu.layers.{i}.{part}"] > 0
    lengths = 1 + rb.history_lengths + rb.num_impressions  # context + history + targets
    b, n = lengths.numel(), int(lengths.max())
    # padded reference: q k^T and A v, masked and padded work included
    attn = 2 * b * cfg.num_heads * n * n * (cfg.d_qk + cfg.d_v)
    assert res["by_module_forward"]["hstu.layers.0.attention"] == attn
    assert res["flops_masked_counted"] is True


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_roo_saves_flops(arch):
    _, model, rb = _case(arch)
    assert (rb.num_impressions > 1).any()
    imp = count_flops(model, rb.to_impressions(), "impression")["total"]
    roo = count_flops(model, rb, "roo")["total"]
    assert roo < imp
