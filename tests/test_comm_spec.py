"""`roo-bench comm --spec FILE`: a spec fitted by `roo-bench fit` runs through the all-to-all
benchmark (2 gloo ranks on the CPU, tiny sizes); the exchange needs no model."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from tests.harness_fixtures.fitted import fitted_spec
from workloads.records import flat_view
from workloads.spec import WorkloadSpec

pytestmark = pytest.mark.slow  # launches torchrun

SMALL = ["--requests", "6", "--embedding-dim", "8", "--row-cap", "500", "--steps", "2", "--warmup", "1"]


def test_comm_runs_a_fitted_spec(tmp_path, capsys):
    spec_file = fitted_spec(tmp_path)
    capsys.readouterr()
    out_jsonl = tmp_path / "comm.jsonl"
    argv = ["comm", "--nproc", "2", "--spec", str(spec_file), *SMALL, "--json", "--out", str(out_jsonl)]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    rec = json.loads(out)
    s = flat_view(rec)
    assert s["workload"] == "fitted" and s["preset"] is None and s["spec_file"] == str(spec_file.resolve())
    assert s["bytes_match"] and s["embeddings_equal"]
    imp, roo = s["layouts"]["impression"], s["layouts"]["roo"]
    assert roo["counted_bytes_per_step"] < imp["counted_bytes_per_step"]
    assert rec["provenance"]["device_name"].startswith("cpu")  # the ranks' provenance comes along
    # the full record (--out) holds the spec that ran: the file's, not a preset's
    full = json.loads(out_jsonl.read_text().splitlines()[0])
    assert full["config"]["spec"] == WorkloadSpec.from_file(spec_file).to_dict()
    assert full["config"]["spec_file"] == str(spec_file.resolve())


def test_comm_spec_mistakes_are_one_line(tmp_path, capsys):
    rc = main(["comm", "--spec", str(tmp_path / "none.toml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "none.toml does not exist" in err[0]
    spec_file = fitted_spec(tmp_path)
    capsys.readouterr()
    rc = main(["comm", "--spec", str(spec_file), "--preset", "tiny"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["roo-bench comm: error: give either --preset or --spec, not both"]
