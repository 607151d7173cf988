"""Named workloads shaped like public models.

Each preset is a WorkloadSpec; the model side of a preset (layer sizes) is the model preset of the
same name in roo_ref.model_presets.
"""

from __future__ import annotations

import sys

from workloads.distributions import Dist
from workloads.errors import SpecError
from workloads.spec import HistorySpec, SparseGroup, Task, WorkloadSpec


def _d(**kw) -> Dist:
    if "mean" in kw:
        kw["mean_"] = kw.pop("mean")
    return Dist(**kw)


PRESETS: dict[str, WorkloadSpec] = {
    "tiny": WorkloadSpec(
        name="tiny",
        description="Test-sized: ~3 impressions/request, short histories, a few small tables; a CPU step in ms.",
        impressions=_d(kind="geometric", mean=3.0, min=1, max=8),
        history=HistorySpec(
            length=_d(kind="lognormal", mean=8.0, sigma=0.6, max=32), item_cardinality=1000, action_types=3
        ),
        user_sparse=(SparseGroup("user", 4, 1000, _d(kind="uniform", low=1, high=3), "zipf", 1.1),),
        user_dense=4,
        item_sparse=(SparseGroup("item", 2, 1000, _d(kind="fixed", value=1), "zipf", 1.1),),
        item_dense=2,
        tasks=(Task("click", 0.1),),
        requests_per_batch=16,
    ),
    "retrieval": WorkloadSpec(
        name="retrieval",
        description="Two-tower retrieval: heavy user side (long history, 30 user features), light item tower.",
        impressions=_d(kind="geometric", mean=10.0, min=1, max=64),
        history=HistorySpec(length=_d(kind="lognormal", mean=800.0, sigma=0.7, max=4096), item_cardinality=10_000_000),
        user_sparse=(
            SparseGroup("user", 30, 5_000_000, _d(kind="lognormal", mean=2.0, sigma=0.5, min=1), "zipf", 1.1),
        ),
        user_dense=32,
        item_sparse=(SparseGroup("item", 3, 10_000_000, _d(kind="fixed", value=1), "zipf", 1.2),),
        item_dense=4,
        tasks=(Task("click", 0.05),),
        requests_per_batch=256,
    ),
    "early-ranking": WorkloadSpec(
        name="early-ranking",
        description="Early-stage ranker: 60 user ids + 400-event history per request, 10 item ids per "
        "impression, ~10 impressions per request; most compute is user-side.",
        impressions=_d(kind="geometric", mean=10.0, min=1, max=64),
        history=HistorySpec(length=_d(kind="lognormal", mean=400.0, sigma=0.6, max=2048), item_cardinality=10_000_000),
        user_sparse=(SparseGroup("user", 20, 2_000_000, _d(kind="fixed", value=3), "zipf", 1.1),),
        user_dense=16,
        item_sparse=(SparseGroup("item", 10, 10_000_000, _d(kind="fixed", value=1), "zipf", 1.2),),
        item_dense=8,
        tasks=(Task("click", 0.05),),
        requests_per_batch=256,
    ),
    "late-ranking": WorkloadSpec(
        name="late-ranking",
        description="Late-stage ranker shaped like MLPerf DLRM-v2 (13 dense + 26 multi-hot sparse, split "
        "user/item) with DCN cross layers: a heavy per-impression interaction.",
        impressions=_d(kind="geometric", mean=6.0, min=1, max=32),
        history=HistorySpec(length=_d(kind="lognormal", mean=200.0, sigma=0.6, max=1024), item_cardinality=10_000_000),
        user_sparse=(
            SparseGroup("user", 16, 4_000_000, _d(kind="lognormal", mean=8.0, sigma=0.8, min=1, max=100), "zipf", 1.05),
        ),
        user_dense=8,
        item_sparse=(SparseGroup("item", 10, 10_000_000, _d(kind="uniform", low=1, high=5), "zipf", 1.2),),
        item_dense=5,
        tasks=(Task("click", 0.05), Task("like", 0.01), Task("share", 0.002)),
        requests_per_batch=256,
    ),
    "hstu-ranking": WorkloadSpec(
        name="hstu-ranking",
        description="Generative ranker shaped like MLPerf DLRMv3: HSTU over a ~1k-event history with 32 "
        "candidates per request appended as targets.",
        impressions=_d(kind="fixed", value=32, min=1),
        history=HistorySpec(length=_d(kind="lognormal", mean=1000.0, sigma=0.3, max=2048), item_cardinality=10_000_000),
        user_sparse=(SparseGroup("user", 8, 1_000_000, _d(kind="fixed", value=1), "zipf", 1.1),),
        user_dense=8,
        item_sparse=(SparseGroup("item", 4, 10_000_000, _d(kind="fixed", value=1), "zipf", 1.2),),
        item_dense=4,
        tasks=(Task("click", 0.1), Task("like", 0.03)),
        requests_per_batch=32,
    ),
}


def get_preset(name: str) -> WorkloadSpec:
    try:
        return PRESETS[name]
    except KeyError:
        choices = ", ".join(PRESETS)
        raise SpecError(f"unknown preset {name!r}; choose one of: {choices} (see `roo-bench presets`)") from None


def _print_warning(msg: str) -> None:
    print(f"roo-bench: warning: {msg}", file=sys.stderr)


def resolve_spec(preset: str | None = None, spec_file: str | None = None, overrides=()) -> WorkloadSpec:
    """The spec a command runs on: `--preset NAME` or `--spec FILE`, then `--set key=value` overrides.

    An override its distribution does not read is an error; one the spec's bounds clip noticeably
    prints a one-line warning on stderr (see workloads.spec)."""
    if preset and spec_file:
        raise SpecError("give either --preset or --spec, not both")
    if spec_file:
        from workloads.spec import WorkloadSpec as _W

        spec = _W.from_file(spec_file)
    elif preset:
        spec = get_preset(preset)
    else:
        raise SpecError(f"give --preset NAME (one of: {', '.join(PRESETS)}) or --spec FILE")
    return spec.with_overrides(list(overrides), warn=_print_warning) if overrides else spec
