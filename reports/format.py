"""Number formatting for the report: every cell is a preformatted string, "—" where a value is missing."""

from __future__ import annotations

from reports.loader import num

MISSING = "—"


def si(v, unit: str = "", digits: int = 3) -> str:
    v = num(v)
    if v is None:
        return MISSING
    for p, f in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.{digits}g} {p}{unit}".rstrip()
    return f"{v:.{digits}g} {unit}".rstrip()


def fx(v) -> str:
    v = num(v)
    return MISSING if v is None else f"{v:.2f}×"


def pct(v, signed: bool = True) -> str:
    v = num(v)
    if v is None:
        return MISSING
    return f"{v * 100:+.1f}%" if signed else f"{v * 100:.1f}%"


def ms(v) -> str:
    v = num(v)
    return MISSING if v is None else f"{v:.4g} ms"


def secs(v) -> str:
    v = num(v)
    return MISSING if v is None else f"{v:.3g} s"


def ci_text(m: dict) -> str:
    """A record's speedup 95% CI as "[lo, hi]"."""
    ci = m.get("speedup_ci")
    if isinstance(ci, list) and len(ci) == 2 and num(ci[0]) is not None and num(ci[1]) is not None:
        return f"[{num(ci[0]):.2f}, {num(ci[1]):.2f}]"
    return MISSING


def ratio(a, b):
    """a / b, or None where either is missing or b is zero."""
    a, b = num(a), num(b)
    return a / b if a is not None and b not in (None, 0.0) else None


def rel_error(meas, pred):
    """meas / pred - 1: how far a measurement lies from its prediction."""
    r = ratio(meas, pred)
    return None if r is None else r - 1


def pct01(v):
    """NVML utilization comes as 0–100; show it as a percentage either way."""
    v = num(v)
    return None if v is None else (v / 100 if v > 1.0 else v)
