"""Map a log of any schema onto a WorkloadSpec: each column to a feature of the spec, by its role
(workloads.roles) and Arrow type, with statistics gathered in one streaming pass.

    role / type                                   spec feature
    request key                                   request_id (bytes only)
    history item ids (+ timestamps, actions)      history: length distribution, item cardinality,
                                                  popularity, mean gap, action types
    RO int / string / bool                        user_sparse group, pooling 1, fitted cardinality
    RO list of ids (not the history)              user_sparse group, pooling = the list lengths
    RO float / fixed-width list of floats         user_dense, 1 or the list's width
    NRO column named item_id (else the first id)  item_id (its ids join the history's item space)
    NRO int / string / list of ids / float        item_sparse / item_dense, as on the RO side
    label (0/1, or a fixed list of them)          tasks, base rate = the positive rate
    timestamp                                     (bytes only: the spec's requests carry a time)
    anything else                                 dropped, with a line saying why

Storage: the spec stores every feature in roo-bench's widths (int64 ids, float32 dense, a history
element of id + action + time), so its bytes differ from the log's where the log's types differ
(strings, float64, no actions column, a per-impression timestamp). The storage ratio
k(U+I)/(U+kI) depends on the request-only (U) and per-impression (I) bytes, so when the spec's
predicted ratio misses the log's by more than BALANCE_TOLERANCE the fit adds float32 dense
features on one side ("byte balance", reported with its width) until the two agree.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workloads.convert_rows import CONFLICT_POLICIES, OUT_KEY
from workloads.distributions import Dist
from workloads.errors import UserError
from workloads.fit_counts import fit_counts, popularity
from workloads.log_input import LogInput, check_key, open_log
from workloads.log_pass import (
    Profile,
    Tick,
    profile_columns,
    request_batches,
    request_bytes,
    request_level_roles,
    to_request_lists,
)
from workloads.log_sketch import Distinct, Sample, hash64
from workloads.roles import RoleOptions, Roles, infer_roles, mapping_lines
from workloads.spec import HistorySpec, SparseGroup, Task, WorkloadSpec
from workloads.storage import predicted_uncompressed_ratio

BALANCE_TOLERANCE = 0.02  # relative storage-ratio error above which the byte balance is applied
MAX_BALANCE = 1 << 16  # float32 features the balance may add
COUNT_CAP = 1 << 21  # per-request counts kept (a uniform sample beyond)
VALUE_CAP = 1 << 17  # ids kept per column for the popularity fit
SPARSE_FAMILIES = ("int", "string", "bool", "temporal")
ID_LISTS = ("list_int", "list_string", "list_bool", "list_temporal")


@dataclass
class Planned:
    """Where one column goes in the spec."""

    column: str
    feature: (
        str  # user_sparse | user_dense | item_sparse | item_dense | item_id | history_* | label | bytes_only | dropped
    )
    width: int = 1
    why: str = ""


def plan_features(roles: Roles, prof: Profile) -> dict[str, Planned]:
    plan: dict[str, Planned] = {}
    hist = roles.history or ("", "", "")
    item_id = _item_id_column(roles, prof)
    for c, cp in prof.columns.items():
        side = "user" if c in roles.ro else "item"
        if c in hist and c:
            plan[c] = Planned(c, ("history_ids", "history_timestamps", "history_actions")[hist.index(c)])
        elif c in roles.labels:
            w = (cp.list_len_max or 1) if cp.is_list else 1
            plan[c] = Planned(c, "label", w)
        elif c == roles.timestamp:
            plan[c] = Planned(c, "bytes_only", why="the event time is not a model feature; its bytes are counted")
        elif c == item_id:
            plan[c] = Planned(c, "item_id")
        elif cp.family in SPARSE_FAMILIES or cp.family in ID_LISTS:
            plan[c] = Planned(c, f"{side}_sparse")
        elif cp.family == "float":
            plan[c] = Planned(c, f"{side}_dense")
        elif cp.family == "list_float" and cp.list_len_min == cp.list_len_max and cp.list_len_min:
            plan[c] = Planned(c, f"{side}_dense", int(cp.list_len_min))
        elif cp.family == "list_float":
            plan[c] = Planned(
                c,
                "dropped",
                why=f"float lists of varying length ({cp.list_len_min}..{cp.list_len_max}) have no spec feature; "
                "their bytes are counted",
            )
        else:
            plan[c] = Planned(c, "dropped", why=f"type {cp.type} has no spec feature; its bytes are counted")
    return plan


def _item_id_column(roles: Roles, prof: Profile) -> str | None:
    cands = [
        c
        for c in roles.nro
        if c not in roles.labels and c != roles.timestamp and prof.columns[c].family in ("int", "string")
    ]
    for c in cands:
        if c.lower() in ("item_id", "itemid", "item"):
            return c
    named = [c for c in cands if "item" in c.lower()]
    return named[0] if named else (cands[0] if cands else None)


class LogStats:
    """The statistics of one streaming pass over request-level batches, for `fit_spec`."""

    def __init__(self, roles: Roles, prof: Profile):
        self.roles, self.prof = roles, prof
        self.plan = plan_features(roles, prof)
        self.k = Sample(COUNT_CAP, 1, np.int32)
        self.lengths: dict[str, Sample] = {}
        self.distinct: dict[str, Distinct] = {}
        self.ids: dict[str, Sample] = {}
        self.label_pos: dict[str, np.ndarray] = {}
        self.gap_sum, self.gap_n, self.actions_max = 0.0, 0, -1
        self.bytes = {"impression": 0.0, "request": 0.0}
        for i, (c, p) in enumerate(self.plan.items()):
            if p.feature.endswith("_sparse") or p.feature in ("item_id", "history_ids"):
                self.lengths[c] = Sample(COUNT_CAP, 100 + i, np.int32)
                self.distinct[c] = Distinct()
                self.ids[c] = Sample(VALUE_CAP, 200 + i, np.int64)

    def add(self, t: pa.Table, k: np.ndarray, imp_bytes: float) -> None:
        """One request-level batch, its impressions per request and its impression-level bytes."""
        self.k.add(k)
        ro = set(self.roles.ro) | {self.prof.key}
        self.bytes["impression"] += imp_bytes
        self.bytes["request"] += request_bytes(t)
        for c, p in self.plan.items():
            col = t.column(c).combine_chunks() if t.column(c).num_chunks != 1 else t.column(c).chunk(0)
            if c not in ro:  # per impression
                col = col.flatten()
            if c in self.lengths:
                self._sparse(c, col)
            elif p.feature == "label":
                self._label(c, col, p.width)
            elif p.feature == "history_timestamps":
                self._gaps(col)
            elif p.feature == "history_actions":
                v = col.flatten().drop_null().to_numpy(zero_copy_only=False)
                if v.size:
                    self.actions_max = max(self.actions_max, int(v.max()))

    def _sparse(self, c: str, col: pa.Array) -> None:
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
            lens = col.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
            vals = col.flatten()
        else:
            lens = np.where(col.is_null().to_numpy(zero_copy_only=False), 0, 1)
            vals = col.drop_null()
        self.lengths[c].add(np.asarray(lens, dtype=np.int32))
        h = hash64(vals.drop_null()) if len(vals) else np.zeros(0, dtype=np.uint64)
        self.distinct[c].add(h)
        self.ids[c].add(h.view(np.int64))

    def _label(self, c: str, col: pa.Array, width: int) -> None:
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
            v = col.flatten().cast(pa.float64()).fill_null(0).to_numpy(zero_copy_only=False).reshape(-1, width)
        else:
            v = col.cast(pa.float64()).fill_null(0).to_numpy(zero_copy_only=False).reshape(-1, 1)
        self.label_pos[c] = self.label_pos.get(c, np.zeros(v.shape[1])) + v.sum(axis=0)

    def _gaps(self, col: pa.Array) -> None:
        lens = col.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        v = col.flatten().cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        if v.size < 2:
            return
        d = np.diff(v)
        same = np.ones(d.size, dtype=bool)
        ends = np.cumsum(lens)[:-1] - 1
        same[ends[(ends >= 0) & (ends < d.size)]] = False
        pos = d[same & (d > 0)]
        self.gap_sum += float(pos.sum())
        self.gap_n += int(pos.size)


# --- the spec -------------------------------------------------------------------------------------------
def _group(st: LogStats, c: str, report: dict) -> SparseGroup:
    lens = st.lengths[c].values
    pooling, rep = fit_counts(lens, f"{c}.pooling", ("fixed", "poisson", "lognormal"))
    card = max(1, st.distinct[c].estimate())
    pop, a = popularity(st.ids[c].values, card)
    report[c] |= {"pooling": rep["chosen"], "pooling_mean": float(st.lengths[c].mean), "cardinality": card}
    report[c] |= {"popularity": pop, "zipf_a": a}
    return SparseGroup(c, 1, card, dataclasses.replace(pooling, _name=f"{c}.pooling"), pop, a)


def _history(st: LogStats, report: dict) -> HistorySpec:
    hist = st.roles.history
    item = next((c for c, p in st.plan.items() if p.feature == "item_id"), None)
    if hist is None:
        report["history_length"] = {"chosen": "fixed", "mean": 0.0, "candidates": {}}
        return HistorySpec(length=Dist(kind="fixed", value=0, _name="history.length"), item_cardinality=1)
    ids = hist[0]
    length, report["history_length"] = fit_counts(
        st.lengths[ids].values, "history.length", ("fixed", "lognormal", "poisson", "zipf")
    )
    d = st.distinct[ids].merge(st.distinct[item]) if item else st.distinct[ids]
    values = np.concatenate([st.ids[ids].values] + ([st.ids[item].values] if item else []))
    card = max(1, d.estimate())
    _, zipf_a = popularity(values, card)
    return HistorySpec(
        length=length,
        item_cardinality=card,
        zipf_a=zipf_a,
        action_types=st.actions_max + 1 if st.actions_max >= 0 else 1,
        mean_gap_s=st.gap_sum / st.gap_n if st.gap_n else 3600.0,
    )


def fit_spec(st: LogStats, name: str = "fitted") -> tuple[WorkloadSpec, dict]:
    """The spec of the statistics, and its report (goodness of fit, where every column went, the
    storage ratio of the log and of the spec)."""
    if st.k.seen == 0:
        raise UserError("the log has no requests; nothing to fit")
    report: dict = {"columns": {c: {"feature": p.feature} for c, p in st.plan.items()}}
    imp, rep_imp = fit_counts(st.k.values, "impressions", ("fixed", "geometric", "poisson", "lognormal", "zipf"))
    report["impressions"] = rep_imp
    imp = dataclasses.replace(imp, min=max(1, imp.min))
    history = _history(st, report)
    sides: dict[str, list] = {"user_sparse": [], "item_sparse": [], "user_dense": [0], "item_dense": [0]}
    for c, p in st.plan.items():
        if p.feature in ("user_sparse", "item_sparse"):
            sides[p.feature].append(_group(st, c, report["columns"]))
        elif p.feature in ("user_dense", "item_dense"):
            sides[p.feature][0] += p.width
            report["columns"][c]["width"] = p.width
        if p.why:
            report["columns"][c]["why"] = p.why
    if st.roles.history is None:
        report["notes"] = ["the log has no history sequence: the spec's history length is 0"]
    tasks = tuple(
        Task(c if st.plan[c].width == 1 else f"{c}_{j}", float(pos[j] / max(1.0, st.k.total)))
        for c, pos in st.label_pos.items()
        for j in range(pos.size)
    ) or (Task(),)
    spec = WorkloadSpec(
        name=name,
        description=f"fitted to {st.k.seen} requests / {int(st.k.total)} impressions",
        impressions=imp,
        history=history,
        user_sparse=tuple(sides["user_sparse"]),
        user_dense=sides["user_dense"][0],
        item_sparse=tuple(sides["item_sparse"]),
        item_dense=sides["item_dense"][0],
        tasks=tasks,
    )
    spec, report["storage"] = balance_bytes(spec, st.bytes)
    report["data"] = {
        "requests": st.k.seen,
        "impressions": int(st.k.total),
        "impressions_per_request": st.k.mean,
        "history_length_mean": st.lengths[st.roles.history[0]].mean if st.roles.history else 0.0,
    }
    report["spec_means"] = {"impressions_per_request": imp.mean(), "history_length": history.length.mean()}
    report["dropped"] = [f"{c}: {p.why}" for c, p in st.plan.items() if p.feature in ("dropped", "bytes_only")]
    return spec, report


def balance_bytes(spec: WorkloadSpec, log_bytes: dict[str, float]) -> tuple[WorkloadSpec, dict]:
    """Add float32 dense features on one side so the spec's predicted storage ratio meets the log's
    (see the module docstring); the spec unchanged when it is within BALANCE_TOLERANCE already."""
    target = log_bytes["impression"] / log_bytes["request"] if log_bytes["request"] else 0.0
    before = predicted_uncompressed_ratio(spec)
    out: dict[str, Any] = {"log_uncompressed_ratio": target, "log_bytes": dict(log_bytes)}
    out |= {"spec_ratio_before_balance": before, "balance": None}
    if target and abs(before / target - 1) > BALANCE_TOLERANCE:
        lower = before > target  # the spec's ratio is too high: add per-impression bytes, else RO bytes
        side = "item_dense" if lower else "user_dense"
        hi = 1
        while hi < MAX_BALANCE and (_ratio_with(spec, side, hi) > target) == lower:
            hi *= 2
        lo = hi // 2
        while hi - lo > 1:  # the ratio is monotonic in the added width: bisect
            mid = (lo + hi) // 2
            if (_ratio_with(spec, side, mid) > target) == lower:
                lo = mid
            else:
                hi = mid
        best = min((lo, hi), key=lambda n: abs(_ratio_with(spec, side, n) / target - 1))
        if best:
            spec = dataclasses.replace(spec, **{side: getattr(spec, side) + best})
            out["balance"] = {
                "feature": side,
                "added": best,
                "why": "the spec stores roo-bench's widths (int64 ids, float32 dense, a history element of id, "
                "action and time); these float32 features keep the log's request-only vs per-impression bytes",
            }
    out["spec_predicted_ratio"] = predicted_uncompressed_ratio(spec)
    out["error"] = out["spec_predicted_ratio"] / target - 1 if target else None
    return spec, out


def _ratio_with(spec: WorkloadSpec, side: str, n: int) -> float:
    return predicted_uncompressed_ratio(dataclasses.replace(spec, **{side: getattr(spec, side) + n}))


# --- the whole fit, streaming -----------------------------------------------------------------------------
SORT_BUDGET = 64 << 20  # bytes of input per partition of convert's external sort (bounds its memory)
Progress = Callable[[str, int], Tick]  # (stage, total requests) -> tick(requests done)
Sink = Callable[[pa.Table, np.ndarray, Roles], None]  # (request-level batch, impressions per request, roles)


@dataclass
class LogFit:
    """Everything one pass over a log found: the spec and its report, the roles and the profile,
    the RO conflicts and convert's counters (None for a request-level input)."""

    spec: WorkloadSpec
    report: dict
    roles: Roles
    profile: Profile
    log: LogInput
    conflicts: dict[str, int] = field(default_factory=dict)
    convert: dict | None = None

    def mapping(self) -> list[str]:
        """One line per column: name, type, role, and where it went in the spec."""
        lines = mapping_lines(self.roles, self.profile)
        w = max(len(line) for line in lines)
        for i, c in enumerate(self.profile.columns, start=1):
            col = self.report["columns"][c]
            detail = f" x{col['width']}" if col.get("width", 1) > 1 else ""
            if "cardinality" in col:
                detail = f", ~{col['cardinality']} ids, pooling {col['pooling_mean']:.3g}"
            lines[i] = f"{lines[i]:<{w}}  -> {col['feature']}{detail}"
        return lines


def conflicts_of(roles: Roles, prof: Profile, policy: str) -> dict[str, int]:
    """Requests in which each RO column varies; a UserError under policy `error` when any does."""
    out = {c: prof.columns[c].varying for c in roles.ro if prof.columns[c].varying}
    if out and policy == "error":
        c = next(iter(out))
        more = f" (and {len(out) - 1} more column(s): {', '.join(list(out)[1:])})" if len(out) > 1 else ""
        raise UserError(
            f"RO column {c!r} differs within {out[c]} request(s), e.g. {roles.request_key}="
            f"{prof.columns[c].example!r}{more}; drop it from --ro-columns or pass --on-conflict first"
        )
    return out


def fit_log(
    path: str | Path,
    request_key: str,
    opts: RoleOptions = RoleOptions(),
    on_conflict: str = "error",
    work_dir: str | Path | None = None,
    budget: int = SORT_BUDGET,
    progress: Progress | None = None,
    sink: Sink | None = None,
    name: str = "fitted",
) -> LogFit:
    """Fit a spec to the log at `path` in a bounded number of streaming passes (see
    workloads.log_pass); `sink` sees every request-level batch of the final pass (analyze writes
    them); `progress(stage, total)` gives a tick per long stage. Temp files go to `work_dir`
    (default: the system's) and are removed."""
    if on_conflict not in CONFLICT_POLICIES:
        raise UserError(f"--on-conflict {on_conflict!r}; allowed: {', '.join(CONFLICT_POLICIES)}")
    log = open_log(path, None)
    tmp = Path(tempfile.mkdtemp(prefix="roo-fit-", dir=work_dir))
    try:
        conv = None
        if log.request_level:
            _, collapsed = request_level_roles(log)
            source_key = str((log.manifest or {}).get("request_key") or OUT_KEY)
            if request_key not in (OUT_KEY, source_key):
                raise UserError(f"{log.path} is request level with key {source_key!r}; pass --request-key {source_key}")
            data = log.files[0]
        else:
            check_key(log, request_key)
            collapsed, source_key = frozenset(), request_key
            tick = progress("convert: rows read (twice when unsorted)", 2 * log.rows) if progress else None
            data, res = to_request_lists(log, request_key, tmp, budget, tick)
            conv = res.to_dict()
        requests = pq.read_metadata(data).num_rows
        prof = profile_columns(data, OUT_KEY, source_key, collapsed, progress and progress("profile", requests))
        roles = infer_roles(prof, opts)
        conflicts = conflicts_of(roles, prof, on_conflict)
        st = LogStats(roles, prof)
        tick = progress and progress("fit", requests)
        for t, k, imp_bytes in request_batches(data, OUT_KEY, roles.ro, collapsed, tick):
            st.add(t, k, imp_bytes)
            if sink is not None:
                sink(t, k, roles)
        spec, report = fit_spec(st, name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["roles"] = roles.to_dict()
    report["conflicts"] = {"policy": on_conflict, "requests_by_column": conflicts, "total": sum(conflicts.values())}
    return LogFit(spec, report, roles, prof, log, conflicts, conv)
