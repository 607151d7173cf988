"""Reference models, each computing the same function in the impression and the ROO layout.

    build_model(spec, preset=None, overrides=(), device="cpu", dtype=torch.float32, seed=0)

`preset` is the model preset; it defaults to the workload preset of the spec's name (see
`model_config_for`: a custom spec names it explicitly).

returns a module with `.config` (ModelConfig) and `.forward(batch, layout) -> {"loss", "logits"}`
(layout "impression" takes an ImpressionBatch, "roo" a RequestBatch; logits [N, T] in the
request-grouped impression order in both).
"""

from __future__ import annotations

import torch
from torch import nn

from roo_ref.model_presets import MODEL_PRESETS, ModelConfig, get_model_config
from roo_ref.models.common import LAYOUTS
from roo_ref.models.dlrm import DLRM
from roo_ref.models.hstu import HSTUAttention, HSTURanker
from roo_ref.models.two_tower import TwoTower
from workloads.errors import SpecError, UserError
from workloads.spec import WorkloadSpec

__all__ = ["LAYOUTS", "DLRM", "HSTURanker", "TwoTower", "build_model", "check_compatible", "model_config_for"]

_ARCH = {"dlrm": DLRM, "two_tower": TwoTower, "hstu": HSTURanker}


def model_config_for(spec: WorkloadSpec, preset: str | None = None, overrides=()) -> ModelConfig:
    """The model preset `preset` (default: the one named like the spec), plus overrides.

    A spec that is not a preset (fitted, or loaded from a file) implies no model: it must name its
    model preset, e.g. `preset="tiny"`; otherwise this is one SpecError naming the spec and the
    model presets, never a silent choice."""
    if preset is None:
        # a scaled preset (NAME@SCALE) is named like its model preset, scaled the same way
        if spec.name.split("@", 1)[0] not in MODEL_PRESETS:
            raise SpecError(
                f"workload {spec.name!r} has no model preset of its name; name one explicitly "
                f"(`--model NAME`, or preset=NAME in code), one of: {', '.join(MODEL_PRESETS)}"
            )
        preset = spec.name
    return get_model_config(preset, overrides)


def check_compatible(spec: WorkloadSpec, cfg: ModelConfig) -> None:
    """Spec/model combinations the model cannot honour: one clear SpecError."""
    length = spec.history.length
    if cfg.arch == "hstu" and (length.max == 0 or (length.kind == "fixed" and length.value == 0)):
        raise SpecError(
            "model arch='hstu' needs a user history, but history.length is always 0; "
            "give history.length a distribution with positive lengths (e.g. history.length.kind=lognormal)"
        )
    if cfg.arch == "hstu" and cfg.attention_backend == "triton":
        try:
            from roo_ref.kernels.hstu_attention import SUPPORTED_HEAD_DIMS
        except ImportError as e:
            raise SpecError(f"model attention_backend='triton' needs triton, which does not import: {e}") from None
        for name, d in (("qk_dim/num_heads", cfg.d_qk), ("v_dim/num_heads", cfg.d_v)):
            if d not in SUPPORTED_HEAD_DIMS:
                raise SpecError(
                    f"model {name}={d}: the triton attention supports per-head dims "
                    f"{', '.join(map(str, SUPPORTED_HEAD_DIMS))}; use attention_backend=torch"
                )


def build_model(
    spec: WorkloadSpec,
    preset: str | None = None,
    overrides=(),
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    kernel_options=None,
) -> nn.Module:
    """The model of `preset` (with `overrides`) for `spec`, its weights seeded on `device`.
    kernel_options: the Triton attention kernel's options (HstuKernelOptions) for HSTU models."""
    cfg = model_config_for(spec, preset, overrides)
    check_compatible(spec, cfg)
    if dtype not in (torch.float32, torch.bfloat16, torch.float64, torch.float16):
        raise UserError(f"model dtype={dtype}; allowed: float32, bfloat16 (float64 for tests)")
    # Initialize on the target device under a private RNG: a seed gives the same weights on that
    # device (both layouts of a point start from the same weights). Not on the CPU and then copied:
    # the presets' tables hold GBs, and a CPU init plus copy takes ~12 s per model, twice per sweep
    # point. CPU and CUDA generators differ, so a seed's CPU and GPU weights differ.
    dev = torch.device(device)
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), dev:
        torch.manual_seed(seed)
        model = _ARCH[cfg.arch](spec, cfg)
    if kernel_options is not None:
        for m in model.modules():
            if isinstance(m, HSTUAttention):
                m.kernel_options = kernel_options
    return model.to(device=device, dtype=dtype)
