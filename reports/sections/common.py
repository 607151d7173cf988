"""Reading result records the way every section does: a record's preset, sweep axes, per-layout
metrics, cost-model totals and components, storage formats, and which point speaks for a preset."""

from __future__ import annotations

from reports.format import ratio
from reports.loader import num
from workloads.layout import LAYOUTS

NOISE_LIMIT = 0.10  # IQR/median above this marks a point as noisy
STANDARD_CONFIG_KEYS = {
    "preset",
    "spec",
    "model",
    "device",
    "dtype",
    "backend",
    "warmup",
    "steps",
    "seed",
    "sweep",
    "name",
    "headline",
}
AXIS_NAMES = {
    "impressions_per_request": "impressions per request (k)",
    "k": "impressions per request (k)",
    "history_length": "history length (L)",
    "history_len": "history length (L)",
    "L": "history length (L)",
    "mean_impressions_per_request": "mean impressions per request (measured)",
}
# Aliases of a per-layout total in a model record's `totals`, first found wins.
TOTAL_ALIASES = {
    "alltoall": ("alltoall_bytes", "all_to_all_bytes", "a2a_bytes", "comm_bytes"),
    "storage": ("storage_bytes_per_impression", "bytes_per_impression"),
    "step_ms": ("predicted_step_ms", "step_ms"),
}


def preset_of(rec: dict) -> str:
    m = rec["metrics"]
    return str(
        rec["config"].get("preset") or m.get("preset") or (rec["config"].get("spec") or {}).get("name") or "(unnamed)"
    )


def sweep_axes(rec: dict) -> dict:
    """The sweep coordinates of a point: `config.axes` (harness/sweep.py labels; dict-valued labels
    flattened), else `config.sweep`, else numeric top-level config keys beyond the standard ones."""
    cfg = rec["config"]
    for key in ("axes", "sweep"):
        if isinstance(cfg.get(key), dict) and cfg[key]:
            return _flatten(cfg[key])
    return {k: v for k, v in cfg.items() if k not in STANDARD_CONFIG_KEYS and num(v) is not None}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def axis_name(axis: str) -> str:
    if axis in AXIS_NAMES:
        return AXIS_NAMES[axis]
    a = axis.lower()
    if "impressions" in a and not a.endswith(("kind", "max", "min")):
        return f"impressions per request (k; {axis})"
    if "history" in a and "length" in a and not a.endswith(("kind", "max", "min")):
        return f"history length (L; {axis})"
    return axis.replace("_", " ")


def axes_text(rec: dict) -> str:
    ax = sweep_axes(rec)
    return ", ".join(f"{k}={v}" for k, v in ax.items()) if ax else "defaults"


def axis_val(p: dict, axis: str):
    """A point's coordinate on `axis`; the measured mean k is derived from the impression layout."""
    if axis == "mean_impressions_per_request":
        lay = layouts(p).get("impression") or {}
        v = ratio(lay.get("impressions_per_step"), lay.get("requests_per_step"))
        return None if v is None else round(v, 3)
    return num(sweep_axes(p).get(axis))


def layouts(rec: dict) -> dict:
    lay = rec["metrics"].get("layouts")
    if isinstance(lay, dict):
        return {k: v for k, v in lay.items() if k in LAYOUTS and isinstance(v, dict)}
    return {k.value: rec["metrics"][k] for k in LAYOUTS if isinstance(rec["metrics"].get(k), dict)}


def step_median(lay: dict):
    s = lay.get("step_ms")
    return num(s.get("median")) if isinstance(s, dict) else num(s)


def flops(lay: dict):
    """FLOPs per step of a layout: the record's (predicted or counted) figure, else the counted one."""
    return num(lay.get("flops_per_step")) or num(lay.get("flops_counted_per_step"))


def noise(lay: dict):
    s = lay.get("step_ms")
    if not isinstance(s, dict):
        return None
    return ratio(s.get("iqr"), s.get("median"))


def world(c: dict):
    """The world size of a comm record, wherever the command put it."""
    for k in ("nproc", "world_size", "world"):
        for d in (c["config"], c["metrics"]):
            if num(d.get(k)) is not None:
                return int(num(d[k]))
    return None


def model_total(rec: dict, layout: str, key: str):
    """A per-layout total from `totals`, summed from `components` when `totals` lacks it."""
    t = (rec["metrics"].get("totals") or {}).get(layout) or {}
    if key == "flops":
        v = num(t.get("flops"))
        if v is None and (num(t.get("fwd_flops")) is not None or num(t.get("bwd_flops")) is not None):
            v = (num(t.get("fwd_flops")) or 0.0) + (num(t.get("bwd_flops")) or 0.0)
        if v is None:
            comps = [c for c in components(rec) if c["layout"] == layout]
            v = sum(c["flops"] for c in comps) if comps else None
        return v
    if key == "bytes":
        v = num(t.get("bytes"))
        if v is None:
            comps = [c for c in components(rec) if c["layout"] == layout]
            v = sum(c["bytes"] or 0.0 for c in comps) if comps else None
        return v
    for alias in TOTAL_ALIASES.get(key, (key,)):
        if num(t.get(alias)) is not None:
            return num(t.get(alias))
    return None


def components(rec: dict) -> list[dict]:
    out = []
    for c in rec["metrics"].get("components") or []:
        if not isinstance(c, dict) or c.get("layout") not in LAYOUTS:
            continue
        fwd, bwd = num(c.get("fwd_flops")) or 0.0, num(c.get("bwd_flops")) or 0.0
        out.append(
            {
                "name": str(c.get("name", "?")),
                "layout": c["layout"],
                "fwd": fwd,
                "bwd": bwd,
                "flops": fwd + bwd,
                "bytes": num(c.get("bytes")),
            }
        )
    return out


def storage_formats(rec: dict) -> list[dict]:
    out = []
    for f in rec["metrics"].get("formats") or []:
        if not isinstance(f, dict):
            continue
        layout = str(f.get("layout", ""))
        order = str(f.get("order") or "grouped")
        series = "request" if layout in ("request", "roo") else ("shuffled" if order == "shuffled" else "grouped")
        out.append(
            {
                "layout": layout,
                "order": order,
                "codec": str(f.get("codec", "none")),
                "series": series,
                "file_bytes": num(f.get("file_bytes")),
                "bytes_per_impression": num(f.get("bytes_per_impression")),
                "write_s": num(f.get("write_s")),
                "read_s": num(f.get("read_s")),
                "memory_bytes": num(f.get("memory_bytes")),
            }
        )
    return out


def pick_format(fmts: list[dict], series: str, codec: str):
    for f in fmts:
        if f["series"] == series and f["codec"] == codec:
            return f
    return None


def headline_point(points: list[dict]) -> dict:
    """The point a summary row quotes: one marked `headline`, else the one with the median measured
    speedup (neither the best nor the worst configuration of a sweep)."""
    for p in points:
        if p["config"].get("headline"):
            return p
    # a run of the preset at its own shape (no overrides) speaks for the preset better than any
    # point of a sweep over k or L
    own = [p for p in points if is_preset_shape(p)]
    pts = sorted(own or points, key=lambda p: num(p["metrics"].get("speedup")) or 0.0)
    return pts[(len(pts) - 1) // 2]


def is_preset_shape(p: dict) -> bool:
    c = p["config"]
    return not c.get("spec_overrides") and not c.get("model_overrides") and c.get("requests_per_batch") is None
