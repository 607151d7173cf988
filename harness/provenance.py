"""Provenance of a measurement: which code, on which machine and software, with which seed.

Every field is best-effort: no git (a tarball install), no GPU or no NVML gives None for the
fields that need them — collecting provenance never fails a run."""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

FIELDS = (
    "git_sha",
    "git_dirty",
    "host",
    "device_name",
    "driver",
    "cuda",
    "torch_version",
    "triton_version",
    "python_version",
    "numpy_version",
    "pyarrow_version",
    "seed",
    "created_utc",
    "roo_bench_version",
    "kernel_options",
)


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


@lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(HEAD sha, dirty). Dirty = tracked files differ from HEAD; untracked files (e.g. result
    directories inside the checkout) do not count."""
    # A copy of the tree shipped to another machine (a GPU machine gets the working tree, and may
    # hold a stale .git of an earlier copy — it reported an old HEAD there): the caller says which
    # commit it shipped, ROO_BENCH_GIT_SHA=$(git rev-parse HEAD) and ROO_BENCH_GIT_DIRTY=0|1
    # (see harness/gpu_campaign.sh). When given, that wins over whatever `git` finds.
    env_sha = os.environ.get("ROO_BENCH_GIT_SHA") or None
    if env_sha is not None:
        env_dirty = os.environ.get("ROO_BENCH_GIT_DIRTY")
        return env_sha, (None if env_dirty not in ("0", "1") else env_dirty == "1")
    sha = _git("rev-parse", "HEAD")
    if sha is None:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return sha.strip(), (None if status is None else bool(status.strip()))


def _version(module: str, dist: str | None = None) -> str | None:
    """Version of an already-imported module, else of its installed distribution (importing
    triton just to read its version costs ~1 s per sweep point), else by importing it."""
    mod = sys.modules.get(module)
    if mod is not None and getattr(mod, "__version__", None):
        return str(mod.__version__)
    try:
        from importlib.metadata import version

        return version(dist or module)
    except Exception:  # noqa: BLE001
        pass
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # noqa: BLE001 — absent or broken optional packages are just None
        return None


@lru_cache(maxsize=1)
def roo_bench_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("roo-bench")
    except Exception:  # noqa: BLE001 — not installed: read the checkout's pyproject
        pass
    try:
        import tomllib

        return str(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"])
    except Exception:  # noqa: BLE001
        return None


def device_info(device: str | None) -> tuple[str | None, str | None]:
    """(device name, driver version) for a torch device string."""
    dev = str(device or "cpu")
    if dev.startswith("cuda"):
        name = None
        try:
            import torch

            if torch.cuda.is_available():
                name = torch.cuda.get_device_name(torch.device(dev))
        except Exception:  # noqa: BLE001
            pass
        driver = None
        try:
            from harness.nvml import nvml_status

            driver = nvml_status()["driver"]
        except Exception:  # noqa: BLE001
            pass
        return name, driver
    proc = platform.processor() or platform.machine()
    return f"cpu ({proc})" if proc else "cpu", None


def collect(seed: int | None = None, device: str | None = None, kernel_options=None) -> dict:
    """The provenance dict of docs/contracts.md ("Results"). kernel_options: the Triton attention
    kernel's options in force for the run (a roo_ref.kernels.options.HstuKernelOptions; None: the
    defaults, which is what a run that passes none gets): they change what a GPU record measured, so
    a record carries them."""
    sha, dirty = git_state()
    name, driver = device_info(device)
    cuda = None
    try:
        import torch

        cuda = torch.version.cuda
    except Exception:  # noqa: BLE001
        pass
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "host": socket.gethostname(),
        "device_name": name,
        "driver": driver,
        "cuda": cuda,
        "torch_version": _version("torch"),
        "triton_version": _version("triton") or _version("triton", "pytorch-triton"),
        "python_version": platform.python_version(),
        "numpy_version": _version("numpy"),
        "pyarrow_version": _version("pyarrow"),
        "seed": seed,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "roo_bench_version": roo_bench_version(),
        "kernel_options": _kernel_options_dict(kernel_options),
    }


def _kernel_options_dict(options) -> dict | None:
    try:
        from roo_ref.kernels.options import HstuKernelOptions

        return (options if options is not None else HstuKernelOptions()).to_dict()
    except Exception:  # noqa: BLE001 — collecting provenance never fails a run
        return None


def kernel_options_of(prov: dict) -> dict | None:
    """The kernel options a record ran with, as HstuKernelOptions.to_dict() gives them: the record's
    "kernel_options", or for a record that carries "kernel_env" (the ROO_HSTU_* variables set for
    its run) the options those variables give. None when the record has neither or they do not parse."""
    if prov.get("kernel_options") is not None:
        return dict(prov["kernel_options"])
    if "kernel_env" not in prov:
        return None
    try:
        from roo_ref.kernels.options import HstuKernelOptions

        return HstuKernelOptions.from_env(prov["kernel_env"] or {}).to_dict()
    except ValueError:  # a variable of a switch that is gone (e.g. ROO_HSTU_ONE_LOOP)
        return None
