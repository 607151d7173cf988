"""asv: the analytic cost model — projection speed and exactness against FlopCounterMode.

time_project_1e5     100,000 configs (requests/day, GPUs, impressions/request, history length)
                     through roo_ref.cost.Plan.evaluate; the issue's budget is < 1 s.
time_model_cost      one expected-value model_cost (both layouts) of a preset.
track_flop_rel_error max relative error of analytic vs counted FLOPs over every preset (reduced
                     sizes) and both layouts: must stay 0; a broken build raises instead.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import SEED, require

PRESET_NAMES = ("early-ranking", "hstu-ranking")


class Project:
    params = [PRESET_NAMES]
    param_names = ["preset"]
    timeout = 120

    def setup(self, preset):
        from roo_ref.cost import Plan
        from roo_ref.models import model_config_for
        from workloads.presets import get_preset

        spec = get_preset(preset)
        self.plan = Plan.of(spec, model_config_for(spec, preset), "h100", "bf16")
        rng = np.random.default_rng(SEED)
        n = 100_000
        self.args = (
            rng.uniform(1e8, 1e11, n),
            rng.integers(1, 1025, n).astype(float),
            rng.uniform(1, 64, n),
            rng.uniform(10, 4000, n),
        )
        out = self.plan.evaluate(*self.args)
        require(out["roo"]["gpu_hours_per_day"].shape == (n,), "projection lost its vector shape")
        require(bool(np.all(np.isfinite(out["roo"]["gpu_hours_per_day"]))), "non-finite projection")

    def time_project_1e5(self, preset):
        self.plan.evaluate(*self.args)


class ModelCost:
    params = [("tiny", "early-ranking", "late-ranking", "retrieval", "hstu-ranking")]
    param_names = ["preset"]

    def setup(self, preset):
        from roo_ref.models import model_config_for
        from workloads.presets import get_preset

        self.spec = get_preset(preset)
        self.cfg = model_config_for(self.spec, preset)

    def time_model_cost(self, preset):
        from roo_ref.cost import model_cost

        res = model_cost(self.spec, self.cfg)
        # a broken model must raise, not time garbage
        require(set(res["layouts"]) == {"impression", "roo"}, "model_cost lost a layout")
        require(res["predicted_speedup"] > 0 and res["layouts"]["roo"].total("flops") > 0, "non-positive cost")


class FlopExactness:
    timeout = 600

    def track_flop_rel_error(self):
        from roo_ref.cost import validate_preset
        from workloads.presets import PRESETS

        worst = 0.0
        for name in PRESETS:
            for r in validate_preset(name, requests=3, seed=SEED)["records"]:
                require(r["counted_flops"] > 0, f"{name}/{r['layout']}: FlopCounterMode counted nothing")
                worst = max(worst, r["rel_error"])
        require(worst == 0.0, f"analytic FLOPs differ from FlopCounterMode (max rel error {worst})")
        return worst

    track_flop_rel_error.unit = "relative error"
