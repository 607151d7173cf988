"""`roo-bench bench`: the JSON contract on tiny (both layouts, same impressions per step) and every
bad input as one line on stderr with exit code 2 and nothing on stdout."""

from __future__ import annotations

import json

import pytest
import torch

from harness.cli import main
from workloads.records import flat_view

FAST = ["--steps", "2", "--warmup", "1", "--threads", "1"]


def _flat(rec: dict, kind: str) -> dict:
    """The flat object a `--json` record wraps, after checking it is a record of `kind`."""
    assert rec["schema"] == "roo-bench/result/1" and rec["kind"] == kind, rec.get("kind")
    return flat_view(rec)


def test_bench_tiny_json(capsys):
    rc = main(["bench", "--preset", "tiny", "--layout", "both", "--device", "cpu", "--json", *FAST])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = _flat(json.loads(out), "bench")  # exactly one JSON object
    assert res["preset"] == "tiny" and res["device"] == "cpu"
    imp, roo = res["layouts"]["impression"], res["layouts"]["roo"]
    for r in (imp, roo):
        assert r["impressions_per_s"] > 0 and r["requests_per_s"] > 0 and r["step_ms_median"] > 0
        assert r["impressions_per_s"] == pytest.approx(r["impressions_per_step"] / (r["step_ms_median"] / 1e3))
    # the same impressions per step in both layouts
    assert imp["impressions_per_step"] == roo["impressions_per_step"]
    assert imp["requests_per_step"] == roo["requests_per_step"] == 16
    assert res["speedup"] == pytest.approx(roo["impressions_per_s"] / imp["impressions_per_s"])
    # the spread beside every median, and the speedup's interval
    for r in (imp, roo):
        assert r["step_ms_p25"] <= r["step_ms_median"] <= r["step_ms_p75"]
        assert r["step_ms_iqr"] == pytest.approx(r["step_ms_p75"] - r["step_ms_p25"])
        assert r["step_ms_min"] <= r["step_ms_p25"] and r["step_ms_dropped"] > 0
        assert r["timer"] == "perf_counter" and (r["steps"], r["warmup"]) == (2, 1)
    lo, hi = res["speedup_ci"]
    assert lo <= res["speedup"] <= hi
    assert res["speedup_ci_method"] in ("t_delta_log", "exact") and res["speedup_ci_confidence"] == 0.95


def test_bench_text_shows_spread_and_interval(capsys):
    rc = main(["bench", "--preset", "tiny", *FAST])
    out, err = capsys.readouterr()
    assert rc == 0, err
    imp, roo, speedup = out.strip().splitlines()
    for line, layout in ((imp, "impression"), (roo, "roo")):
        assert line.startswith(f"tiny {layout:>10}:") and "(median; IQR " in line and line.endswith(", n=2)")
    assert speedup.startswith("ROO / impression throughput: ") and "(95% CI " in speedup


def test_bench_text_one_layout_with_overrides(capsys):
    rc = main(
        [
            "bench",
            "--preset",
            "tiny",
            "--layout",
            "roo",
            "--set",
            "arch=hstu",
            "--set",
            "requests_per_batch=4",
            "--dtype",
            "bf16",
            *FAST,
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tiny        roo:") and "impressions/s" in lines[0]


BAD = [
    (
        ["--preset", "hstu-ranking", "--set", "history.length.kind=fixed", "--set", "history.length.value=0"],
        "model arch='hstu' needs a user history, but history.length is always 0",
    ),
    (
        ["--preset", "hstu-ranking", "--set", "num_heads=3"],
        "model qk_dim=512 is not divisible by num_heads=3",
    ),
    (
        ["--preset", "tiny", "--set", "attention_backend=cuda"],
        "model attention_backend='cuda'; allowed: torch, triton",
    ),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--preset", "tiny", "--set", "nope=1"], "--set nope: unknown key; model keys:"),
    (["--preset", "tiny", "--set", "history.nope=1"], "--set history.nope: unknown key 'nope'"),
    (["--preset", "tiny", "--layout", "rows"], "--layout 'rows'; allowed: impression, roo, both"),
    (["--preset", "tiny", "--dtype", "fp8"], "--dtype 'fp8'; allowed: fp32, bf16"),
    (["--preset", "tiny", "--steps", "0"], "--steps 0: must be >= 1"),
    (["--preset", "tiny", "--set", "user_arch=[0]"], "model user_arch=[0] must be a list of integers >= 1"),
]


@pytest.mark.parametrize("argv,message", BAD)
def test_bench_bad_input(argv, message, capsys):
    rc = main(["bench", *FAST, *argv])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("roo-bench bench: error: ") and message in lines[0], lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_bench_cuda_without_gpu(capsys):
    rc = main(["bench", "--preset", "tiny", "--device", "cuda", *FAST])
    _, err = capsys.readouterr()
    assert rc == 2
    assert err.strip() == (
        "roo-bench bench: error: --device cuda: no CUDA device is available here "
        "(torch.cuda.is_available() is False); use --device cpu"
    )


# --- --spec FILE: a fitted spec, the model family from --model ----------------------------------------
@pytest.mark.slow  # over a second on a shared CPU
def test_bench_runs_a_fitted_spec_with_model_and_provenance(capsys, tmp_path):
    from tests.harness_fixtures.fitted import fitted_spec

    spec_file = fitted_spec(tmp_path)
    capsys.readouterr()
    rc = main(["bench", "--spec", str(spec_file), "--model", "tiny", "--json", *FAST])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rec = json.loads(out)
    res = _flat(rec, "bench")
    # the spec file's workload ran (its batch, not the tiny preset's 16 requests), the tiny model
    batch = res["spec"]["requests_per_batch"]
    assert res["workload"] == res["spec"]["name"] == "fitted" and res["preset"] is None
    assert res["spec_file"] == str(spec_file) and res["model_preset"] == "tiny"
    assert res["layouts"]["roo"]["requests_per_step"] == batch != 16
    assert res["model"]["embedding_dim"] == 16  # the tiny model preset's
    # the spec and the model are inputs: in the config, so they tell two runs apart by its hash
    assert rec["config"]["spec"]["name"] == "fitted" and rec["config"]["model_preset"] == "tiny"
    prov = rec["provenance"]
    assert prov["seed"] == 0 and prov["device_name"].startswith("cpu") and prov["created_utc"]
    assert "git_sha" in prov and prov["torch_version"] == torch.__version__
    # a --set on top of the file reaches the workload
    rc = main(["bench", "--spec", str(spec_file), "--model", "tiny", "--set", "requests_per_batch=5", "--json", *FAST])
    out, err = capsys.readouterr()
    assert rc == 0, err
    other = json.loads(out)
    assert flat_view(other)["layouts"]["impression"]["requests_per_step"] == 5
    assert other["config_hash"] != rec["config_hash"]


def test_bench_preset_record_carries_provenance(capsys):
    rc = main(["bench", "--preset", "tiny", "--json", "--seed", "3", *FAST])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rec = json.loads(out)
    assert rec["config"]["preset"] == rec["config"]["workload"] == rec["config"]["model_preset"] == "tiny"
    assert rec["config"]["spec_file"] is None and rec["provenance"]["seed"] == 3


SPEC_BAD = [
    (["--model", "tiny"], "give --preset NAME (one of:"),
    (["--spec", "{spec}", "--preset", "tiny"], "give either --preset or --spec, not both"),
    (["--spec", "{spec}"], "workload 'fitted' has no model preset of its name; name one explicitly (`--model NAME`"),
    (["--spec", "{spec}", "--model", "nope"], "unknown model preset 'nope'; choose one of: tiny,"),
    (["--spec", "{tmp}/missing.toml", "--model", "tiny"], "missing.toml does not exist"),
    (["--preset", "tiny", "--model", "gpt"], "unknown model preset 'gpt'"),
]


@pytest.mark.parametrize("argv,message", SPEC_BAD)
def test_bench_spec_and_model_mistakes_are_one_line(argv, message, capsys, tmp_path):
    from tests.harness_fixtures.fitted import fitted_spec

    spec_file = fitted_spec(tmp_path) if any("{spec}" in a for a in argv) else tmp_path / "unused.toml"
    capsys.readouterr()
    rc = main(["bench", *FAST, *(a.format(spec=spec_file, tmp=tmp_path) for a in argv)])
    out, err = capsys.readouterr()
    assert (rc, out) == (2, "")
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("roo-bench bench: error: ") and message in lines[0], err
