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


def test_env_commit_wins_over_a_stale_git(monkeypatch):
    # the GPU machine held an old .git: `git rev-parse HEAD` answered a commit that was not shipped
    monkeypatch.setattr(provenance, "_git", lambda *a: "13dae451f40fc7f40b21eacb6e1b54c87d49ccdf\n"
                        if a[0] == "rev-parse" else " M file\n")
    provenance.git_state.cache_clear()
    monkeypatch.setenv("ROO_BENCH_GIT_SHA", "d1bee469768cd5bec5336b06aa45179e03d03a78")
    monkeypatch.setenv("ROO_BENCH_GIT_DIRTY", "0")
    try:
        assert provenance.git_state() == ("d1bee469768cd5bec5336b06aa45179e03d03a78", False)
        provenance.git_state.cache_clear()
        monkeypatch.delenv("ROO_BENCH_GIT_SHA")
        monkeypatch.delenv("ROO_BENCH_GIT_DIRTY")
        assert provenance.git_state() == ("13dae451f40fc7f40b21eacb6e1b54c87d49ccdf", True)
    finally:
        provenance.git_state.cache_clear()
