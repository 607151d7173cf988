"""Host terms of a calibration from each model preset's own eager step (`calibrate --host-models`,
harness/calibration/host.py: model_host_terms): the CPU path, the short fixed history it runs on,
and on a GPU the issue time of a device-bound step."""

from __future__ import annotations

import pytest


def test_a_models_own_step_prices_its_host_per_op_on_the_cpu():
    """model_host_terms times the model's own eager step per layout and divides by its counted
    aten ops: the CPU path (no Triton launches to take out)."""
    import torch

    from harness.calibration.host import model_host_terms

    out = model_host_terms(torch, torch.device("cpu"), 1e-3, models=("tiny",))
    assert set(out) == {"tiny"} and set(out["tiny"]) == {"impression", "roo"}
    assert all(1e-7 < x < 1e-2 for x in out["tiny"].values())


def test_a_models_own_step_runs_on_a_short_fixed_history(monkeypatch):
    """The op mix is what model_host_terms measures: every request's history is MODEL_HISTORY
    events, whatever the preset's own length distribution (hstu-ranking's mean is 3,000)."""
    import torch

    import workloads.generator as gen
    from harness.calibration import host

    seen = []

    def stop(spec, *args, **kwargs):
        seen.append(spec.history.length)
        raise RuntimeError("stop")

    monkeypatch.setattr(gen, "generate", stop)
    with pytest.raises(RuntimeError, match="stop"):
        host.model_host_terms(torch, torch.device("cpu"), 1e-3, models=("hstu-ranking",))
    (length,) = seen
    assert length.mean() == host.MODEL_HISTORY and length.max == host.MODEL_HISTORY


@pytest.mark.gpu
def test_cuda_host_cost_of_a_models_own_step():
    import torch

    from harness.calibration.host import model_host_terms

    out = model_host_terms(torch, torch.device("cuda"), 2e-5, models=("early-ranking",))
    assert all(1e-7 < x < 1e-3 for x in out["early-ranking"].values())


@pytest.mark.gpu
def test_cuda_host_cost_of_a_device_bound_step_is_its_issue_time():
    """hstu-ranking's impression step at a few requests is device-bound (256 sequences through the
    attention): its host cost per op is the issue time, not the step's wall time over its ops."""
    import torch

    from harness.calibration.host import model_host_terms

    out = model_host_terms(torch, torch.device("cuda"), 2e-5, models=("hstu-ranking",))
    assert all(1e-7 < x < 2e-4 for x in out["hstu-ranking"].values())
