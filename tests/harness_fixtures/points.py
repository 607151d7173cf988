"""Stand-in point functions and a stand-in model for the harness tests.

`standin_point` runs the real harness.run_point with a tiny torch model in place of roo_ref's, so
the whole measuring path (both layouts, timers, NVML degradation, record) is exercised without the
reference models. The other points misbehave on request, chosen by the model override
`behave=<what>` (model overrides are not interpreted by the sweep, only by the point):
sleep=<s>, behave=oom | oom_msg | error | sigkill | exit | hang.

Kept light at import (torch is imported lazily): each sweep point imports this in a fresh process.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict, dataclass


def _opts(config: dict) -> dict:
    return dict(o.split("=", 1) for o in config.get("model_overrides", []))


def _misbehave(config: dict) -> None:
    o = _opts(config)
    if "sleep" in o:
        time.sleep(float(o["sleep"]))
    what = o.get("behave")
    if what == "oom":
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (stand-in)")
    if what == "oom_msg":
        raise RuntimeError("CUDA out of memory. Tried to allocate 512.00 MiB (stand-in)")
    if what == "error":
        raise ValueError("stand-in failure\nsecond line")
    if what == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if what == "exit":
        os._exit(3)
    if what == "hang":
        time.sleep(3600)


def slow_point(config: dict) -> dict:
    """A valid record after `sleep=<s>` seconds (no torch): for resume / kill tests."""
    from harness.results import make_record

    _misbehave(config)
    return make_record(
        "point",
        dict(config),
        {"stand_in": True, "pid": os.getpid()},
        provenance={"seed": config.get("seed"), "stand_in": True},
    )


def standin_point(config: dict) -> dict:
    """The real run_point with the stand-in model."""
    from harness.run_point import run_point

    _misbehave(config)
    return run_point(config, builder=standin_builder)


# --- a tiny two-tower-ish model that honours both layouts ------------------------------------------
@dataclass(frozen=True)
class StandInConfig:
    dim: int = 8
    buckets: int = 257

    def to_dict(self) -> dict:
        return asdict(self)


def _model_cls():
    import torch
    from torch import nn

    class StandInModel(nn.Module):
        def __init__(self, spec, cfg: StandInConfig):
            super().__init__()
            self.config = cfg
            d = cfg.dim
            self.hist = nn.EmbeddingBag(cfg.buckets, d, mode="mean")
            self.item = nn.Embedding(cfg.buckets, d)
            self.user_mlp = nn.Sequential(nn.Linear(d + spec.user_dense, d), nn.ReLU(), nn.Linear(d, d))
            self.item_mlp = nn.Linear(d + spec.item_dense, d)
            self.head = nn.Linear(d, spec.n_tasks)

        def forward(self, batch, layout: str) -> dict:
            from workloads.jagged import offsets_from_lengths

            offs = offsets_from_lengths(batch.history_lengths)[:-1]
            h = self.hist(batch.history_item_ids % self.config.buckets, offs)
            u = self.user_mlp(torch.cat([h, batch.user_dense], 1))
            if layout == "roo":  # user side once per request, expanded to impressions after
                u = u[batch.impression_to_request()]
            item = self.item(batch.item_id % self.config.buckets)
            i = self.item_mlp(torch.cat([item, batch.item_dense], 1))
            logits = self.head(u * i)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
            return {"loss": loss, "logits": logits}

    return StandInModel


class StandInTrainer:
    def __init__(self, model, layout: str):
        import torch

        self.model, self.layout = model, layout
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(self, batch):
        self.opt.zero_grad(set_to_none=True)
        loss = self.model(batch, self.layout)["loss"]
        loss.backward()
        self.opt.step()
        return loss.detach()


def standin_builder(spec, pc, layout: str):
    import torch

    torch.manual_seed(pc.seed)
    model = _model_cls()(spec, StandInConfig()).to(pc.device)
    return model, StandInTrainer(model, layout)
