"""The time model's CUDA-graph terms: a replay copies its prepared batch into the graph's static
buffers, priced from the step's looked-up ids, history events and impressions."""

from __future__ import annotations

from roo_ref.cost.stats import expected_stats
from roo_ref.cost.step import layout_components
from roo_ref.cost.time_model import INPUT_BYTES_PER_ID, graph_input_bytes
from roo_ref.model_presets import get_model_config
from workloads.presets import get_preset


def test_graph_input_bytes_follow_the_looked_up_ids():
    """A replay's input copy grows with the step's looked-up ids: the impression layout's k-fold
    history copies make its prepared batch several times ROO's."""
    spec, cfg = get_preset("early-ranking"), get_model_config("early-ranking")
    st = expected_stats(spec, cfg, 256.0)
    by = {}
    for lay in ("impression", "roo"):
        rows = layout_components(spec, cfg, st, lay, "bf16")
        ids = sum(float(n) for c in rows for n, _ in c.lookups)
        by[lay] = graph_input_bytes(rows, st, lay, cfg)
        assert by[lay] >= INPUT_BYTES_PER_ID * ids
    assert by["impression"] > 3 * by["roo"]
