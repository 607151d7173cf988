"""Provenance on a tree copied without .git (the GPU machine): the caller's commit via env vars."""

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
    monkeypatch.setattr(provenance, "_git", lambda *a: "13dae451f40fc7f40b21eacb6e1b54c87d49ccdf\n"
                        if a[0] == "rev-parse" else " M file\n")
    with_env, without = _state_with_then_without_env(monkeypatch, "d1bee469768cd5bec5336b06aa45179e03d03a78", "0")
    assert with_env == ("d1bee469768cd5bec5336b06aa45179e03d03a78", False)
    assert without == ("13dae451f40fc7f40b21eacb6e1b54c87d49ccdf", True)
