"""Provenance on a tree copied without .git (the GPU machine): the caller's commit via env vars."""

import pytest

from harness import provenance


def _state_with_then_without_env(monkeypatch, sha: str, dirty: str):
    """git_state() with ROO_BENCH_GIT_SHA/DIRTY set, then with them unset (fresh cache each time)."""
    provenance.git_state.cache_clear()
    monkeypatch.setenv("ROO_BENCH_GIT_SHA", sha)
    monkeypatch.setenv("ROO_BENCH_GIT_DIRTY", dirty)
    try:
        with_env = provenance.git_state()
        provenance.git_state.cache_clear()
        monkeypatch.delenv("ROO_BENCH_GIT_SHA")
        monkeypatch.delenv("ROO_BENCH_GIT_DIRTY")
        return with_env, provenance.git_state()
    finally:
        provenance.git_state.cache_clear()


def test_git_state_falls_back_to_env_without_git(monkeypatch):
    monkeypatch.setattr(provenance, "_git", lambda *a: None)
    with_env, without = _state_with_then_without_env(monkeypatch, "0123456789abcdef", "1")
    assert with_env == ("0123456789abcdef", True)
    assert without == (None, None)


def test_env_commit_wins_over_a_stale_git(monkeypatch):
    # the GPU machine held an old .git: `git rev-parse HEAD` answered a commit that was not shipped
    monkeypatch.setattr(
        provenance,
        "_git",
        lambda *a: "13dae451f40fc7f40b21eacb6e1b54c87d49ccdf\n" if a[0] == "rev-parse" else " M file\n",
    )
    with_env, without = _state_with_then_without_env(monkeypatch, "d1bee469768cd5bec5336b06aa45179e03d03a78", "0")
    assert with_env == ("d1bee469768cd5bec5336b06aa45179e03d03a78", False)
    assert without == ("13dae451f40fc7f40b21eacb6e1b54c87d49ccdf", True)


def test_kernel_options_in_force_are_recorded():
    """A record carries the Triton kernel's options in force: the caller's, else the defaults (what a
    run that passes none gets), never the environment's unparsed variables."""
    from roo_ref.kernels.options import HstuKernelOptions

    default = provenance.collect(seed=1, device="cpu")["kernel_options"]
    assert default == HstuKernelOptions().to_dict() and default["dq_mode"] == "auto"
    options = HstuKernelOptions(dq_mode="kernel", fwd_config=(64, 32, 4, 3))
    recorded = provenance.collect(seed=1, device="cpu", kernel_options=options)["kernel_options"]
    assert recorded["dq_mode"] == "kernel" and recorded["fwd_config"] == [64, 32, 4, 3]
    assert HstuKernelOptions.from_dict(recorded) == options


def test_old_records_kernel_env_still_read():
    """Records written before kernel_options carry kernel_env (the ROO_HSTU_* variables of the run)."""
    from roo_ref.kernels.options import HstuKernelOptions

    new = {"kernel_options": HstuKernelOptions(time_grad="atomic").to_dict()}
    assert provenance.kernel_options_of(new)["time_grad"] == "atomic"
    old = {"kernel_env": {"ROO_HSTU_TIME_GRAD": "atomic", "ROO_HSTU_BWD_CONFIG": "32,128,8,2"}}
    assert (
        provenance.kernel_options_of(old) == HstuKernelOptions(time_grad="atomic", bwd_config=(32, 128, 8, 2)).to_dict()
    )
    assert provenance.kernel_options_of({"kernel_env": {}}) == HstuKernelOptions().to_dict()
    assert provenance.kernel_options_of({"kernel_env": {"ROO_HSTU_ONE_LOOP": "0"}}) is None  # a switch that is gone
    assert provenance.kernel_options_of({}) is None


def test_harness_reads_kernel_options_once_and_hands_them_to_the_model(monkeypatch):
    """ROO_HSTU_* are parsed in the harness into one options object; build_model gives it to every
    HSTU attention module; a bad value is one UserError line."""
    from harness.measure import kernel_options_from_env
    from roo_ref.models import build_model
    from roo_ref.models.hstu import HSTUAttention
    from workloads.errors import UserError
    from workloads.presets import resolve_spec

    opts = kernel_options_from_env({"ROO_HSTU_TIME_GRAD": "atomic", "ROO_HSTU_DQ": "kernel"})
    assert (opts.time_grad, opts.dq_mode) == ("atomic", "kernel")
    spec = resolve_spec("tiny", None, [])
    model = build_model(spec, "tiny", ["arch=hstu"], kernel_options=opts)
    attn = [m for m in model.modules() if isinstance(m, HSTUAttention)]
    assert attn and all(m.kernel_options is opts for m in attn)
    assert all(
        m.kernel_options is None
        for m in build_model(spec, "tiny", ["arch=hstu"]).modules()
        if isinstance(m, HSTUAttention)
    )
    with pytest.raises(UserError, match="ROO_HSTU_TIME_GRAD"):
        kernel_options_from_env({"ROO_HSTU_TIME_GRAD": "fast"})
    monkeypatch.setenv("ROO_HSTU_DQ", "atomic")
    assert kernel_options_from_env().dq_mode == "atomic"
