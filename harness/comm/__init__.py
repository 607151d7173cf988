"""Distributed benchmark of model-parallel embeddings: the all-to-alls of one training step, both
layouts, on W ranks (gloo on CPU, NCCL on GPUs).

Every rank generates the same global batch (W * requests_per_rank requests, same seed) and takes its
contiguous slice of requests (data parallel); the tables are sharded table-wise or row-wise across
the ranks (roo_ref.sharded_embeddings). One step is the embedding exchange, a small dense head and a
loss, and the backward with its reverse exchange.

- `config`: what one run measures (`CommConfig`) and the launch-time checks;
- `collective`: the counted all-to-all (`CountingComm`) and the calibration of the plain one;
- `runner`: one rank's run (process group, verification, timed steps), under torchrun;
- `record`: the result record (kind "comm") that rank 0 builds per sharding.

`roo-bench comm` (harness/commands/comm.py) launches the ranks and prints the result; under
torchrun the same module is the rank's entry point (`-m harness.commands.comm`).
"""
