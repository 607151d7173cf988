"""reports.campaign_table: the campaign summary the issue notes quote (median errors, one row per point)."""

import json
import statistics
from pathlib import Path

from reports import campaign_table

DATA = Path(__file__).resolve().parents[1] / "reports/data/h100/campaign3/hstu-kxL/results.jsonl"


def test_table_and_medians_from_committed_records(capsys):
    recs = [json.loads(x) for x in DATA.read_text().splitlines()]
    table, s = campaign_table.rows(recs)
    assert len(table) == 2 + len(recs)
    want = statistics.median(abs(r["metrics"]["speedup_error"]) for r in recs)
    assert s["median_abs_speedup_error"] == want
    steps = [
        abs(lay["step_error"])
        for r in recs
        for lay in r["metrics"]["layouts"].values()
        if lay["step_ms"]["median"] >= 5.0
    ]
    assert s["steps_ge_5ms"] == len(steps) and s["median_abs_step_error_ge_5ms"] == statistics.median(steps)
    assert campaign_table.main([str(DATA)]) == 0
    assert "hstu-ranking k=16 L=256 B=32" in capsys.readouterr().out
    assert all(row.count("|") == table[0].count("|") for row in table)  # every row has every column
    util = recs[0]["metrics"]["layouts"]["roo"]["energy"]["sm_util_mean"]
    assert f" / {util:.0f} | " in table[2]  # the ROO layout's NVML SM utilization


def test_failed_point_is_a_row_and_missing_file_is_exit_2(tmp_path, capsys):
    table, s = campaign_table.rows([{"status": "error", "error": "timeout", "config": {"preset": "x"}}])
    assert "error: timeout" in table[-1] and s["points_ok"] == 0 and s["median_abs_speedup_error"] is None
    assert table[-1].count("|") == table[0].count("|")
    assert campaign_table.main([str(tmp_path / "nope.jsonl")]) == 2


def test_point_without_prediction_prints_dashes():
    rec = json.loads(DATA.read_text().splitlines()[0])
    for lay in rec["metrics"]["layouts"].values():
        lay["predicted_step_ms"] = lay["step_error"] = lay["achieved_tflops"] = None
        lay["energy"] = {"available": False}  # no NVML
    rec["metrics"].update(predicted_speedup=None, speedup_error=None, ideal_speedup=None, speedup_ci=None)
    table, s = campaign_table.rows([rec])
    assert "(-–-) | - | - | - | - | - / - | - / - | - / - |" in table[-1] and s["median_abs_speedup_error"] is None
