"""harness.nvml: degradation without NVML (the reason on this machine), and the summary arithmetic
against a fake pynvml."""

import threading
import time
from types import SimpleNamespace

import pytest
import torch

from harness.nvml import SUMMARY_KEYS, NvmlSampler, nvml_status


@pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the no-NVML reason of a CPU machine")
def test_degrades_without_nvml_with_the_reason():
    s = NvmlSampler("cuda")
    assert s.available is False
    assert s.reason == "NVMLError_LibraryNotFound: NVML Shared Library Not Found"
    with s:  # still a working context manager: no thread, no exception
        time.sleep(0.01)
    out = s.summary(steps=10, impressions_per_step=100)
    assert set(SUMMARY_KEYS) <= set(out)
    assert out["available"] is False and out["reason"] == s.reason
    assert all(out[k] is None for k in SUMMARY_KEYS if k not in ("available", "reason"))
    assert out["n_samples"] == 0
    s.close()
    assert nvml_status()["available"] is False


def test_disabled_and_cpu_reasons():
    assert NvmlSampler("cuda", enabled=False).reason == "disabled"
    assert NvmlSampler("cpu").reason == "device 'cpu' is not a CUDA device"
    with pytest.raises(ValueError):
        NvmlSampler("cuda", interval_ms=0)


class FakeNvml:
    """Enough of pynvml: constant 250 W, 80% SM / 40% memory utilization, an energy counter."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    def __init__(self, energy=(1_000_000, 1_012_000)):
        self.energy = list(energy) if energy else None
        self.inits = self.shutdowns = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("handle", i)

    def nvmlDeviceGetName(self, h):
        return b"Fake H100"

    def nvmlSystemGetDriverVersion(self):
        return "999.1"

    def nvmlDeviceGetPowerUsage(self, h):
        return 250_000  # mW

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=80, memory=40)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=5 << 30, total=80 << 30)

    def nvmlDeviceGetClockInfo(self, h, which):
        return 1980 if which == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetTemperature(self, h, which):
        return 61

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if self.energy is None:
            raise RuntimeError("NVMLError_NotSupported: Not Supported")
        return self.energy.pop(0)


def test_summary_with_energy_counter():
    fake = FakeNvml()
    s = NvmlSampler("cuda:0", interval_ms=2, nvml=fake)
    assert s.available and s.device_name == "Fake H100" and s.driver == "999.1"
    with s:
        time.sleep(0.05)
        assert any(t.name == "roo-bench-nvml" for t in threading.enumerate())
    assert not any(t.name == "roo-bench-nvml" for t in threading.enumerate())
    out = s.summary(steps=4, impressions_per_step=1000)
    assert out["energy_source"] == "counter"
    assert out["energy_j"] == pytest.approx(12.0)  # 12_000 mJ
    assert out["j_per_step"] == pytest.approx(3.0)
    assert out["j_per_1m_impressions"] == pytest.approx(12.0 / 4000 * 1e6)
    assert out["power_w_mean"] == out["power_w_max"] == 250.0
    assert out["sm_util_mean"] == 80.0 and out["mem_util_mean"] == 40.0
    assert out["mem_used_bytes_max"] == 5 << 30 and out["temp_c_max"] == 61.0
    assert out["sm_clock_mhz_mean"] == 1980.0 and out["mem_clock_mhz_mean"] == 2619.0
    assert out["n_samples"] >= 2 and out["unsupported"] == {}
    s.close()
    assert fake.shutdowns == 1


def test_summary_integrates_power_without_energy_counter():
    s = NvmlSampler("cuda:0", interval_ms=2, nvml=FakeNvml(energy=None))
    with s:
        time.sleep(0.05)
    out = s.summary(steps=5)
    assert out["energy_source"] == "power_integral"
    span = s._samples[-1].t - s._samples[0].t
    assert out["energy_j"] == pytest.approx(250.0 * span)
    assert out["j_per_step"] == pytest.approx(250.0 * span / 5)
    assert out["j_per_1m_impressions"] is None  # no impressions given
    assert "nvmlDeviceGetTotalEnergyConsumption" in out["unsupported"]


def test_init_failure_is_a_reason_not_a_crash():
    class Broken(FakeNvml):
        def nvmlInit(self):
            raise RuntimeError("driver/library version mismatch")

    s = NvmlSampler("cuda", nvml=Broken())
    assert not s.available and s.reason == "RuntimeError: driver/library version mismatch"


def test_perturbation_measurement_runs_on_cpu(tmp_path, capsys):
    from harness.nvml_perturbation import main, measure
    from harness.results import read_results

    res = measure("cpu", "matmul", steps=5, blocks=2, n=32)
    assert res["off_ms"]["n"] == res["on_ms"]["n"] == 5
    assert res["rel_diff"] == pytest.approx(res["on_ms"]["median"] / res["off_ms"]["median"] - 1)
    assert res["nvml_available"] is False and res["nvml_reason"] == "device 'cpu' is not a CUDA device"
    out = tmp_path / "cal.jsonl"
    assert main(["--device", "cpu", "--steps", "5", "--blocks", "2", "--n", "32", "--out", str(out), "--json"]) == 0
    recs, warnings = read_results(out)
    assert warnings == [] and recs[0]["kind"] == "calibration" and recs[0]["metrics"]["blocks"] == 2
    capsys.readouterr()
    assert main(["--device", "cpu", "--blocks", "3"]) == 2
    assert capsys.readouterr().err == (
        "nvml_perturbation: error: steps=50 must be >= 5 and blocks=3 an even number >= 2\n"
    )
