"""Provenance on a tree copied without .git (the GPU machine): the caller's commit via env vars."""

from harness import provenance


def test_git_state_falls_back_to_env_without_git(monkeypatch):
    monkeypatch.setattr(provenance, "_git", lambda *a: None)
    provenance.git_state.cache_clear()
    monkeypatch.setenv("ROO_BENCH_GIT_SHA", "0123456789abcdef")
    monkeypatch.setenv("ROO_BENCH_GIT_DIRTY", "1")
    try:
        assert provenance.git_state() == ("0123456789abcdef", True)
        provenance.git_state.cache_clear()
        monkeypatch.delenv("ROO_BENCH_GIT_SHA")
        monkeypatch.delenv("ROO_BENCH_GIT_DIRTY")
        assert provenance.git_state() == (None, None)
    finally:
        provenance.git_state.cache_clear()
