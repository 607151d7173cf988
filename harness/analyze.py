"""`roo-bench analyze`: what ROO saves on a user's own log, from the log to one report.

Stages (each streaming; memory is bounded by a few row groups and convert's sort budget, never by
the log):

1. fit (workloads.fit_log): the log converted to request level (every column a list, then the
   request-only columns of the chosen roles kept once), the roles inferred or given, conflicts
   counted, the spec fitted; the final pass writes the request-level dataset (zstd, `request/`)
   and an uncompressed copy for the storage measurement.
2. storage (workloads.log_storage): the log's own rows rewritten per codec (zstd, none), both
   layouts read back once each; the log as given read once.
3. cost: the cost model (`roo_ref.cost.model_report`) and the projection (`roo_ref.cost.project`,
   with the measured bytes) of the fitted spec for the chosen model family.
4. records and report: storage, model and project records under `records/`, the spec, the
   analyze record `analyze.json`, and `report.html` rendered from the records (reports.render).

Everything goes into a temp directory beside `--out`, renamed into place at the end: a failure
leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from roo_ref.cost import DEVICES
from workloads.errors import UserError
from workloads.roles import RoleOptions

MODEL_FAMILIES = ("early-ranking", "late-ranking", "retrieval", "hstu-ranking")
CODECS = ("none", "zstd")
DTYPES = ("bf16", "fp32")


@dataclass(frozen=True)
class AnalyzeConfig:
    log: str
    request_key: str
    out: str
    roles: RoleOptions = field(default_factory=RoleOptions)
    on_conflict: str = "error"
    model: str = "early-ranking"
    hardware: str = "h100"
    dtype: str = "bf16"
    requests_per_day: float = 1e9
    gpus: int = 8
    sort_budget_mb: int = 64
    batch_requests: int | None = None  # requests per training step priced; None: the family preset's

    def __post_init__(self) -> None:
        if self.model not in MODEL_FAMILIES:
            raise UserError(f"--model {self.model!r}; allowed: {', '.join(MODEL_FAMILIES)}")
        if self.hardware.lower() not in DEVICES:
            raise UserError(f"--hardware {self.hardware!r}; allowed: {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if not 0 < self.requests_per_day < float("inf"):
            raise UserError(f"--requests-per-day {self.requests_per_day} must be > 0")
        if self.gpus < 1:
            raise UserError(f"--gpus {self.gpus} must be >= 1")
        if self.sort_budget_mb < 1:
            raise UserError(f"--sort-budget-mb {self.sort_budget_mb} must be >= 1")
        if self.batch_requests is not None and self.batch_requests < 1:
            raise UserError(f"--batch-requests {self.batch_requests} must be >= 1")
        if self.on_conflict not in ("error", "first"):
            raise UserError(f"--on-conflict {self.on_conflict!r}; allowed: error, first")

    def to_dict(self) -> dict:
        return {
            "input": self.log,
            "request_key": self.request_key,
            "roles_options": self.roles.to_dict(),
            "on_conflict": self.on_conflict,
            "model": self.model,
            "hardware": self.hardware.lower(),
            "dtype": self.dtype,
            "requests_per_day": self.requests_per_day,
            "gpus": self.gpus,
            "batch_requests": self.batch_requests,
            "out": self.out,
        }


class Bars:
    """One tqdm bar per stage on stderr (none when stderr is not a terminal or tqdm is absent)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def __call__(self, stage: str, total: int, unit: str = "req"):
        self.close()
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm is optional on the GPU machine
            return None
        self.bar = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, disable=None if self.enabled else True)
        return self.bar.update

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _family_batch(model: str) -> int:
    """Requests per step of the workload preset of the model family: the batch the family trains on."""
    from workloads.presets import get_preset

    return get_preset(model).requests_per_batch


def analyze(cfg: AnalyzeConfig, progress: bool = True) -> dict:
    """Run every stage; returns the analyze record (a dict, also written as `analyze.json`)."""
    from workloads.parquet_io import commit_temp_dir, make_temp_dir

    out = Path(cfg.out)
    tmp = make_temp_dir(out)
    bars = Bars(progress)
    try:
        rec = _run(cfg, tmp, out, bars)
        bars.close()
        commit_temp_dir(tmp, out)
    except BaseException:
        bars.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rec


def _run(cfg: AnalyzeConfig, tmp: Path, out: Path, bars: Bars) -> dict:
    from harness.analyze_stages import cost_stage, fit_stage, storage_stage, write_outputs

    seconds: dict[str, float] = {}
    work = tmp / ".work"
    work.mkdir()
    t0 = time.perf_counter()
    fit, files = fit_stage(cfg, tmp, work, bars)
    fit.spec = dataclasses.replace(fit.spec, requests_per_batch=cfg.batch_requests or _family_batch(cfg.model))
    seconds["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    storage = storage_stage(fit, files, work, bars)
    seconds["storage"] = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    model, proj = cost_stage(cfg, fit.spec, storage)
    seconds["cost"] = time.perf_counter() - t0
    return write_outputs(cfg, fit, storage, model, proj, tmp, out, seconds)
