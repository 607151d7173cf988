"""Shared helpers for the asv suite (numpy/scipy style): fixed seeds, small cached datasets.

Benchmarks must raise on a broken build, never return a made-up number: every helper here lets
exceptions propagate, and `require(cond, msg)` turns a failed sanity check into an error."""

from __future__ import annotations

SEED = 1234


def require(cond: bool, msg: str) -> None:
    if not cond:
        raise RuntimeError(f"benchmark sanity check failed: {msg}")


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def write_json(obj, path: str) -> None:
    """A benchmark's record, indented, at `path`; says where it went."""
    import json

    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
    print(f"wrote {path}")
