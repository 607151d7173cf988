"""A workload spec fitted by `roo-bench fit` to a small generated log, for the tests that run a
fitted spec through bench, profile, comm and a sweep point."""

from __future__ import annotations

import tomllib
from pathlib import Path

from harness.cli import main


def fitted_spec(tmp_path: Path, requests: int = 120, seed: int = 7) -> Path:
    """Generate `requests` requests of the tiny preset (impression layout), fit a spec to them with
    `roo-bench fit` and return the spec file. Its workload is named `fitted` (no model preset has
    that name) and its batch is not the tiny preset's, so a run of it shows it ran the file."""
    log = tmp_path / "log"
    argv = ["generate", "--preset", "tiny", "--requests", str(requests), "--seed", str(seed)]
    assert main([*argv, "--layout", "impression", "--out", str(log)]) == 0
    out = tmp_path / "fitted.toml"
    assert main(["fit", str(log / "impression"), "--request-key", "request_id", "--out", str(out)]) == 0
    spec = tomllib.loads(out.read_text())
    assert spec["name"] == "fitted" and spec["requests_per_batch"] != 16  # tiny's batch is 16
    return out
