"""NVML sampler: power, utilization, memory, clocks and temperature from a background thread, and
the board's total-energy counter read before and after a region.

Without NVML (no driver, no GPU — `pynvml.nvmlInit()` raises NVMLError_LibraryNotFound on a CPU
machine) the sampler still works as a context manager and its summary says `available=False` with
the reason; a measurement never fails because power could not be read.

Energy: the difference of nvmlDeviceGetTotalEnergyConsumption (mJ, Volta+) over the region; where
that counter is not supported, the trapezoid integral of the sampled power (energy_source says
which).

Sampling cost: each sample is ~7 NVML calls (a few µs each) on a thread that sleeps between
samples, so at the default 20 ms it takes well under 1% of one CPU core; `python -m
harness.nvml_perturbation` measures the effect on step time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

DEFAULT_INTERVAL_MS = 20.0

# The keys every energy summary has (docs/contracts.md, "Results"), plus the extras below.
SUMMARY_KEYS = (
    "available",
    "reason",
    "j_per_step",
    "j_per_1m_impressions",
    "power_w_mean",
    "power_w_max",
    "sm_util_mean",
    "mem_util_mean",
)


@dataclass
class _Sample:
    t: float  # seconds, perf_counter
    power_w: float | None
    sm_util: float | None
    mem_util: float | None
    mem_used: int | None
    sm_clock: float | None
    mem_clock: float | None
    temp_c: float | None


def _load_pynvml():
    import pynvml  # nvidia-ml-py

    return pynvml


def _pci_bus_id(device) -> str | None:
    """NVML's bus id of a torch CUDA device (NVML ignores CUDA_VISIBLE_DEVICES, torch does not)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        idx = torch.device(device).index
        props = torch.cuda.get_device_properties(torch.cuda.current_device() if idx is None else idx)
        return f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    except Exception:  # noqa: BLE001 — old torch without pci fields: fall back to an index
        return None


class NvmlSampler:
    """Context manager: `with NvmlSampler("cuda:0") as s: ...` then `s.summary(steps, imps)`.

    `nvml` injects a pynvml-like module (tests); `enabled=False` records reason "disabled"."""

    def __init__(self, device="cuda", interval_ms: float = DEFAULT_INTERVAL_MS, enabled: bool = True, nvml=None):
        if not interval_ms > 0:
            raise ValueError(f"nvml interval_ms={interval_ms} must be > 0")
        self.interval_s = interval_ms / 1000.0
        self.device = str(device)
        self.available = False
        self.reason: str | None = None
        self.device_name: str | None = None
        self.driver: str | None = None
        self._nvml = None
        self._handle = None
        self._samples: list[_Sample] = []
        self._errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._e0: int | None = None
        self._e1: int | None = None
        self._t0 = self._t1 = 0.0
        if not enabled:
            self.reason = "disabled"
            return
        if not self.device.startswith("cuda"):
            self.reason = f"device {self.device!r} is not a CUDA device"
            return
        try:
            self._nvml = nvml if nvml is not None else _load_pynvml()
        except ImportError as e:
            self.reason = f"pynvml (nvidia-ml-py) not importable: {e}"
            return
        try:
            self._nvml.nvmlInit()
            bus = _pci_bus_id(self.device) if nvml is None else None
            if bus is not None:
                self._handle = self._nvml.nvmlDeviceGetHandleByPciBusId(bus)
            else:
                idx = 0 if ":" not in self.device else int(self.device.split(":", 1)[1])
                self._handle = self._nvml.nvmlDeviceGetHandleByIndex(idx)
            self.device_name = _str(self._nvml.nvmlDeviceGetName(self._handle))
            try:
                self.driver = _str(self._nvml.nvmlSystemGetDriverVersion())
            except Exception:  # noqa: BLE001
                self.driver = None
            self.available = True
        except Exception as e:  # noqa: BLE001 — pynvml.NVMLError and friends: degrade, never crash
            self.reason = f"{type(e).__name__}: {e}"
            self._nvml = None

    # --- sampling ------------------------------------------------------------------------------
    def _call(self, name: str, *args):
        """One NVML query; a query the board does not support is remembered and skipped after."""
        if name in self._errors:
            return None
        try:
            return getattr(self._nvml, name)(self._handle, *args)
        except Exception as e:  # noqa: BLE001
            self._errors[name] = f"{type(e).__name__}: {e}"
            return None

    def sample(self) -> _Sample:
        n = self._nvml
        p = self._call("nvmlDeviceGetPowerUsage")  # mW
        u = self._call("nvmlDeviceGetUtilizationRates")
        m = self._call("nvmlDeviceGetMemoryInfo")
        sm = self._call("nvmlDeviceGetClockInfo", n.NVML_CLOCK_SM)
        mc = self._call("nvmlDeviceGetClockInfo", n.NVML_CLOCK_MEM)
        tc = self._call("nvmlDeviceGetTemperature", n.NVML_TEMPERATURE_GPU)
        return _Sample(
            t=time.perf_counter(),
            power_w=None if p is None else p / 1000.0,
            sm_util=None if u is None else float(u.gpu),
            mem_util=None if u is None else float(u.memory),
            mem_used=None if m is None else int(m.used),
            sm_clock=None if sm is None else float(sm),
            mem_clock=None if mc is None else float(mc),
            temp_c=None if tc is None else float(tc),
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._samples.append(self.sample())
            self._stop.wait(self.interval_s)

    def _energy_mj(self) -> int | None:
        v = self._call("nvmlDeviceGetTotalEnergyConsumption")
        return None if v is None else int(v)

    def __enter__(self) -> NvmlSampler:
        self._samples = []
        self._t0 = time.perf_counter()
        if self.available:
            self._e0 = self._energy_mj()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="roo-bench-nvml", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._samples.append(self.sample())  # one sample at the very end of the region
            self._e1 = self._energy_mj()
        self._t1 = time.perf_counter()

    # --- summary -------------------------------------------------------------------------------
    def summary(self, steps: int, impressions_per_step: float | None = None) -> dict:
        """Per-region summary; `steps` is the number of steps inside the region."""
        out: dict = {k: None for k in SUMMARY_KEYS}
        out.update(
            available=self.available,
            reason=self.reason,
            interval_ms=self.interval_s * 1000.0,
            duration_s=self._t1 - self._t0 if self._t1 else None,
            n_samples=len(self._samples),
            energy_j=None,
            energy_source=None,
            power_w_min=None,
            mem_used_bytes_max=None,
            sm_clock_mhz_mean=None,
            mem_clock_mhz_mean=None,
            temp_c_max=None,
            unsupported=dict(self._errors),
        )
        if not self.available:
            return out

        def col(name):
            return [getattr(s, name) for s in self._samples if getattr(s, name) is not None]

        def mean(xs):
            return sum(xs) / len(xs) if xs else None

        power = col("power_w")
        out.update(
            power_w_mean=mean(power),
            power_w_max=max(power) if power else None,
            power_w_min=min(power) if power else None,
            sm_util_mean=mean(col("sm_util")),
            mem_util_mean=mean(col("mem_util")),
            mem_used_bytes_max=max(col("mem_used"), default=None),
            sm_clock_mhz_mean=mean(col("sm_clock")),
            mem_clock_mhz_mean=mean(col("mem_clock")),
            temp_c_max=max(col("temp_c"), default=None),
        )
        energy = None
        if self._e0 is not None and self._e1 is not None and self._e1 >= self._e0:
            energy, out["energy_source"] = (self._e1 - self._e0) / 1000.0, "counter"
        else:
            pts = [(s.t, s.power_w) for s in self._samples if s.power_w is not None]
            if len(pts) >= 2:
                pairs = zip(pts, pts[1:], strict=False)
                energy = sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in pairs)
                out["energy_source"] = "power_integral"
        out["energy_j"] = energy
        if energy is not None and steps > 0:
            out["j_per_step"] = energy / steps
            if impressions_per_step:
                out["j_per_1m_impressions"] = energy / (steps * impressions_per_step) * 1e6
        return out

    def close(self) -> None:
        if self._nvml is not None and self.available:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass


def _str(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def nvml_status() -> dict:
    """{"available", "reason", "driver"} of NVML on this machine (no device handle kept)."""
    s = NvmlSampler("cuda:0")
    out = {"available": s.available, "reason": s.reason, "driver": s.driver, "device_name": s.device_name}
    s.close()
    return out
