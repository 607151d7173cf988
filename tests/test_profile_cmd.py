"""`roo-bench profile`: a torch.profiler summary per layout (CPU here; CUDA adds kernel rows)."""

import json

from harness.cli import main
from workloads.records import flat_view


def _flat(rec: dict, kind: str) -> dict:
    """The flat object a `--json` record wraps, after checking it is a record of `kind`."""
    assert rec["schema"] == "roo-bench/result/1" and rec["kind"] == kind, rec.get("kind")
    return flat_view(rec)


def test_profile_tiny_both_layouts_json(capsys, tmp_path):
    rc = main(
        [
            "profile",
            "--preset",
            "tiny",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--json",
            "--trace-dir",
            str(tmp_path),
        ]
    )
    assert rc == 0
    out = _flat(json.loads(capsys.readouterr().out), "profile")
    assert set(out["layouts"]) == {"impression", "roo"}
    for layout, s in out["layouts"].items():
        assert s["steps"] == 2 and s["wall_ms"] > 0 and s["aten_ops"] > 10
        assert s["device_busy_ms"] == 0 and s["launches"] == 0  # no CUDA activity on the CPU
        names = [r["name"] for r in s["top_cpu"]]
        assert any(n.startswith("aten::") for n in names)
        assert (tmp_path / f"trace-tiny-{layout}.json").stat().st_size > 0
    assert out["impressions_per_step"] >= out["requests_per_step"] > 0


def test_profile_bad_input_is_one_line_exit_2(capsys):
    assert main(["profile", "--preset", "tiny", "--top", "0"]) == 2
    assert main(["profile", "--preset", "tiny", "--layout", "sideways"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--top 0" in err[0] and "--layout 'sideways'" in err[1]
