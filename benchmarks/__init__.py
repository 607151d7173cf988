"""asv benchmark suite (benchmark_dir in asv.conf.json). A package so `benchmarks.common` imports
the same way under asv, pytest and `python -m benchmarks.<runner>`."""
