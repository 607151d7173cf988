"""What one `roo-bench comm` run measures, validated before any rank starts.

Importing this module is cheap (no torch): the CLI reads its choices while it builds `--help`."""

from __future__ import annotations

from dataclasses import dataclass

from workloads.errors import UserError

BACKENDS = ("auto", "gloo", "nccl", "mpi", "ucc")
DEVICES = ("cpu", "cuda")
COMM_DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class CommConfig:
    """What one comm run measures (validated on construction)."""

    preset: str | None = None  # None: tiny, unless spec_file names the workload
    spec_file: str | None = None  # a workload spec file (e.g. from `roo-bench fit`) instead of a preset
    overrides: tuple[str, ...] = ()
    device: str = "cpu"
    backend: str = "auto"
    shardings: tuple[str, ...] = ("table",)
    assign: str = "greedy"
    embedding_dim: int = 128
    row_cap: int | None = None  # None: roo_ref.cost.comm.DEFAULT_ROW_CAP
    requests_per_rank: int | None = None  # None: the spec's requests_per_batch
    steps: int = 20
    warmup: int = 3
    seed: int = 0
    comm_dtype: str = "fp32"
    max_history: int = 0  # > 0: each request's last events, exchanged as a sequence (HSTU); 0: none
    init_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        from roo_ref.cost import comm as comm_cost

        if self.preset is not None and self.spec_file is not None:
            raise UserError("give either --preset or --spec, not both")
        if self.preset is None and self.spec_file is None:
            object.__setattr__(self, "preset", "tiny")
        if self.row_cap is None:
            object.__setattr__(self, "row_cap", comm_cost.DEFAULT_ROW_CAP)
        if self.device not in DEVICES:
            raise UserError(f"--device={self.device!r}; allowed: {', '.join(DEVICES)}")
        if self.backend not in BACKENDS:
            raise UserError(f"--backend={self.backend!r}; allowed: {', '.join(BACKENDS)}")
        if self.backend == "nccl" and self.device != "cuda":
            raise UserError("--backend=nccl needs --device cuda (NCCL runs on GPUs); use gloo on CPU")
        if not self.shardings or any(s not in comm_cost.SHARDINGS for s in self.shardings):
            got = ",".join(self.shardings)
            raise UserError(f"--sharding={got!r}; allowed: {', '.join(comm_cost.SHARDINGS)}")
        if self.assign not in comm_cost.ASSIGNMENTS:
            raise UserError(f"--assign={self.assign!r}; allowed: {', '.join(comm_cost.ASSIGNMENTS)}")
        for name, v, lo in (
            ("--embedding-dim", self.embedding_dim, 1),
            ("--row-cap", self.row_cap, 1),
            ("--steps", self.steps, 1),
            ("--warmup", self.warmup, 0),
            ("--seed", self.seed, 0),
            ("--max-history", self.max_history, 0),
        ):
            if v < lo:
                raise UserError(f"{name}={v} must be >= {lo}")
        if self.requests_per_rank is not None and self.requests_per_rank < 1:
            raise UserError(f"--requests={self.requests_per_rank} must be >= 1 (requests per rank per step)")
        if self.comm_dtype not in COMM_DTYPES:
            raise UserError(f"--comm-dtype={self.comm_dtype!r}; allowed: {', '.join(COMM_DTYPES)}")
        if not self.init_timeout_s > 0:
            raise UserError(f"--init-timeout={self.init_timeout_s} must be > 0 seconds")
        self.spec()  # an unknown preset or a bad override fails here, before any rank starts

    def spec(self):
        from workloads.presets import resolve_spec

        return resolve_spec(self.preset, self.spec_file, list(self.overrides))

    @property
    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "nccl" if self.device == "cuda" else "gloo"

    def requests(self) -> int:
        return self.requests_per_rank or self.spec().requests_per_batch

    def torch_comm_dtype(self):
        """The torch dtype of the exchanged embeddings."""
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.comm_dtype]


def check_devices(device: str, nproc: int, backend: str = "auto") -> None:
    """The launch-time checks (before any process starts): ranks >= 1, a GPU per rank for cuda."""
    import torch

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise UserError(f"--nproc={nproc} must be >= 1 (ranks to launch)")
    wants_gpu = device == "cuda" or backend == "nccl"
    if wants_gpu and not torch.cuda.is_available():
        raise UserError(
            f"--device {device} --backend {backend}: NCCL needs CUDA GPUs, but none is visible on this "
            "machine (torch.cuda.is_available() is False); use --device cpu (gloo)"
        )
    if device == "cuda" and nproc > torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise UserError(
            f"--nproc={nproc} ranks but only {n} CUDA device{'s' if n != 1 else ''} visible; use --nproc <= {n}"
        )
