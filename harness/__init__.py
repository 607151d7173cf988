"""How it is measured: device specs and calibration, timers, NVML sampler, run_point, sweeps,
results store with provenance, distributed communication bench, cluster projection, and the CLI."""
