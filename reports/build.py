"""Turn a ResultSet into the report's context: one dict per section (preformatted strings + inline
SVG), built by reports.sections.<id>, plus the header's counts, devices and notes.

Every section is always present; one with no data carries an `empty` sentence saying what is missing
and which command produces it, rather than disappearing.
"""

from __future__ import annotations

from collections import Counter

from reports.loader import ResultSet
from reports.sections import communication, compute, energy, provenance, storage, summary, sweeps

SECTIONS = [
    ("summary", "Summary: ROO vs impression-level, predicted and measured"),
    ("storage", "Storage: layout × row order × codec"),
    ("compute", "Compute: cost per model component"),
    ("sweeps", "Sweeps: speedup vs impressions per request and history length"),
    ("communication", "Communication: embedding all-to-all per step"),
    ("energy", "Energy and utilization (NVML)"),
    ("provenance", "Provenance and warnings"),
]
BUILDERS = {
    "summary": summary.build,
    "storage": storage.build,
    "compute": compute.build,
    "sweeps": sweeps.build,
    "communication": communication.build,
    "energy": energy.build,
    "provenance": provenance.build,
}


def build_context(rs: ResultSet, title: str, extra_notes: list[str] | None = None) -> dict:
    ok_points = [p for p in rs.of("point") if p["status"] == "ok"]
    ctx = {
        "title": title,
        "sections": [],
        "warnings": list(rs.warnings),
        "files": rs.files,
        "n_records": len(rs.records),
        "kinds": dict(Counter(r["kind"] for r in rs.records)),
    }
    ctx["demo_notes"] = _demo_notes(rs) + list(extra_notes or [])
    measured = ("point", "bench", "profile", "comm", "calibration")
    ctx["devices"] = sorted({r["device_label"] for r in rs.records if r["kind"] in measured})
    for sid, heading in SECTIONS:
        sec = {"id": sid, "title": heading, "empty": None}
        sec.update(BUILDERS[sid](rs, ok_points))
        ctx["sections"].append(sec)
    # Provenance-derived warnings go into the header count too.
    ctx["n_warnings"] = len(ctx["warnings"]) + len(ctx["sections"][-1]["point_warnings"])
    return ctx


def _demo_notes(rs: ResultSet) -> list[str]:
    """A line per demo stage that did not run cleanly, so the report says what is missing and why."""
    notes = []
    for d in rs.of("demo"):
        for s in d["metrics"].get("stages", []):
            if isinstance(s, dict) and s.get("status") != "ok":
                notes.append(f"demo stage {s.get('stage')}: {s.get('status')} — {s.get('reason')}")
    return notes
