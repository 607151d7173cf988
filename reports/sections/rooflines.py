"""Rooflines: each successful point's layouts placed by arithmetic intensity and achieved TFLOP/s,
under the roofs of its device measured in the same campaign, else the datasheet's.

A point's bytes per step are the record's own (the cost model at the point's shape, `cost`), else
the cost-model record of its preset when the point ran the preset's own shape; a layout that has
neither is not placed, and the note under the chart counts it per preset, with the reason.

The roofs of a point come from a calibration record of the same device and the same campaign: the
calibration file's folder holds the point's file (or an enclosing folder does), or both records
carry the provenance of one session (host and commit, within a day). Of several, one of the same
session wins, then the nearest folder, then the newest. A calibration in a folder marked
superseded is never used. Points whose campaign has no calibration get the datasheet's roofs, and
their own chart says so.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter, defaultdict
from pathlib import Path

from reports import plots
from reports.format import ratio
from reports.loader import ResultSet, num
from reports.sections.common import (
    flops,
    is_preset_shape,
    layouts,
    model_total,
    preset_of,
    same_device,
    short_path,
    step_median,
)
from roo_ref.hardware import DEVICES, guess_device_key

SUPERSEDED_MARK = "SUPERSEDED.md"  # a folder of results re-measured since (see reports/data/)
SESSION_S = 24 * 3600.0


def build(rs: ResultSet, ok_points) -> list[dict]:
    models = {preset_of(m): m for m in rs.of("model")}
    calibs = [c for c in rs.of("calibration") if num(c["metrics"].get("copy_bandwidth")) and not _superseded(c)]
    groups: dict = defaultdict(list)
    for p in ok_points:
        cal, why = campaign_calibration(p, calibs)
        groups[(p["device_label"], cal["source"].where if cal else "")].append((p, cal, why))
    out, unplaced = [], []
    for (label, _), items in sorted(groups.items()):
        pts = [p for p, _, _ in items]
        cal, why = items[0][1], items[0][2]
        dev_name = pts[0]["provenance"].get("device_name") or "cpu"
        placed, from_model, masked, dropped = _placements(pts, models)
        if not placed:
            unplaced.append(f"{label} ({_dropped_text(dropped)})")
            continue
        dtypes = sorted({str(p["config"].get("dtype", "fp32")) for p in pts})
        roofs = [r for r in (roofs_for(cal, dev_name, d) for d in dtypes) if r]
        title = f"Roofline — {label} (roofs: {short_path(cal['source'].path) if cal else 'datasheet'})"
        out.append(
            {
                "title": title,
                "svg": plots.roofline_chart(placed, roofs, title),
                "note": _note(from_model, masked, roofs, dev_name, cal, why, dropped),
            }
        )
    if unplaced:
        out.append(
            {
                "title": "Roofline",
                "svg": "",
                "note": "Not placed on a roofline: " + "; ".join(unplaced) + ".",
            }
        )
    return out


# --- which calibration ----------------------------------------------------------------------------
def _superseded(rec: dict) -> bool:
    d = Path(rec["source"].path).resolve().parent
    return any((x / SUPERSEDED_MARK).is_file() for x in (d, *d.parents))


def _when(prov: dict) -> _dt.datetime | None:
    try:
        t = _dt.datetime.fromisoformat(str(prov.get("created_utc")))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.UTC)


def same_session(a: dict, b: dict) -> bool:
    """Two provenance dicts of one session: the same host and commit, created within a day."""
    if not (a.get("host") and a.get("git_sha")) or (a.get("host"), a.get("git_sha")) != (
        b.get("host"),
        b.get("git_sha"),
    ):
        return False
    ta, tb = _when(a), _when(b)
    return ta is None or tb is None or abs((ta - tb).total_seconds()) <= SESSION_S


def campaign_calibration(p: dict, calibs: list[dict]) -> tuple[dict | None, str]:
    """The calibration of `p`'s device in `p`'s campaign (see the module doc) and how it matched;
    (None, "") when the campaign has none."""
    dev = p["provenance"].get("device_name") or "cpu"
    pdir = Path(p["source"].path).resolve().parent
    best, best_key, best_why = None, None, ""
    for c in calibs:
        if not same_device(c["metrics"].get("device_name"), dev):
            continue
        cdir = Path(c["source"].path).resolve().parent
        folder = cdir == pdir or cdir in pdir.parents
        session = same_session(p["provenance"], c["provenance"])
        if not folder and not session:
            continue
        key = (session, len(cdir.parts) if folder else 0, str(c["provenance"].get("created_utc") or ""))
        if best_key is None or key > best_key:
            best, best_key = c, key
            best_why = "the same session: host and commit" if session else "its folder holds the results"
    return best, best_why


def roofs_for(cal: dict | None, device_name: str, dtype: str) -> dict | None:
    """The roofs at `dtype`: the calibration's measured matmul rate (where it ran in a matching dtype
    class, else its spec's peak) and copy bandwidth, else the datasheet's (none for a CPU)."""
    if cal is not None:
        m = cal["metrics"]
        spec = m.get("spec") or {}
        peak = num(spec.get("bf16_flops" if dtype in ("bf16", "fp16") else "fp32_flops"))
        md = str(m.get("matmul_dtype", ""))
        if (dtype in ("bf16", "fp16")) == ("bfloat16" in md or "float16" in md) and num(m.get("matmul_flops")):
            peak = num(m.get("matmul_flops"))
        if peak:
            return {
                "peak_tflops": peak / 1e12,
                "bandwidth_tbs": num(m["copy_bandwidth"]) / 1e12,
                "label": f"calibrated {dtype}",
            }
    key = guess_device_key(device_name)
    # The table's CPU entry is a nominal figure for the cost model, not a roof worth drawing: a
    # device the table does not name (a CPU among them) gets no roofs.
    if key == "cpu":
        return None
    spec = DEVICES[key]
    return {
        "peak_tflops": spec.peak_flops(dtype) / 1e12,
        "bandwidth_tbs": spec.bandwidth / 1e12,
        "label": f"datasheet {dtype}",
    }


# --- placing points -------------------------------------------------------------------------------
def _bytes_per_step(lay: dict):
    cost = lay.get("cost") if isinstance(lay.get("cost"), dict) else {}
    return num(lay.get("bytes_per_step")) or num(lay.get("predicted_bytes_per_step")) or num(cost.get("bytes_per_step"))


def _placements(pts: list[dict], models: dict) -> tuple[list[dict], int, set, Counter]:
    """(placed points, how many took their intensity from a cost-model record, masked-work flags
    seen, {(preset, reason): layouts not placed})."""
    placed, from_model, masked, dropped = [], 0, set(), Counter()
    for p in pts:
        name, own_shape = preset_of(p), is_preset_shape(p)
        for lay_name, lay in layouts(p).items():
            fl = flops(lay)
            tf = num(lay.get("achieved_tflops")) or num(lay.get("achieved_tflops_counted"))
            if tf is None and fl and step_median(lay):
                tf = fl / (step_median(lay) / 1e3) / 1e12
            intensity = ratio(fl, _bytes_per_step(lay))
            if intensity is None and own_shape and name in models:
                mr = models[name]
                intensity = ratio(model_total(mr, lay_name, "flops"), model_total(mr, lay_name, "bytes"))
                from_model += intensity is not None
            if intensity and tf:
                placed.append({"label": name, "layout": lay_name, "intensity": intensity, "tflops": tf})
                masked.add(bool(lay.get("flops_masked_counted")))
            elif not tf:
                dropped[(name, "no FLOPs per step")] += 1
            elif name in models:
                dropped[(name, "no bytes per step, and its cost-model record is of the preset's own shape")] += 1
            else:
                dropped[(name, "no bytes per step and no cost-model record of its preset")] += 1
    return placed, from_model, masked, dropped


def _dropped_text(dropped: Counter) -> str:
    return "; ".join(f"{name}: {n} layout(s), {why}" for (name, why), n in sorted(dropped.items()))


def _note(from_model: int, masked: set, roofs: list[dict], dev_name: str, cal, why: str, dropped: Counter) -> str:
    note = []
    if cal is not None:
        note.append(f"roofs: the calibration {cal['source'].where} ({why})")
    elif roofs:
        note.append("roofs: the datasheet's (no calibration of this campaign among the inputs)")
    else:
        note.append(f"no calibration of this campaign and no datasheet entry for {dev_name!r}: roofs not drawn")
    if from_model:
        note.append(
            f"{from_model} placement(s) take their intensity from the cost-model record of their preset "
            "(the point ran the preset's shape but its record has no bytes per step)"
        )
    note.append(
        "achieved TFLOP/s "
        + (
            "count masked (causal/target) work"
            if masked == {True}
            else "exclude masked (causal/target) work"
            if masked == {False}
            else "mix points with and without masked work counted"
        )
    )
    if dropped:
        note.append("not placed: " + _dropped_text(dropped))
    return "; ".join(note) + "."
