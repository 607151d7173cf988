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


def short_path(path: str, parts: int = 3) -> str:
    """The last `parts` parts of a path: enough to tell two campaigns' files apart in a label."""
    from pathlib import Path

    return "/".join(Path(path).parts[-parts:])


def preset_of(rec: dict) -> str:
    """The workload a record ran: a bench/profile/comm record's `workload`; for a point that ran a
    full spec (a spec file; its `preset` then names the model) the spec's name; else its preset."""
    cfg, m = rec["config"], rec["metrics"]
    spec = cfg.get("spec") if isinstance(cfg.get("spec"), dict) else {}
    wl = cfg.get("workload") or m.get("workload")
    if isinstance(wl, str) and wl:
        return wl
    if isinstance(wl, dict):
        return str(spec.get("name") or wl.get("name") or "(unnamed)")
    return str(cfg.get("preset") or m.get("preset") or spec.get("name") or "(unnamed)")


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
    """A layout's median step (ms): a point's `step_ms.median`, a bench record's `step_ms_median`."""
    s = lay.get("step_ms")
    if s is None:
        return num(lay.get("step_ms_median"))
    return num(s.get("median")) if isinstance(s, dict) else num(s)


def step_iqr(lay: dict):
    s = lay.get("step_ms")
    return num(s.get("iqr")) if isinstance(s, dict) else num(lay.get("step_ms_iqr"))


def flops(lay: dict):
    """FLOPs per step of a layout: the record's (predicted or counted) figure, else the counted one."""
    return num(lay.get("flops_per_step")) or num(lay.get("flops_counted_per_step"))


def noise(lay: dict):
    return ratio(step_iqr(lay), step_median(lay))


def sharding(c: dict) -> str:
    """How a comm record sharded its tables ('table-wise', 'row-wise'), wherever the command put it."""
    for d in (c["config"], c["config"].get("model"), c["metrics"]):
        if isinstance(d, dict) and d.get("sharding"):
            s = str(d["sharding"])
            return s if s.endswith("-wise") else f"{s}-wise"
    return "sharding not recorded"


def same_device(a: str | None, b: str | None) -> bool:
    """Whether two device names name the same kind of device: 'cpu' and 'cpu (x86_64)' do (the
    calibration and a point's provenance name a CPU differently), GPUs by their full name."""
    a, b = str(a or "cpu").strip().lower(), str(b or "cpu").strip().lower()
    return a == b or (a.startswith("cpu") and b.startswith("cpu"))


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


# Sweep axes that pick what runs rather than its shape: a point on such an axis alone is still the
# preset at its own shape.
NEUTRAL_AXES = {"preset", "model", "device", "dtype", "backend", "seed", "threads", "nvml", "steps", "warmup"}


def is_preset_shape(p: dict) -> bool:
    """Whether a point or bench record ran a preset at its own shape: no spec or model overrides, no
    batch size of its own, no spec file, and no sweep axis that changes the shape."""
    c, m = p["config"], p["metrics"]

    def given(key):
        return c.get(key) or m.get(key)

    if given("spec_overrides") or given("model_overrides") or given("spec_file") or isinstance(c.get("workload"), dict):
        return False
    if c.get("requests_per_batch") is not None:
        return False
    return not any(k.split(".")[0] not in NEUTRAL_AXES for k in sweep_axes(p))


def preset_runs(recs: list[dict]) -> list[dict]:
    """The successful point and bench records that ran the preset itself (is_preset_shape)."""
    return [r for r in recs if r["status"] == "ok" and r["kind"] in ("point", "bench") and is_preset_shape(r)]
