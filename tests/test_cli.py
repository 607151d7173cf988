"""The CLI entry point: every command module imports, and usage errors are one line, exit 2."""

import subprocess
import sys
from pathlib import Path

from harness.cli import command_modules, main

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_module_imports():
    modules, problems = command_modules()
    assert problems == []
    assert modules, "no command modules found"


def test_unknown_command_exits_2(capsys):
    try:
        main(["no-such-command"])
    except SystemExit as e:
        assert e.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and err.count("\n") == 1


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "harness", "--help"], cwd=ROOT, capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and "COMMAND" in r.stdout


def test_calibrate_cuda_without_gpu_is_a_clean_error(capsys):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["calibrate", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "roo-bench calibrate: error: calibrate: cuda requested but no CUDA device is available; use --device cpu"
    )
