"""Model configurations: one frozen, validated ModelConfig per workload preset.

The workload preset (workloads.presets) says what the data looks like; the ModelConfig here says
what network trains on it. The two registries share their names: every workload preset has the
model preset of the same name (a test checks it), and a spec that is not a preset (fitted or loaded
from a file) names its model preset explicitly (`model_config_for(spec, "tiny")`, `--model tiny`).
`--set key=value` overrides (flat keys, lists as JSON `[512,256]`) go through
`ModelConfig.with_overrides`, with the same validation as construction.

Sizing (the sources are listed per preset in workloads.presets.SOURCES): `late-ranking` is
MLPerf DLRM-v2 (dim 128, bottom 512-256-128, DCN-v2 3 cross layers rank 512 over 27 x 128, top
1024-1024-512-256-1); `hstu-ranking` is MLPerf DLRMv3 (5 layers, 4 heads, d_qk = d_v = 128 per
head, dim 512); early-ranking/retrieval put most per-impression compute on the user side.
Embedding tables are sized cardinality x dim but capped at `max_table_rows` (ids hashed modulo the
cap): one GPU's share of its source's largest table under 8-way row-wise sharding (DLRM-v2: 40M / 8
= 5M rows; DLRMv3: 10M / 8 = 1.25M rows). A scaled preset `NAME@SCALE` scales that cap too.

Memory at production shape, estimated by tests/test_presets.py (fp32 tables + row-wise Adagrad
state + dense Adam state + a fifth of the cost model's bytes per step for activations, a bound
that holds for every committed H100 peak): impression / ROO layout retrieval 17.1 / 10.8 GB,
early-ranking 16.7 / 10.7, late-ranking 21.7 / 20.6, hstu-ranking (Triton attention) 73.4 / 11.1
(measured on the H100: 55.7 / 9.5 GB).
The DLRM tables are 34M rows (8.8 GB at dim 64, 17.5 GB at dim 128); hstu-ranking's 3.75M rows of
dim 512 are 7.7 GB.

hstu-ranking keeps the most recent `max_history_len=256` events: in the impression layout a step
holds 64 x 32 = 2,048 sequences, and at ~83 KB of saved activations per token (5 layers, measured
on the H100) 2,048 x 257 tokens take ~44 GB; a 1k-event history would not fit 80 GB there. The ROO
layout alone can take the whole history (`--set max_history_len=0`, with the triton backend).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from workloads.errors import SpecError

ARCHS = ("dlrm", "two_tower", "hstu")
INTERACTIONS = ("dot", "dcn")
ATTENTION_BACKENDS = ("torch", "triton")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "dlrm"
    embedding_dim: int = 16
    max_table_rows: int = 1000
    # DLRM / two-tower
    dense_arch: tuple[int, ...] = (32,)  # MLP hidden sizes for dense features (-> embedding_dim)
    user_arch: tuple[int, ...] = (64,)  # UserArch / user tower hidden sizes
    user_vectors: int = 2  # UserArch output: this many embedding_dim vectors
    item_arch: tuple[int, ...] = (32,)  # item arch / item tower hidden sizes
    item_vectors: int = 2
    interaction: str = "dot"
    dcn_layers: int = 2
    dcn_rank: int = 16
    top_arch: tuple[int, ...] = (32,)
    tower_dim: int = 16  # two-tower output dim
    # HSTU
    hstu_layers: int = 2
    num_heads: int = 2
    qk_dim: int = 16  # total over heads
    v_dim: int = 16  # total over heads
    normalizer: float = 64.0  # the fixed N dividing attention (same in both layouts)
    max_history_len: int = 0  # keep the most recent events; 0 = all
    rab: bool = True
    pos_buckets: int = 64
    time_buckets: int = 32
    attention_backend: str = "torch"
    head_arch: tuple[int, ...] = (32,)

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise SpecError(msg)

        need(self.arch in ARCHS, f"model arch={self.arch!r}; allowed: {', '.join(ARCHS)}")
        need(
            self.interaction in INTERACTIONS,
            f"model interaction={self.interaction!r}; allowed: {', '.join(INTERACTIONS)}",
        )
        need(
            self.attention_backend in ATTENTION_BACKENDS,
            f"model attention_backend={self.attention_backend!r}; allowed: {', '.join(ATTENTION_BACKENDS)}",
        )
        for name in (
            "embedding_dim",
            "max_table_rows",
            "user_vectors",
            "item_vectors",
            "tower_dim",
            "num_heads",
            "qk_dim",
            "v_dim",
            "pos_buckets",
            "time_buckets",
            "dcn_rank",
        ):
            v = getattr(self, name)
            need(_is_int(v) and v >= 1, f"model {name}={v!r} must be an integer >= 1")
        for name in ("dcn_layers", "hstu_layers", "max_history_len"):
            v = getattr(self, name)
            need(_is_int(v) and v >= 0, f"model {name}={v!r} must be an integer >= 0")
        for name in ("dense_arch", "user_arch", "item_arch", "top_arch", "head_arch"):
            v = getattr(self, name)
            need(
                isinstance(v, tuple) and all(_is_int(x) and x >= 1 for x in v),
                f"model {name}={list(v) if isinstance(v, tuple) else v!r} must be a list of integers >= 1",
            )
        need(
            isinstance(self.normalizer, float) and self.normalizer > 0,
            f"model normalizer={self.normalizer!r} must be > 0",
        )
        need(isinstance(self.rab, bool), f"model rab={self.rab!r} must be true or false")
        for name in ("qk_dim", "v_dim"):
            v = getattr(self, name)
            need(
                v % self.num_heads == 0,
                f"model {name}={v} is not divisible by num_heads={self.num_heads}; "
                f"choose {name} as a multiple of num_heads",
            )

    @property
    def d_qk(self) -> int:
        return self.qk_dim // self.num_heads

    @property
    def d_v(self) -> int:
        return self.v_dim // self.num_heads

    def to_dict(self) -> dict:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise SpecError(f"model config: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        kw = {}
        for key, v in d.items():
            if isinstance(v, list):
                v = tuple(v)
            if key == "normalizer" and _is_int(v):
                v = float(v)
            kw[key] = v
        return cls(**kw)

    def with_overrides(self, assignments: list[str] | tuple[str, ...]) -> ModelConfig:
        d = self.to_dict()
        for a in assignments:
            if "=" not in a:
                raise SpecError(f"--set {a!r}: expected key=value, e.g. embedding_dim=32")
            key, raw = (x.strip() for x in a.split("=", 1))
            if key not in d:
                raise SpecError(f"--set {key}: unknown model key; allowed: {sorted(d)}")
            d[key] = parse_value(raw)
        return ModelConfig.from_dict(d)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_value(raw: str):
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if raw.startswith("["):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise SpecError(f"--set value {raw!r} is not a valid JSON list") from None
    return raw


MODEL_PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(),
    "early-ranking": ModelConfig(
        arch="dlrm",
        embedding_dim=64,
        max_table_rows=5_000_000,
        dense_arch=(128,),
        user_arch=(1024, 512),
        user_vectors=4,
        item_arch=(128,),
        item_vectors=2,
        interaction="dot",
        top_arch=(256, 64),
    ),
    "late-ranking": ModelConfig(
        arch="dlrm",
        embedding_dim=128,
        max_table_rows=5_000_000,
        dense_arch=(512, 256),
        user_arch=(),
        user_vectors=17,
        item_arch=(),
        item_vectors=10,
        interaction="dcn",
        dcn_layers=3,
        dcn_rank=512,
        top_arch=(1024, 1024, 512, 256),
    ),
    "retrieval": ModelConfig(
        arch="two_tower",
        embedding_dim=64,
        max_table_rows=5_000_000,
        dense_arch=(128,),
        user_arch=(1024, 512),
        item_arch=(256,),
        tower_dim=128,
    ),
    "hstu-ranking": ModelConfig(
        arch="hstu",
        embedding_dim=512,
        max_table_rows=1_250_000,
        dense_arch=(128,),
        hstu_layers=5,
        num_heads=4,
        qk_dim=512,
        v_dim=512,
        normalizer=512.0,
        max_history_len=256,
        rab=True,
        pos_buckets=512,
        time_buckets=32,
        head_arch=(512, 256),
    ),
}


def get_model_config(preset: str, overrides=()) -> ModelConfig:
    """The model config of the model preset `preset` (or `NAME@SCALE`: its table-row cap scaled),
    with overrides applied; an unknown name is one SpecError listing the model presets."""
    from workloads.presets import scaled_count, split_scale

    base, scale = split_scale(preset)
    if base not in MODEL_PRESETS:
        raise SpecError(f"unknown model preset {preset!r}; choose one of: {', '.join(MODEL_PRESETS)}")
    cfg = MODEL_PRESETS[base]
    if scale is not None:
        cfg = dataclasses.replace(cfg, max_table_rows=scaled_count(cfg.max_table_rows, scale))
    return cfg.with_overrides(list(overrides))
