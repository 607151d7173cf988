"""What the data is: workload specs, distributions, presets, the request generator, both layouts,
Parquet I/O, conversion of a user's impression-level log, and storage measurement.

Nothing here imports model code (roo_ref); torch is used only as the tensor container."""
