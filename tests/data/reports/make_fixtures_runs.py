"""The report fixtures of single runs and campaigns (written by make_fixtures.py's main):
- project.json: a bare `roo-bench project --json` output;
- data/h100/presets.jsonl: runs of presets at their own shape (what the summary quotes), retrieval
  and late-ranking with their bytes per step only in the `cost` block (as run_point writes it);
- data/h100-other/calibration.jsonl: the same GPU calibrated in another campaign (never used for
  the data/h100 points);
- cpu-run/: a CPU calibration (results/, device "cpu") and a point of the same session (sweep/,
  device "cpu (x86_64)"), laid out as `roo-bench demo` writes them;
- cli/: the `--json` records of bench, profile, validate and fit.
"""

from __future__ import annotations

from pathlib import Path

from make_fixtures import GPU, SCHEMA, _json, _jsonl, calibration_cpu, gpu_calibration, nvml, point, prov


def gpu_preset_points():
    """Runs of presets at their own shape on the H100: early-ranking with NVML energy (the summary's
    representative run, next to its k sweep), retrieval and late-ranking whose bytes per step are
    only in the cost model's `cost` block (as harness/run_point.py records them)."""
    energy = lambda ms, n: nvml(ms, n, 410.0, 71.0, 35.0)  # noqa: E731
    base = dict(
        device="cuda",
        dtype="bf16",
        backend="torch",
        ms_per_flop=1 / 180e9,
        overhead_ms=1.2,
        seed=0,
        created="2025-06-02T10:00:00Z",
        energy_fn=energy,
        preset_shape=True,
    )
    return [
        point(
            "early-ranking", 10, 400, user_flops_per_tok=1.6e6, item_flops=9.0e7, reqs=256, **base, bytes_per_flop=0.012
        ),
        point(
            "retrieval", 6, 300, user_flops_per_tok=9.0e5, item_flops=3.0e7, reqs=256, **base, cost_bytes_per_flop=0.02
        ),
        point(
            "late-ranking",
            4,
            200,
            user_flops_per_tok=5.0e5,
            item_flops=4.0e8,
            reqs=128,
            **base,
            cost_bytes_per_flop=0.008,
        ),
    ]


def other_campaign_calibration():
    """The same GPU model calibrated in another campaign (another folder, another host and commit)."""
    rec = gpu_calibration()
    rec["config_hash"] = "calib-h100-other"
    rec["metrics"].update(matmul_flops=512e12, copy_bandwidth=2.1e12)
    rec["provenance"] = prov(**{**GPU, "sha": "0ld0ld0ld0ld"}, seed=1, created="2025-05-01T08:00:00Z")
    rec["provenance"]["host"] = "gpu-node-3"
    return rec


# A CPU run laid out as `roo-bench demo` writes it: the calibration in results/, the sweep's points in
# sweep/; the same host and commit (one session). The calibration names the CPU "cpu", the points
# (harness.provenance) "cpu (x86_64)".
CPU_SESSION = {"sha": "5e55105e5510", "created": "2025-06-03T12:00:00Z"}


def cpu_session_calibration():
    m = calibration_cpu()
    m.update(matmul_flops=187e9, copy_bandwidth=31.4e9)
    return {
        "schema": SCHEMA,
        "kind": "calibration",
        "config_hash": "calib-cpu-session",
        "status": "ok",
        "error": None,
        "config": {"device": "cpu"},
        "metrics": m,
        "provenance": prov(device_name="cpu (x86_64)", seed=None, **CPU_SESSION),
    }


def cpu_session_points():
    p = point(
        "tiny",
        3,
        8,
        device="cpu",
        dtype="fp32",
        backend="torch",
        user_flops_per_tok=2.0e5,
        item_flops=2.4e6,
        ms_per_flop=1 / 40e6,
        overhead_ms=4.0,
        reqs=16,
        seed=0,
        created=CPU_SESSION["created"],
        preset_shape=True,
        provenance=prov(device_name="cpu (x86_64)", seed=0, sha=CPU_SESSION["sha"], created="2025-06-03T12:01:00Z"),
    )
    for lay in p["metrics"]["layouts"].values():
        lay["cost"] = {"bytes_per_step": lay["flops_per_step"] * 0.9, "device_key": "cpu"}
    return [p]


def bench_record():
    """`roo-bench bench --preset tiny --json` on the CPU (its record: config, metrics, provenance)."""
    lay = {}
    for name, med, iqr in (("impression", 2.24, 0.082), ("roo", 1.91, 0.11)):
        lay[name] = {
            "impressions_per_s": 42.8 / (med / 1e3),
            "requests_per_s": 16 / (med / 1e3),
            "step_ms_median": med,
            "step_ms_min": med * 0.97,
            "step_ms_iqr": iqr,
            "step_ms_p25": med - iqr / 2,
            "step_ms_p75": med + iqr / 2,
            "step_ms_dropped": med * 1.02,
            "timer": "perf_counter",
            "impressions_per_step": 42.8,
            "requests_per_step": 16.0,
            "steps": 20,
            "warmup": 3,
        }
    sp = 2.24 / 1.91
    config = {
        "preset": "tiny",
        "spec_file": None,
        "workload": "tiny",
        "spec": {"name": "tiny", "requests_per_batch": 16},
        "spec_overrides": [],
        "model_preset": "tiny",
        "model_overrides": [],
        "model": {"arch": "dlrm", "embedding_dim": 16},
        "device": "cpu",
        "dtype": "fp32",
        "seed": 0,
        "steps": 20,
        "warmup": 3,
    }
    metrics = {
        "device_name": "cpu",
        "layouts": lay,
        "speedup": sp,
        "speedup_ci": [sp * 0.95, sp * 1.05],
        "speedup_ci_method": "bootstrap_bca",
        "speedup_ci_confidence": 0.95,
    }
    prov_ = prov(device_name="cpu (x86_64)", created="2025-06-01T11:00:00Z")
    return _record("bench", "bench-tiny", config, metrics, prov_)


def profile_record():
    """`roo-bench profile --preset early-ranking --device cuda --json`: a host-bound impression step."""
    lay = {
        "impression": {"steps": 5, "wall_ms": 22.66, "device_busy_ms": 7.0, "launches": 340.0, "syncs": 4.4},
        "roo": {"steps": 5, "wall_ms": 9.1, "device_busy_ms": 5.2, "launches": 352.0, "syncs": 4.4},
    }
    for name, d in lay.items():
        d.update(aten_ops=1299.0 if name == "impression" else 1342.0, top_device=[], top_cpu=[])
    config = {"preset": "early-ranking", "workload": "early-ranking", "device": "cuda", "dtype": "bf16", "seed": 0}
    metrics = {
        "impressions_per_step": 2854,
        "requests_per_step": 256,
        "device_name": GPU["device_name"],
        "layouts": lay,
    }
    return _record("profile", "profile-early", config, metrics, prov(**GPU, seed=0, created="2025-06-02T11:00:00Z"))


def validate_record():
    """`roo-bench validate --json`: analytic vs counted FLOPs (reduced sizes), analytic vs measured bytes."""
    presets, storage = [], []
    for name, (fi, fr, req, imp) in {
        "tiny": (537984, 331968, 4, 6),
        "early-ranking": (91234560, 20123904, 4, 38),
    }.items():
        for layout, f in (("impression", fi), ("roo", fr)):
            presets.append(
                {
                    "preset": name,
                    "layout": layout,
                    "analytic_flops": f,
                    "counted_flops": f,
                    "rel_error": 0.0,
                    "analytic_flops_mask_aware": f,
                    "requests": req,
                    "impressions": imp,
                }
            )
    for layout, b in (("impression", 62092), ("roo", 27824)):
        storage.append({"preset": "tiny", "layout": layout, "analytic_bytes": b, "measured_bytes": b, "rel_error": 0.0})
    comps = [{"preset": "tiny", "layout": "roo", "name": "user arch", "analytic_flops": 1, "counted_flops": 1}]
    metrics = {
        "presets": presets,
        "max_rel_error": 0.0,
        "components": comps,
        "storage": storage,
        "max_storage_rel_error": 0.0,
    }
    return _record("validate", "validate", {"reduced": True}, metrics, prov(created="2025-06-01T11:30:00Z"))


def fit_record():
    """`roo-bench fit --json`: a kind without a section of its own (listed under provenance)."""
    metrics = {"spec": {"name": "fitted", "impressions": {"kind": "geometric", "mean": 3.2}}, "fit": {"requests": 120}}
    return _record("fit", "fit", {"out": None}, metrics, prov(created="2025-06-01T11:40:00Z"))


def _record(kind, hash_, config, metrics, provenance):
    return {
        "schema": SCHEMA,
        "kind": kind,
        "config_hash": hash_,
        "status": "ok",
        "error": None,
        "config": config,
        "metrics": metrics,
        "provenance": provenance,
    }


def project():
    return {
        "preset": "early-ranking",
        "requests_per_day": 1e10,
        "gpus": 512,
        "device": "h100",
        "layouts": {
            "impression": {
                "gpu_hours_per_day": 9120.0,
                "storage_tb_per_day": 37.1,
                "alltoall_tb_per_day": 610.0,
                "energy_kwh_per_day": 6384.0,
            },
            "roo": {
                "gpu_hours_per_day": 2240.0,
                "storage_tb_per_day": 6.1,
                "alltoall_tb_per_day": 150.0,
                "energy_kwh_per_day": 1568.0,
            },
        },
        "savings": {
            "gpu_hours_per_day": 0.754,
            "storage_tb_per_day": 0.836,
            "alltoall_tb_per_day": 0.754,
            "energy_kwh_per_day": 0.754,
        },
    }


def write_runs(here: Path) -> None:
    _json(here / "project.json", project())
    _jsonl(here / "data" / "h100" / "presets.jsonl", gpu_preset_points())
    _jsonl(here / "data" / "h100-other" / "calibration.jsonl", [other_campaign_calibration()])
    _json(here / "cpu-run" / "results" / "calibration.json", cpu_session_calibration())
    _jsonl(here / "cpu-run" / "sweep" / "results.jsonl", cpu_session_points())
    _json(here / "cli" / "bench-tiny.json", bench_record())
    _json(here / "cli" / "profile-early-ranking.json", profile_record())
    _json(here / "cli" / "validate.json", validate_record())
    _json(here / "cli" / "fit.json", fit_record())
