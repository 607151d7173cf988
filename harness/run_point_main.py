"""Child process of a sweep: `python -m harness.run_point_main JOB.json RECORD.json`.

JOB.json: {"point": "module:function", "config": {...}, "config_hash": str}. The function is
called with the config dict and returns a result record. Any exception becomes a record with
status "oom" (CUDA/CPU out of memory, by exception type or message) or "error" — the child knows
the exception, the parent only sees an exit status. The record is written atomically (temp file +
rename), so the parent finds either a whole record or none (then the child died: killed by a
signal, or crashed hard, and the parent records that).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path

_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "outofmemoryerror")


def resolve(point: str):
    """'pkg.module:function' -> the function."""
    mod, sep, fn = point.partition(":")
    if not sep or not mod or not fn:
        raise ValueError(f"point={point!r}: expected 'module:function'")
    return getattr(importlib.import_module(mod), fn)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except Exception:  # noqa: BLE001
        pass
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(m in text for m in _OOM_MARKERS)


def failure_record(job: dict, exc: BaseException) -> dict:
    from harness import provenance
    from harness.results import make_record

    cfg = job.get("config") or {}
    status = "oom" if is_oom(exc) else "error"
    first = (str(exc).strip().splitlines() or [""])[0]
    msg = f"{type(exc).__name__}: {first}"[:500]
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    metrics = {"traceback_tail": "".join(tb)[-4000:]}
    try:
        prov = provenance.collect(cfg.get("seed"), cfg.get("device"))
    except Exception:  # noqa: BLE001 — a broken environment must still yield a record
        prov = {}
    rec = make_record("point", cfg, metrics, status=status, error=msg, provenance=prov)
    rec["config_hash"] = job["config_hash"]
    return rec


def write_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, sort_keys=True, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m harness.run_point_main JOB.json RECORD.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    out = Path(argv[1])
    try:
        fn = resolve(job["point"])
        rec = fn(job["config"])
        from harness.results import validate_record

        problems = validate_record(rec)
        if problems:
            raise ValueError(f"point function {job['point']} returned an invalid record: " + "; ".join(problems))
        rec["config_hash"] = job["config_hash"]  # the sweep's key is authoritative
        # The point's own config is the input plus resolved parts; keep the sweep axes visible.
        if isinstance(rec.get("config"), dict) and "axes" in job["config"]:
            rec["config"].setdefault("axes", job["config"]["axes"])
    except BaseException as e:  # noqa: BLE001 — every failure becomes a record (KeyboardInterrupt too)
        if isinstance(e, KeyboardInterrupt):
            raise
        rec = failure_record(job, e)
        print(rec["metrics"]["traceback_tail"], file=sys.stderr)
    write_atomic(out, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
