"""The two-level alpha-beta projection of the embedding all-to-all (roo_ref.cost.comm_project) and
`roo-bench comm-project`."""

from __future__ import annotations

import json
import random

import pytest

from harness.cli import main
from roo_ref.cost import comm as cc
from roo_ref.cost.comm_project import WORLD_SIZES, Topology, collective_time_s, project, split_bytes
from workloads.errors import UserError
from workloads.presets import get_preset


def _topo(rng: random.Random) -> Topology:
    """A random topology whose network is slower than NVLink (as on every real cluster)."""
    nvl = rng.uniform(100e9, 900e9)
    return Topology(rng.choice([2, 4, 8]), nvl, rng.uniform(10e9, 0.5 * nvl), rng.uniform(1e-6, 3e-5), 4e-5)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("sharding", cc.SHARDINGS)
def test_monotonic_in_w_and_roo_never_slower(seed, sharding):
    rng = random.Random(seed)
    topo = _topo(rng)
    preset = rng.choice(["early-ranking", "tiny"])
    rows = project(get_preset(preset), topo, WORLD_SIZES, rng.uniform(16, 512), sharding, rng.choice([16, 64, 128]))
    assert [r["world_size"] for r in rows] == list(WORLD_SIZES)
    for lay in cc.LAYOUTS:
        t = [r["layouts"][lay]["comm_ms"] for r in rows]
        assert all(a <= b for a, b in zip(t, t[1:], strict=False)), (lay, t)
    for r in rows:
        imp, roo = r["layouts"]["impression"], r["layouts"]["roo"]
        assert roo["comm_ms"] <= imp["comm_ms"] and roo["cross_bytes_per_step"] < imp["cross_bytes_per_step"]
        assert 0 < r["saving_comm_ms"] <= r["saving_bytes"] < 1  # latency takes a share of the saving


def test_two_level_switch_at_gpus_per_node():
    rng = random.Random(7)
    for _ in range(5):
        topo = _topo(rng)
        g = topo.gpus_per_node
        x = rng.uniform(1e6, 1e9)
        for w in (2, g, g + 1, 4 * g):
            if w < 2:
                continue
            intra, inter = split_bytes(x, w, g)
            assert intra + inter == pytest.approx(x)
            assert (inter == 0) == (w <= g)  # only past one node does anything cross the network
        b = cc.expected_a2a_bytes(get_preset("tiny"), "impression", g + 1, 64.0)
        t_in = collective_time_s(b, g, topo) if g > 1 else 0.0
        t_out = collective_time_s(b, g + 1, topo)
        intra, inter = split_bytes(b.cross_total / (g + 1), g + 1, g)
        assert t_out == pytest.approx(4 * topo.network_latency_s + max(intra / topo.nvlink_bw, inter / topo.network_bw))
        assert t_out > t_in


def test_one_node_is_nvlink_bound_formula():
    topo = Topology(8, 200e9, 25e9, 1e-5, 2e-5)
    b = cc.expected_a2a_bytes(get_preset("early-ranking"), "roo", 4, 100.0, "row", 32)
    assert collective_time_s(b, 4, topo) == pytest.approx(4e-5 + b.cross_total / 4 / 200e9)
    assert collective_time_s(b, 1, topo) == 0.0


@pytest.mark.parametrize(
    ("kw", "msg"),
    [({"gpus_per_node": 0}, "--gpus-per-node=0"), ({"network_bw": 0.0}, "--network-gbps=0 must be > 0")],
)
def test_bad_topology(kw, msg):
    with pytest.raises(UserError, match=msg):
        Topology(**kw)


def test_cli_json(capsys):
    assert main(["comm-project", "--preset", "tiny", "--world-sizes", "2,8,16", "--gpus-per-node", "8", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["kind"] == "comm" and rec["metrics"]["projection"] is True
    assert rec["metrics"]["topology"]["gpus_per_node"] == 8
    rows = rec["metrics"]["rows"]
    assert [r["world_size"] for r in rows] == [2, 8, 16]
    assert rows[0]["layouts"]["roo"]["inter_node_bytes_per_rank"] == 0
    assert rows[2]["layouts"]["roo"]["inter_node_bytes_per_rank"] > 0


def test_cli_bad_world_sizes(capsys):
    assert main(["comm-project", "--world-sizes", "2,x"]) == 2
    assert capsys.readouterr().err.startswith("roo-bench comm-project: error: --world-sizes='2,x'")
