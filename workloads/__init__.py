"""What the data is: workload specs, distributions, presets, the request generator, both layouts,
Parquet I/O, conversion of a user's impression-level log, and storage measurement.

Nothing here imports model code (roo_ref); torch is the tensor container and, in generator_torch and
expand, draws and expands batches on the batch's device (a Triton kernel on CUDA)."""
