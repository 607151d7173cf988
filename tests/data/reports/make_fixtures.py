"""Regenerate the report fixtures (deterministic): `python tests/data/reports/make_fixtures.py`.

Realistic stand-ins for what the producers write (docs/contracts.md "Results", issues 2/4/9):
- points.jsonl: a CPU sweep of `tiny` over impressions per request and history length, with one
  oom point, one error point and one noisy point (IQR/median > 10%);
- data/h100/*.jsonl: committed-GPU-style results (path contains reports/data, device name set):
  an early-ranking k sweep and an hstu-ranking history sweep with NVML energy, NCCL comm records
  and a calibration record;
- storage.json, model-*.json, comm-w*.json, calibration.json: bare `--json` outputs;
- data/h100/comm.jsonl also holds a row-wise W=2 run beside the table-wise one;
- project.json, runs of presets at their own shape, other campaigns' calibrations and the records
  of bench, profile, validate and fit: make_fixtures_runs.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMA = "roo-bench/result/1"


def prov(device_name="cpu", seed=0, created="2025-06-01T10:00:00Z", sha="c27e4cc0a1b2", driver=None, cuda=None):
    return {
        "git_sha": sha,
        "git_dirty": False,
        "host": "ci-runner" if device_name.startswith("cpu") else "gpu-node-7",
        "device_name": device_name,
        "driver": driver,
        "cuda": cuda,
        "torch_version": "2.13.0" if cuda is None else "2.11.0+cu130",
        "triton_version": "3.9.0" if cuda is None else "3.6.0",
        "python_version": "3.12.3",
        "seed": seed,
        "created_utc": created,
        "roo_bench_version": "0.1.0",
    }


def layout_metrics(step_ms, iqr_frac, imps, reqs, flops, pred_ms, energy, bytes_per_step=None):
    med = step_ms
    iqr = med * iqr_frac
    d = {
        "step_ms": {
            "median": med,
            "iqr": iqr,
            "p25": med - iqr / 2,
            "p75": med + iqr / 2,
            "min": med * 0.97,
            "max": med * (1.05 + iqr_frac),
            "n": 50,
        },
        "impressions_per_s": imps / (med / 1e3),
        "requests_per_s": reqs / (med / 1e3),
        "impressions_per_step": imps,
        "requests_per_step": reqs,
        "peak_mem_bytes": int(flops / 900),
        "flops_per_step": flops,
        "flops_masked_counted": False,
        "achieved_tflops": flops / (med / 1e3) / 1e12,
        "predicted_step_ms": pred_ms,
        "step_error": med / pred_ms - 1,
        "energy": energy,
    }
    if bytes_per_step is not None:
        d["predicted_bytes_per_step"] = bytes_per_step
    return d


# The provenance of the committed-GPU-style records.
GPU = {"device_name": "NVIDIA H100 80GB HBM3", "driver": "570.124.06", "cuda": "13.0", "sha": "9f3e2d1b7a6c"}
NO_NVML = {
    "available": False,
    "reason": "NVML unavailable: NVMLError_LibraryNotFound (no NVIDIA driver)",
    "j_per_step": None,
    "j_per_1m_impressions": None,
    "power_w_mean": None,
    "power_w_max": None,
    "sm_util_mean": None,
    "mem_util_mean": None,
}


def nvml(step_ms, imps, power, sm, mem):
    j = power * step_ms / 1e3
    return {
        "available": True,
        "reason": None,
        "j_per_step": j,
        "j_per_1m_impressions": j / imps * 1e6,
        "power_w_mean": power,
        "power_w_max": power * 1.12,
        "sm_util_mean": sm,
        "mem_util_mean": mem,
    }


def point_config(preset, device, dtype, backend):
    return {
        "preset": preset,
        "spec": {"name": preset},
        "model": {"name": preset},
        "device": device,
        "dtype": dtype,
        "backend": backend,
        "warmup": 5,
        "steps": 50,
    }


def point(
    preset,
    k,
    L,
    *,
    device,
    dtype,
    backend,
    user_flops_per_tok,
    item_flops,
    ms_per_flop,
    overhead_ms,
    reqs,
    seed,
    created,
    noise=0.0,
    iqr=0.03,
    energy_fn=None,
    bytes_per_flop=None,
    axes=None,
    cost_bytes_per_flop=None,
    preset_shape=False,
    provenance=None,
):
    imps = reqs * k
    u = user_flops_per_tok * L  # user-side FLOPs per impression (impression-level copies it)
    f_imp = imps * (u + item_flops)
    f_roo = reqs * u + imps * item_flops
    f_u = u / (u + item_flops)
    pred = {lay: f * ms_per_flop + overhead_ms for lay, f in (("impression", f_imp), ("roo", f_roo))}
    meas = {"impression": pred["impression"] * (1.04 + noise), "roo": pred["roo"] * (1.10 - noise)}
    en = energy_fn or (lambda ms, n: NO_NVML)
    lay = {}
    for name, f in (("impression", f_imp), ("roo", f_roo)):
        lay[name] = layout_metrics(
            meas[name],
            iqr if name == "roo" else 0.03,
            imps,
            reqs,
            f,
            pred[name],
            en(meas[name], imps),
            None if bytes_per_flop is None else 2.5e8 + f * bytes_per_flop,
        )
        if cost_bytes_per_flop is not None:
            lay[name]["cost"] = {"bytes_per_step": 2.5e8 + f * cost_bytes_per_flop, "device_key": "h100"}
    sp = meas["impression"] / meas["roo"]
    psp = pred["impression"] / pred["roo"]
    cfg = point_config(preset, device, dtype, backend)
    if preset_shape:  # as harness/sweep.py writes a grid over presets: the preset's own shape
        cfg.update(axes={"preset": preset}, spec_overrides=[], model_overrides=[], requests_per_batch=None)
    else:
        cfg.update(axes or {"impressions_per_request": k, "history_length": L})
    return {
        "schema": SCHEMA,
        "kind": "point",
        "config_hash": f"{preset[:4]}{k:03d}{L:05d}",
        "status": "ok",
        "error": None,
        "config": cfg,
        "metrics": {
            "layouts": lay,
            "speedup": sp,
            "speedup_ci": [sp * (1 - iqr / 2), sp * (1 + iqr / 2)],
            "predicted_speedup": psp,
            "speedup_error": sp / psp - 1,
            "ideal_speedup": 1 / (f_u / k + 1 - f_u),
        },
        "provenance": provenance
        or prov(**({"device_name": "cpu"} if device == "cpu" else GPU), seed=seed, created=created),
    }


def failed(preset, k, L, status, error, device="cpu"):
    return {
        "schema": SCHEMA,
        "kind": "point",
        "config_hash": f"{preset[:4]}{k:03d}{L:05d}",
        "status": status,
        "error": error,
        "config": {
            "preset": preset,
            "device": device,
            "dtype": "fp32",
            "backend": "torch",
            "warmup": 2,
            "steps": 10,
            "impressions_per_request": k,
            "history_length": L,
        },
        "metrics": {},
        "provenance": prov(seed=0, created="2025-06-01T10:05:00Z"),
    }


def cpu_points():
    kw = dict(
        device="cpu",
        dtype="fp32",
        backend="torch",
        user_flops_per_tok=2.0e5,
        item_flops=2.4e6,
        ms_per_flop=1 / 40e6,
        overhead_ms=4.0,
        reqs=16,
        seed=0,
        created="2025-06-01T10:00:00Z",
    )
    recs = [point("tiny", k, 32, **kw) for k in (1, 2, 4, 8, 16)]
    recs += [point("tiny", 4, L, **kw) for L in (8, 128, 512)]
    recs.append(point("tiny", 4, 64, **{**kw, "noise": 0.05}, iqr=0.24))  # noisy: IQR/median = 24%
    recs.append(
        failed(
            "tiny",
            64,
            512,
            "oom",
            "RuntimeError: DefaultCPUAllocator: not enough memory: you tried to allocate 34359738368 bytes.",
        )
    )
    recs.append(
        failed(
            "tiny",
            32,
            128,
            "error",
            "RuntimeError: shape mismatch in jagged_index_select: offsets[-1]=511 != values.size(0)=512",
        )
    )
    return recs


def gpu_points():
    energy = lambda ms, n: nvml(ms, n, 540.0, 88.0, 41.0)  # noqa: E731
    base = dict(
        device="cuda",
        dtype="bf16",
        backend="triton",
        ms_per_flop=1 / 180e9,
        overhead_ms=1.2,
        seed=1,
        created="2025-06-02T08:30:00Z",
        energy_fn=energy,
    )
    recs = [
        point(
            "early-ranking",
            k,
            400,
            user_flops_per_tok=1.6e6,
            item_flops=9.0e7,
            reqs=256,
            bytes_per_flop=0.012,
            **base,
        )
        for k in (1, 2, 4, 8, 16, 32)
    ]
    recs += [
        point(
            "hstu-ranking",
            32,
            L,
            user_flops_per_tok=5.0e6 * L / 1000,
            item_flops=2.2e9,
            reqs=32,
            bytes_per_flop=0.004,
            **{**base, "ms_per_flop": 1 / 320e9},
        )
        for L in (256, 512, 1024, 2048)
    ]
    return recs


def gpu_comm():
    out = []
    for preset, per_imp_user, per_imp_item in (
        ("early-ranking", 20 * 128 * 2, 10 * 128 * 2),
        ("retrieval", 30 * 128 * 2, 3 * 128 * 2),
    ):
        for w in (2, 4):
            imps, reqs = 2560 * w, 256 * w
            b_imp = 2 * imps * (per_imp_user + per_imp_item) * (w - 1) / w
            b_roo = 2 * (reqs * per_imp_user + imps * per_imp_item) * (w - 1) / w
            bus = 150e9
            lay = {
                "impression": {
                    "counted_bytes_per_step": int(b_imp),
                    "analytic_bytes_per_step": int(b_imp),
                    "step_ms_median": b_imp / bus * 1e3 + 0.08,
                },
                "roo": {
                    "counted_bytes_per_step": int(b_roo),
                    "analytic_bytes_per_step": int(b_roo),
                    "step_ms_median": b_roo / bus * 1e3 + 0.08,
                },
            }
            out.append(
                {
                    "schema": SCHEMA,
                    "kind": "comm",
                    "config_hash": f"comm{preset[:4]}{w}",
                    "status": "ok",
                    "error": None,
                    "config": {
                        "preset": preset,
                        "device": "cuda",
                        "backend": "nccl",
                        "nproc": w,
                        "sharding": "table-wise",
                    },
                    "metrics": {"layouts": lay, "saving": 1 - b_roo / b_imp},
                    "provenance": prov(**GPU, seed=1, created="2025-06-02T09:10:00Z"),
                }
            )
    # the same exchange sharded row-wise: every rank owns a slice of every table (more peers, the
    # same bytes per lookup); a second W=2 early-ranking row that only its sharding tells apart
    row = json.loads(json.dumps(out[0]))
    row["config_hash"] = "commearlyrow2"
    row["config"]["sharding"] = "row-wise"
    for lay in row["metrics"]["layouts"].values():
        lay["step_ms_median"] *= 1.3
    out.insert(1, row)
    return out


def gpu_calibration():
    return {
        "schema": SCHEMA,
        "kind": "calibration",
        "config_hash": "calib-h100",
        "status": "ok",
        "error": None,
        "config": {"device": "cuda"},
        "metrics": {
            "device_name": "NVIDIA H100 80GB HBM3",
            "matmul_n": 8192,
            "matmul_dtype": "bfloat16",
            "matmul_s": 1.415e-3,
            "matmul_flops": 777e12,
            "copy_bytes": 4 * 2**28,
            "copy_s": 7.2e-4,
            "copy_bandwidth": 2.98e12,
            "spec": {
                "name": "NVIDIA H100 80GB HBM3",
                "bf16_flops": 777e12,
                "fp32_flops": 67e12,
                "bandwidth": 2.98e12,
                "launch_overhead_s": 6e-6,
                "power_w": 700.0,
                "source": "calibrated",
            },
        },
        "provenance": prov(**GPU, seed=1, created="2025-06-02T08:00:00Z"),
    }


def storage():
    # early-ranking, k≈10: uncompressed ratio k(U+I)/(U+kI); zstd keeps grouped duplication cheap
    # (1.0–1.2×) while shuffled rows cost ~7.7×.
    U, I, k, n_req = 3450.0, 260.0, 9.6, 2000
    n_imp = int(n_req * k)
    req_bpi = (U + k * I) / k
    rows = []

    def rec(layout, order, codec, bpi, write_s, read_s, mem):
        rows.append(
            {
                "layout": layout,
                "order": order,
                "codec": codec,
                "file_bytes": int(bpi * n_imp),
                "bytes_per_impression": bpi,
                "samples_per_tb": 1e12 / bpi,
                "write_s": write_s,
                "read_s": read_s,
                "write_mb_s": bpi * n_imp / write_s / 1e6,
                "read_mb_s": bpi * n_imp / read_s / 1e6,
                "memory_bytes": int(mem),
            }
        )

    comp = {"none": 1.0, "snappy": 0.62, "zstd": 0.38}  # request-level file bytes / uncompressed
    # impression-level file bytes / request-level file bytes, same codec: with no codec the full
    # duplication shows but Parquet's dictionary/RLE encoding (on without a codec) keeps it well below
    # the in-memory ratio; a grouped file lets the codec see the repeats, a shuffled one does not.
    grouped = {"none": 3.35, "snappy": 2.4, "zstd": 1.12}
    shuffled = {"none": 3.42, "snappy": 5.9, "zstd": 7.7}
    for codec, c in comp.items():
        slow = 1.0 + 0.4 * (codec == "zstd")
        rd = {"none": 1.0, "snappy": 1.1, "zstd": 1.3}[codec]
        rec("request", "grouped", codec, req_bpi * c, 0.11 * slow, 0.040 * rd, req_bpi * n_imp * 1.05)
        rec(
            "impression",
            "grouped",
            codec,
            req_bpi * c * grouped[codec],
            0.46 * slow,
            0.150 * rd,
            (U + I) * n_imp,
        )
        rec(
            "impression",
            "shuffled",
            codec,
            req_bpi * c * shuffled[codec],
            0.62 * slow,
            0.19 * rd,
            (U + I) * n_imp,
        )
    return {
        "preset": "early-ranking",
        "requests": n_req,
        "impressions": n_imp,
        "seed": 1,
        "predicted_uncompressed_ratio": k * (U + I) / (U + k * I),
        "measured_uncompressed_ratio": k * (U + I) / (U + k * I) * 0.985,
        # the in-memory (decoded Arrow) bytes of each layout, which the measured ratio divides
        "uncompressed_bytes": {
            "request": int(req_bpi * n_imp),
            "impression": int(req_bpi * n_imp * k * (U + I) / (U + k * I) * 0.985),
        },
        "formats": rows,
        "provenance": prov(created="2025-06-01T09:50:00Z"),
    }


def model(preset, k, L, reqs):
    comps = []
    imps = reqs * k

    def add(name, user_side, fwd_per_row, bytes_per_row):
        for lay in ("impression", "roo"):
            rows = imps if (lay == "impression" or not user_side) else reqs
            comps.append(
                {
                    "name": name,
                    "layout": lay,
                    "fwd_flops": fwd_per_row * rows,
                    "bwd_flops": 2 * fwd_per_row * rows,
                    "bytes": bytes_per_row * rows,
                }
            )

    add("embedding lookup (user)", True, 0.0, 20 * 3 * 128 * 2)
    add("history pooling", True, 2 * L * 128, L * 128 * 2)
    add("user arch MLP", True, 2 * (2688 * 1024 + 1024 * 512), 2 * (1024 + 512) * 2)
    add("embedding lookup (item)", False, 0.0, 10 * 128 * 2)
    add("item arch MLP", False, 2 * (1288 * 512 + 512 * 256), 2 * (512 + 256) * 2)
    add("interaction MLP", False, 2 * (768 * 512 + 512 * 256 + 256), 2 * (512 + 256) * 2)
    add("head + loss", False, 2 * 256, 16)
    comps.append(
        {
            "name": "request→impression expansion",
            "layout": "roo",
            "fwd_flops": 0.0,
            "bwd_flops": 512.0 * imps,
            "bytes": 2 * 512 * 2 * imps,
        }
    )
    comps.append(
        {
            "name": "request→impression expansion",
            "layout": "impression",
            "fwd_flops": 0.0,
            "bwd_flops": 0.0,
            "bytes": 0,
        }
    )
    totals = {}
    for lay in ("impression", "roo"):
        c = [x for x in comps if x["layout"] == lay]
        fwd, bwd = sum(x["fwd_flops"] for x in c), sum(x["bwd_flops"] for x in c)
        by = sum(x["bytes"] for x in c)
        u_rows = imps if lay == "impression" else reqs
        totals[lay] = {
            "fwd_flops": fwd,
            "bwd_flops": bwd,
            "flops": fwd + bwd,
            "bytes": by,
            "alltoall_bytes": 2 * (u_rows * 20 * 128 * 2 + imps * 10 * 128 * 2),
            "storage_bytes_per_impression": 3710.0 if lay == "impression" else (3450 + k * 260) / k,
            "predicted_step_ms": (fwd + bwd) / 180e9 * 1e3 + 1.2,
            "impressions_per_step": imps,
            "requests_per_step": reqs,
        }
    return {
        "preset": preset,
        "device": "h100",
        "dtype": "bf16",
        "components": comps,
        "totals": totals,
        "predicted_speedup": totals["impression"]["predicted_step_ms"] / totals["roo"]["predicted_step_ms"],
        "f_u": 0.83,
    }


def comm_cpu(w):
    imps, reqs = 48 * w, 16 * w
    b_imp = 2 * imps * (4 * 16 * 4 + 2 * 16 * 4) * (w - 1) / w
    b_roo = 2 * (reqs * 4 * 16 * 4 + imps * 2 * 16 * 4) * (w - 1) / w
    return {
        "preset": "tiny",
        "nproc": w,
        "backend": "gloo",
        "sharding": "table",
        "device": "cpu",
        "layouts": {
            "impression": {
                "counted_bytes_per_step": int(b_imp),
                "analytic_bytes_per_step": int(b_imp),
                "step_ms_median": 0.9 + b_imp / 2e9 * 1e3,
            },
            "roo": {
                "counted_bytes_per_step": int(b_roo),
                "analytic_bytes_per_step": int(b_roo),
                "step_ms_median": 0.85 + b_roo / 2e9 * 1e3,
            },
        },
        "saving": 1 - b_roo / b_imp,
        "provenance": prov(created="2025-06-01T10:20:00Z"),
    }


def calibration_cpu():
    return {
        "device_name": "cpu",
        "matmul_n": 1024,
        "matmul_dtype": "float32",
        "matmul_s": 0.0428,
        "matmul_flops": 50.2e9,
        "copy_bytes": 2**26,
        "copy_s": 0.0107,
        "copy_bandwidth": 12.5e9,
        "spec": {
            "name": "cpu",
            "bf16_flops": 0.2e12,
            "fp32_flops": 50.2e9,
            "bandwidth": 12.5e9,
            "launch_overhead_s": 5e-6,
            "power_w": 65.0,
            "source": "calibrated",
        },
    }


def _jsonl(path: Path, recs):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in recs))


def _json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def main():
    assert all(math.isfinite(p["metrics"].get("speedup", 1.0)) for p in cpu_points())
    _jsonl(HERE / "points.jsonl", cpu_points())
    _jsonl(HERE / "data" / "h100" / "points.jsonl", gpu_points())
    _jsonl(HERE / "data" / "h100" / "comm.jsonl", gpu_comm())
    _jsonl(HERE / "data" / "h100" / "calibration.jsonl", [gpu_calibration()])
    _json(HERE / "storage.json", storage())
    _json(HERE / "model-early-ranking.json", model("early-ranking", 10, 400, 256))
    _json(HERE / "comm-w2.json", comm_cpu(2))
    _json(HERE / "comm-w4.json", comm_cpu(4))
    _json(HERE / "calibration.json", calibration_cpu())
    from make_fixtures_runs import write_runs  # the script's folder is on sys.path

    write_runs(HERE)


if __name__ == "__main__":
    main()
