"""Rooflines: each successful point's layouts placed by arithmetic intensity and achieved TFLOP/s,
under the device's roofs (a calibration record's, else the datasheet's)."""

from __future__ import annotations

from collections import defaultdict

from reports import plots
from reports.format import ratio
from reports.loader import ResultSet, num
from reports.sections.common import flops, layouts, model_total, preset_of, step_median
from roo_ref.hardware import DEVICES, guess_device_key


def build(rs: ResultSet, ok_points) -> list[dict]:
    models = {preset_of(m): m for m in rs.of("model")}
    by_dev = defaultdict(list)
    for p in ok_points:
        by_dev[(p["device_label"], p["provenance"].get("device_name") or "cpu")].append(p)
    out, unplaced = [], []
    for (label, dev_name), pts in sorted(by_dev.items()):
        placed, from_model, masked = _placements(pts, models)
        if not placed:
            unplaced.append(label)
            continue
        dtypes = sorted({str(p["config"].get("dtype", "fp32")) for p in pts})
        roofs = [r for r in (roofs_for(rs, dev_name, d) for d in dtypes) if r]
        out.append(
            {
                "title": f"Roofline — {label}",
                "svg": plots.roofline_chart(placed, roofs, f"Roofline — {label}"),
                "note": _note(from_model, masked, roofs, dev_name),
            }
        )
    if unplaced:
        out.append(
            {
                "title": "Roofline",
                "svg": "",
                "note": "Not placed on a roofline: "
                + ", ".join(unplaced)
                + " — their records carry no bytes_per_step and no cost-model record of their preset was "
                "given, so arithmetic intensity is unknown.",
            }
        )
    return out


def _placements(pts: list[dict], models: dict) -> tuple[list[dict], int, set]:
    """(placed points, how many took their intensity from the cost model, masked-work flags seen)."""
    placed, from_model, masked = [], 0, set()
    for p in pts:
        for lay_name, lay in layouts(p).items():
            fl = flops(lay)
            tf = num(lay.get("achieved_tflops")) or num(lay.get("achieved_tflops_counted"))
            if tf is None and fl and step_median(lay):
                tf = fl / (step_median(lay) / 1e3) / 1e12
            by = num(lay.get("bytes_per_step")) or num(lay.get("predicted_bytes_per_step"))
            intensity = ratio(fl, by)
            if intensity is None and preset_of(p) in models:
                mr = models[preset_of(p)]
                intensity = ratio(model_total(mr, lay_name, "flops"), model_total(mr, lay_name, "bytes"))
                from_model += intensity is not None
            if intensity and tf:
                placed.append({"label": preset_of(p), "layout": lay_name, "intensity": intensity, "tflops": tf})
                masked.add(bool(lay.get("flops_masked_counted")))
    return placed, from_model, masked


def _note(from_model: int, masked: set, roofs: list[dict], dev_name: str) -> str:
    note = []
    if from_model:
        note.append(
            f"{from_model} placement(s) take their bytes from the cost model at the preset defaults "
            "(the point record has no bytes_per_step)"
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
    if not roofs:
        note.append(f"no calibration record or datasheet entry for {dev_name!r}: roofs not drawn")
    return "; ".join(note) + "."


def roofs_for(rs: ResultSet, device_name: str, dtype: str) -> dict | None:
    """The roofs of `device_name` at `dtype`: a calibration record's measured matmul rate (where it
    ran in a matching dtype class, else its spec's peak) and copy bandwidth, else the datasheet's."""
    for c in rs.of("calibration"):
        m = c["metrics"]
        if str(m.get("device_name", "")).lower() == device_name.lower() and num(m.get("copy_bandwidth")):
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
