"""Provenance and warnings: per result file its kinds, devices, commit, host, driver, versions, seeds
and dates; per point a warning when it failed or its step times are noisy."""

from __future__ import annotations

from collections import Counter, defaultdict

from reports.loader import SECTION_KINDS, ResultSet
from reports.sections.common import NOISE_LIMIT, axes_text, layouts, noise, preset_of


def build(rs: ResultSet, ok_points) -> dict:
    by_file = defaultdict(list)
    for r in rs.records:
        by_file[r["source"].path].append(r)
    rows = [_file_row(path, recs) for path, recs in by_file.items()]
    other = Counter(r["kind"] for r in rs.records if r["kind"] not in SECTION_KINDS)
    return {
        "rows": rows,
        "point_warnings": _point_warnings(rs),
        "loader_warnings": list(rs.warnings),
        "other_kinds": ", ".join(f"{k}×{n}" for k, n in sorted(other.items())),
    }


def _file_row(path: str, recs: list[dict]) -> dict:
    provs = [r["provenance"] for r in recs]

    def vals(key):
        v = sorted({str(p.get(key)) for p in provs if p.get(key) not in (None, "")})
        return ", ".join(v) if v else "—"

    shas = sorted(
        {f"{p.get('git_sha', '?')[:12]}{' (dirty)' if p.get('git_dirty') else ''}" for p in provs if p.get("git_sha")}
    )
    dates = sorted(str(p["created_utc"]) for p in provs if p.get("created_utc"))
    return {
        "file": path,
        "kinds": ", ".join(f"{k}×{n}" for k, n in Counter(r["kind"] for r in recs).items()),
        "devices": ", ".join(sorted({r["device_label"] for r in recs})),
        "commit": ", ".join(shas) or "—",
        "host": vals("host"),
        "driver": " / ".join(x for x in (vals("driver"), vals("cuda")) if x != "—") or "—",
        "versions": "; ".join(
            f"{k} {vals(k + '_version')}" for k in ("torch", "triton", "python") if vals(k + "_version") != "—"
        )
        or "—",
        "roo_bench": vals("roo_bench_version"),
        "seeds": vals("seed"),
        "dates": (dates[0] if dates and dates[0] == dates[-1] else f"{dates[0]} … {dates[-1]}") if dates else "—",
    }


def _point_warnings(rs: ResultSet) -> list[str]:
    """A line per failed point or comm run, and per layout whose step IQR/median exceeds NOISE_LIMIT."""
    out = []
    for p in rs.of("point"):
        where = f"{p['source'].where}: {preset_of(p)} [{axes_text(p)}] on {p['device_label']}"
        if p["status"] != "ok":
            out.append(f"{where}: FAILED ({p['status']}): {p.get('error') or 'no error message'}")
            continue
        for x, lay in layouts(p).items():
            n = noise(lay)
            if n is not None and n > NOISE_LIMIT:
                out.append(f"{where}: noisy — {x} step IQR/median = {n * 100:.0f}% > {NOISE_LIMIT * 100:.0f}%")
    for c in rs.of("comm"):
        if c["status"] != "ok":
            out.append(f"{c['source'].where}: comm {preset_of(c)} FAILED ({c['status']}): {c.get('error')}")
    return out
