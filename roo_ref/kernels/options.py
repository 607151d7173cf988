"""The Triton HSTU attention kernel's options, passed explicitly to `hstu_attention_triton`.

Pure Python (no torch, no triton), so the CLI, the benchmarks and provenance can build, validate and
record options without importing the kernels. The kernel reads no environment variables: callers
that want them (the kernel benchmark, the harness) parse them once with `HstuKernelOptions.from_env`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

Config = tuple[int, int, int, int]  # (BLOCK_M, BLOCK_N, num_warps, num_stages)

KINDS = ("fwd", "bwd", "dq")
# Where dq is summed. "kernel": its own kernel (no atomics). "atomic": fp32 atomics inside the dk/dv
# kernel (its zero-fill and cast cost ~0.2 ms per 131k tokens, so it wins only at long L). "auto":
# atomic when max_seq_len >= 2048, where it measured 1-6% faster on an H100, the dq kernel below that
# (docs/notebook/perf.md).
DQ_MODES = ("auto", "kernel", "atomic")
# The time-bucket gradient in the dk/dv kernel. "reduce": each tile summed per bucket first, one
# atomic per bucket (lanes of a warp mostly share a bucket, so per-pair atomics serialize inside the
# warp). "atomic": one atomic per (query, key) pair, which makes a long-history hstu-ranking step
# markedly slower on an H100 (docs/performance.md).
TIME_GRAD_MODES = ("reduce", "atomic")
# silu's form. "fast": the tanh form through tanh.approx.f32 on bf16 GPU inputs (relative error
# ~2^-11, far below bf16's 2^-8), the exact sigmoid for other dtypes and under the interpreter.
# "exact": the exact sigmoid everywhere. "tanh_exact": the tanh form with an exact tanh, on any
# device: it lets the interpreter check the tanh form's algebra on the CPU.
SILU_FORMS = ("fast", "exact", "tanh_exact")

ENV_PREFIX = "ROO_HSTU_"
_ENV_FAST = {"1": "fast", "0": "exact"}
_ENV_BOOL = {"1": True, "0": False}


def parse_config(text: str, where: str) -> Config:
    """ "BLOCK_M,BLOCK_N,num_warps,num_stages" -> a config tuple; ValueError naming `where` otherwise."""
    try:
        cfg = tuple(int(x) for x in text.split(","))
    except ValueError:
        cfg = ()
    if len(cfg) != 4 or min(cfg) < 1:
        raise ValueError(f"{where}={text!r}: want BLOCK_M,BLOCK_N,num_warps,num_stages, e.g. 64,128,8,3")
    return cfg  # type: ignore[return-value]


def _check_config(name: str, value) -> Config | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_config(value, f"HstuKernelOptions.{name}")
    cfg = tuple(value) if isinstance(value, list | tuple) else ()
    if len(cfg) != 4 or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in cfg):
        raise ValueError(
            f"HstuKernelOptions.{name}={value!r}; allowed: None or 4 positive ints "
            "(BLOCK_M, BLOCK_N, num_warps, num_stages)"
        )
    return cfg  # type: ignore[return-value]


@dataclass(frozen=True)
class HstuKernelOptions:
    """What the kernels do beyond their inputs; the defaults are the measured best (docs/notebook/perf.md).

    fwd_config / bwd_config / dq_config: one (BLOCK_M, BLOCK_N, num_warps, num_stages) for that kernel
    instead of its default (for fwd/dq: M = queries, N = keys; for the dk/dv kernel: M = queries per
    inner step, N = the program's key block). autotune: try the kernel's candidate list instead of the
    default where no config is given."""

    dq_mode: str = "auto"
    time_grad: str = "reduce"
    silu: str = "fast"
    autotune: bool = False
    fwd_config: Config | None = None
    bwd_config: Config | None = None
    dq_config: Config | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("dq_mode", DQ_MODES), ("time_grad", TIME_GRAD_MODES), ("silu", SILU_FORMS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"HstuKernelOptions.{name}={value!r}; allowed: {', '.join(allowed)}")
        if not isinstance(self.autotune, bool):
            raise ValueError(f"HstuKernelOptions.autotune={self.autotune!r}; allowed: True, False")
        for kind in KINDS:
            name = f"{kind}_config"
            object.__setattr__(self, name, _check_config(name, getattr(self, name)))

    def config(self, kind: str) -> Config | None:
        """The config given for kernel `kind` ("fwd", "bwd", "dq"), or None (the kernel's default)."""
        return getattr(self, f"{kind}_config")

    def atomic_dq(self, max_seq_len: int) -> bool:
        """Whether dq is summed by atomics in the dk/dv kernel for this batch's max_seq_len."""
        return self.dq_mode == "atomic" or (self.dq_mode == "auto" and max_seq_len >= 2048)

    def replace(self, **changes) -> HstuKernelOptions:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready: configs as lists."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> HstuKernelOptions:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> HstuKernelOptions:
        """Options from ROO_HSTU_* variables: ROO_HSTU_DQ (auto/kernel/atomic), ROO_HSTU_TIME_GRAD
        (reduce/atomic), ROO_HSTU_FAST (1 fast silu, 0 exact), ROO_HSTU_AUTOTUNE (0/1),
        ROO_HSTU_{FWD,BWD,DQ}_CONFIG (BLOCK_M,BLOCK_N,num_warps,num_stages). ValueError naming the
        variable on a bad value or an unknown ROO_HSTU_* name (a typo must not pass silently)."""
        names = {"DQ", "TIME_GRAD", "FAST", "AUTOTUNE", *(f"{k.upper()}_CONFIG" for k in KINDS)}
        env = {k[len(ENV_PREFIX) :]: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
        unknown = sorted(set(env) - names)
        if unknown:
            known = ", ".join(ENV_PREFIX + n for n in sorted(names))
            raise ValueError(f"unknown kernel variable {ENV_PREFIX + unknown[0]}; known: {known}")
        kw: dict = {}
        for var, field, allowed in (
            ("DQ", "dq_mode", {m: m for m in DQ_MODES}),
            ("TIME_GRAD", "time_grad", {m: m for m in TIME_GRAD_MODES}),
            ("FAST", "silu", _ENV_FAST),
            ("AUTOTUNE", "autotune", _ENV_BOOL),
        ):
            if var in env:
                if env[var] not in allowed:
                    raise ValueError(f"{ENV_PREFIX}{var}={env[var]!r}; allowed: {', '.join(allowed)}")
                kw[field] = allowed[env[var]]
        for kind in KINDS:
            var = f"{kind.upper()}_CONFIG"
            if env.get(var):
                kw[f"{kind}_config"] = parse_config(env[var], ENV_PREFIX + var)
        return cls(**kw)


DEFAULT_OPTIONS = HstuKernelOptions()
