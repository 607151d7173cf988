"""Named workloads shaped like public models, at the per-GPU shape those models train with.

Each preset is a WorkloadSpec; the model side of a preset (layer sizes) is the model preset of the
same name in roo_ref.model_presets. `SOURCES[name]` names the public configs a preset's numbers come
from (per-GPU batch, feature counts, table sizes, embedding dims, impressions per request, history
lengths) and says which numbers are assumptions; `roo-bench presets` prints them.

Production shape is a GPU shape (8,192 impressions per step, tables of millions of rows). Any preset
shrinks for CPU demos and tests with a scale suffix: `NAME@SCALE` (0 < SCALE <= 1) multiplies the
requests per step and every table's rows by SCALE (`late-ranking@0.01`: 8 requests, 50k-row tables);
the distributions per request (impressions, history, pooling) stay the same. `tiny` is CPU-sized.

The shapes before production shape (256 requests per step, 500k-row tables) are not presets any
more: every committed record carries its own resolved spec and model (`config.spec`,
`config.model`), which is what the report reads.
"""

from __future__ import annotations

import dataclasses
import math
import sys

from workloads.distributions import Dist
from workloads.errors import SpecError
from workloads.spec import HistorySpec, SparseGroup, Task, WorkloadSpec


def _d(**kw) -> Dist:
    if "mean" in kw:
        kw["mean_"] = kw.pop("mean")
    return Dist(**kw)


# MLPerf Training DLRM-v2 (Criteo 1TB multi-hot): the 26 sparse features' table rows and fixed
# multi-hot sizes, in Criteo order C1..C26, ids drawn uniformly (multi_hot_distribution_type uniform).
DLRM_V2_ROWS = (
    40_000_000, 39_060, 17_295, 7_424, 20_265, 3, 7_122, 1_543, 63, 40_000_000, 3_067_956, 405_282, 10,
    2_209, 11_938, 155, 4, 976, 14, 40_000_000, 40_000_000, 40_000_000, 590_152, 12_973, 108, 36,
)  # fmt: skip
DLRM_V2_HOT = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1)
# Criteo's features are anonymous; the request/item split is an assumption: C1..C10 describe the
# item (25 ids per impression), C11..C26 the request (189 ids per request), so the user side
# carries most lookups, as the ROO paper describes production rankers.
N_ITEM_FEATURES = 10


def _criteo(first: int, last: int) -> tuple[SparseGroup, ...]:
    return tuple(
        SparseGroup(f"c{i + 1}", 1, DLRM_V2_ROWS[i], _d(kind="fixed", value=DLRM_V2_HOT[i]), "uniform")
        for i in range(first, last)
    )


DLRM_V2_USER = _criteo(N_ITEM_FEATURES, 26)
DLRM_V2_ITEM = _criteo(0, N_ITEM_FEATURES)
# ~10 impressions per request (ROO paper), clipped at 64; 820 requests make ~8,192 impressions per
# step, DLRM-v2's per-GPU batch.
K_FEED = _d(kind="geometric", mean=10.0, min=1, max=64)
DLRM_REQUESTS = 820

SRC_DLRM_V2 = (
    "MLPerf Training DLRM-v2 (DCNv2, Criteo 1TB multi-hot): 13 dense + 26 sparse, dim 128, bottom "
    "512-256-128, DCN 3 layers rank 512, top 1024-1024-512-256-1, global batch 65,536 = 8,192 per GPU on 8"
)
SRC_DLRM_V2_TABLES = (
    "MLPerf DLRM-v2 tables: 26 tables of 3 to 40,000,000 rows (five of 40M), multi-hot sizes 1 to 100 "
    "(C21: 100, C22: 27), ids uniform; 204M rows x 128 fp32 = 104 GB, sharded over 8 GPUs"
)
SRC_ROO = "ROO paper arXiv 2508.05640: ~10 impressions per request in feeds"
SRC_HSTU = (
    "MLPerf DLRMv3 / generative-recommenders HSTU ranker: 5 layers, 4 heads, d_qk = d_v = 128, dim 512, "
    "32 candidates per request"
)
SRC_HSTU_BATCH = "MLPerf DLRMv3: 64 requests per GPU, up to 32 candidates each, histories of 1k-16k events"
SRC_GR_TABLES = (
    "generative-recommenders dlrm_v3/configs.py: 10,000,000-row hashed id tables (post / item, owner, "
    "viewer); the candidates carry item and owner ids"
)
SRC_DLRM_V4 = "MLPerf DLRMv4: 1,024 samples per rank at L = 4,096"
PER_GPU_ROWS = (
    "per-GPU table rows: each table capped at its largest source table / 8 (one GPU's share of "
    "8-way row-wise sharding), ids hashed modulo the cap"
)


def _dlrm_v2_with_history(name: str, description: str) -> WorkloadSpec:
    """retrieval and early-ranking: DLRM-v2's features and batch plus a ~1k-event pooled history;
    their models (roo_ref.model_presets) differ."""
    return WorkloadSpec(
        name=name,
        description=description,
        impressions=K_FEED,
        history=HistorySpec(
            length=_d(kind="lognormal", mean=1000.0, sigma=0.6, min=1, max=4096), item_cardinality=40_000_000
        ),
        user_sparse=DLRM_V2_USER,
        user_dense=8,
        item_sparse=DLRM_V2_ITEM,
        item_dense=5,
        tasks=(Task("click", 0.05),),
        requests_per_batch=DLRM_REQUESTS,
    )


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
    "retrieval": _dlrm_v2_with_history(
        "retrieval",
        "Two-tower retrieval on DLRM-v2's features: ~8,192 impressions per step, 189 request ids "
        "+ a ~1k-event pooled history per request, a light item tower; in-batch negatives.",
    ),
    "early-ranking": _dlrm_v2_with_history(
        "early-ranking",
        "Early-stage ranker on DLRM-v2's features: ~8,192 impressions per step, 189 request ids + "
        "a ~1k-event pooled history per request, 25 item ids per impression; most compute is user-side.",
    ),
    "late-ranking": WorkloadSpec(
        name="late-ranking",
        description="Late-stage ranker = MLPerf DLRM-v2 (13 dense + 26 multi-hot sparse, DCN-v2, 8,192 "
        "impressions per GPU) with its features split request/item: a heavy per-impression interaction.",
        impressions=K_FEED,
        history=HistorySpec(length=_d(kind="fixed", value=0), item_cardinality=40_000_000),
        user_sparse=DLRM_V2_USER,
        user_dense=8,
        item_sparse=DLRM_V2_ITEM,
        item_dense=5,
        tasks=(Task("click", 0.05),),
        requests_per_batch=DLRM_REQUESTS,
    ),
    "hstu-ranking": WorkloadSpec(
        name="hstu-ranking",
        description="Generative ranker shaped like MLPerf DLRMv3: HSTU over 1k-16k-event histories (the model "
        "keeps the last 256) with 32 candidates per request appended as targets, 64 requests per GPU.",
        impressions=_d(kind="fixed", value=32, min=1),
        history=HistorySpec(
            length=_d(kind="lognormal", mean=3000.0, sigma=0.8, max=16384), item_cardinality=10_000_000
        ),
        user_sparse=(SparseGroup("viewer", 1, 10_000_000, _d(kind="fixed", value=1), "zipf", 1.1),),
        user_dense=8,
        item_sparse=(SparseGroup("owner", 1, 10_000_000, _d(kind="fixed", value=1), "zipf", 1.2),),
        item_dense=4,
        tasks=(Task("click", 0.1), Task("like", 0.03)),
        requests_per_batch=64,
    ),
}

_ASSUMED_DLRM = (
    "assumption: C1..C10 are item features, C11..C26 request features; the 13 dense features split 8 "
    "request / 5 item; one click task"
)
_ASSUMED_HISTORY = (
    "assumption: a pooled history of lognormal length, mean 1,000 (DLRMv3's lower end), clipped at "
    "4,096 (DLRMv4's L); the history item table hashed like DLRM-v2's 40M-row tables"
)
SOURCES: dict[str, tuple[str, ...]] = {
    "tiny": ("none: a test-sized workload for CPU runs",),
    "retrieval": (
        SRC_DLRM_V2,
        SRC_DLRM_V2_TABLES,
        SRC_ROO,
        SRC_DLRM_V4,
        PER_GPU_ROWS,
        _ASSUMED_DLRM,
        _ASSUMED_HISTORY,
        "assumption: a two-tower model (dim 64, user tower 1024-512-128, item tower 256-128) on those features",
    ),
    "early-ranking": (
        SRC_DLRM_V2,
        SRC_DLRM_V2_TABLES,
        SRC_ROO,
        SRC_DLRM_V4,
        PER_GPU_ROWS,
        _ASSUMED_DLRM,
        _ASSUMED_HISTORY,
        "assumption: a smaller ranker than DLRM-v2 (dim 64, UserArch 1024-512 to 4 vectors, dot interaction)",
    ),
    "late-ranking": (
        SRC_DLRM_V2,
        SRC_DLRM_V2_TABLES,
        SRC_ROO,
        PER_GPU_ROWS,
        _ASSUMED_DLRM,
        "DLRM-v2 has no user history (history length 0); its DCN width 27 x 128 is kept as 17 request "
        "+ 10 item vectors, each side projected by one linear layer (assumption)",
    ),
    "hstu-ranking": (
        SRC_HSTU,
        SRC_HSTU_BATCH,
        SRC_GR_TABLES,
        PER_GPU_ROWS,
        "assumption: history length lognormal, mean 3,000, sigma 0.8 (most of it within 1k-16k), clipped at "
        "16,384; the model keeps the most recent 256 events so that the impression layout (64 x 32 "
        "sequences) fits 80 GB",
        "assumption: 8 request and 4 item dense features; click and like tasks",
    ),
}


# --- scaled presets (NAME@SCALE) ---------------------------------------------------------------------
def split_scale(name: str) -> tuple[str, float | None]:
    """('late-ranking', 0.01) for 'late-ranking@0.01'; (name, None) without a suffix. A bad scale is
    one SpecError."""
    base, sep, raw = name.partition("@")
    if not sep:
        return name, None
    try:
        scale = float(raw)
    except ValueError:
        scale = math.nan
    if not 0 < scale <= 1:  # NaN fails too
        raise SpecError(
            f"preset {name!r}: the scale after '@' must be a number in (0, 1], e.g. {base or 'late-ranking'}@0.01"
        )
    return base, scale


def scaled_count(n: int, scale: float) -> int:
    """round(n * scale), at least 1: requests per step and table rows of a scaled preset."""
    return max(1, round(n * scale))


def scale_spec(spec: WorkloadSpec, scale: float, name: str | None = None) -> WorkloadSpec:
    """`spec` with requests per step and every table's cardinality multiplied by `scale`; the
    per-request distributions are unchanged."""

    def group(g: SparseGroup) -> SparseGroup:
        return dataclasses.replace(g, cardinality=scaled_count(g.cardinality, scale))

    hist = dataclasses.replace(spec.history, item_cardinality=scaled_count(spec.history.item_cardinality, scale))
    return dataclasses.replace(
        spec,
        name=name or f"{spec.name}@{scale:g}",
        history=hist,
        user_sparse=tuple(group(g) for g in spec.user_sparse),
        item_sparse=tuple(group(g) for g in spec.item_sparse),
        requests_per_batch=scaled_count(spec.requests_per_batch, scale),
    )


def shape_summary(spec: WorkloadSpec) -> dict:
    """The numbers that size a step of `spec` (expected values from its distributions)."""
    k = spec.impressions.mean()

    def ids(groups: tuple[SparseGroup, ...]) -> float:
        return sum(g.count * g.pooling.mean() for g in groups)

    return {
        "requests_per_step": spec.requests_per_batch,
        "impressions_per_request": k,
        "impressions_per_step": spec.requests_per_batch * k,
        "history_length_mean": spec.history.length.mean(),
        "history_length_max": spec.history.length.max,
        "user_sparse_features": spec.n_user_sparse,
        "user_ids_per_request": ids(spec.user_sparse),
        "user_dense": spec.user_dense,
        "item_sparse_features": spec.n_item_sparse,
        "item_ids_per_impression": ids(spec.item_sparse),
        "item_dense": spec.item_dense,
        "tasks": spec.n_tasks,
    }


def preset_sources(name: str) -> tuple[str, ...]:
    """Where a preset's (or a scaled preset's) numbers come from."""
    base, scale = split_scale(name)
    get_preset(base)  # unknown name: the usual error
    out = SOURCES[base]
    return out if scale is None else (*out, f"scaled by {scale:g}: requests per step and table rows")


def get_preset(name: str) -> WorkloadSpec:
    """The preset `name`, or `NAME@SCALE`: that preset scaled down (see the module docstring)."""
    base, scale = split_scale(name)
    try:
        spec = PRESETS[base]
    except KeyError:
        choices = ", ".join(PRESETS)
        raise SpecError(f"unknown preset {name!r}; choose one of: {choices} (see `roo-bench presets`)") from None
    return spec if scale is None else scale_spec(spec, scale, name)


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
