"""WorkloadSpec: what one workload's requests look like.

A spec is a frozen tree of dataclasses, validated on construction. It round-trips through a plain
dict (and so through TOML/JSON spec files), and `with_overrides(["impressions.mean=10", ...])`
applies `--set key=value` overrides by dotted path with the same validation.

Nothing a user writes is ignored without a word:
- a distribution parameter its kind does not read (`impressions.value` on a geometric
  distribution; the table is `workloads.distributions.KIND_PARAMS`) is an error naming the key, the
  kind and what the kind reads, in a spec file as in `--set`; an override that switches a kind must
  also give the parameters the new kind reads that the old one did not;
- a fixed, uniform or empirical value outside the distribution's [min, max] (clipping would
  collapse it onto the bound) is an error;
- clipping the tail of a geometric, poisson or lognormal distribution is what min/max are for, but
  when an override leaves the clipped mean more than 5% from the unclipped one, `with_overrides`
  warns (SpecWarning; `resolve_spec` prints it as one `roo-bench: warning:` line);
- an empty spec file is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from workloads.distributions import CLIP_PARAMS, KIND_PARAMS, Dist
from workloads.errors import SpecError

POPULARITY = ("uniform", "zipf")
CLIP_WARN = 0.05  # a clipped mean this far (relative) from the unclipped one is worth a warning
_MEAN_KINDS = ("geometric", "poisson", "lognormal")
_DIST_KEYS = {"kind", *CLIP_PARAMS, *(p for ps in KIND_PARAMS.values() for p in ps)}


class SpecWarning(UserWarning):
    """An override that the spec's own bounds change noticeably (see the module docstring)."""


@dataclass(frozen=True)
class SparseGroup:
    """`count` sparse features sharing the same knobs (one embedding table each)."""

    name: str = "f"
    count: int = 1
    cardinality: int = 1000
    pooling: Dist = field(default_factory=lambda: Dist(kind="fixed", value=1))
    popularity: str = "uniform"
    zipf_a: float = 1.1

    def validate(self, where: str) -> None:
        if self.count < 0:
            raise SpecError(f"{where}.count={self.count} must be >= 0")
        if self.cardinality < 1:
            raise SpecError(f"{where}.cardinality={self.cardinality} must be >= 1")
        if self.popularity not in POPULARITY:
            raise SpecError(f"{where}.popularity={self.popularity!r}; allowed: {', '.join(POPULARITY)}")
        if self.popularity == "zipf" and not self.zipf_a > 0:
            raise SpecError(f"{where}.zipf_a={self.zipf_a} must be > 0")

    def feature_names(self) -> list[str]:
        return [f"{self.name}_{i}" for i in range(self.count)]


@dataclass(frozen=True)
class HistorySpec:
    """The user's engagement history: one jagged sequence of (item id, action type, timestamp)."""

    length: Dist = field(default_factory=lambda: Dist(kind="fixed", value=0))
    item_cardinality: int = 1_000_000
    zipf_a: float = 1.2
    action_types: int = 4
    mean_gap_s: float = 3600.0

    def validate(self, where: str) -> None:
        if self.item_cardinality < 1:
            raise SpecError(f"{where}.item_cardinality={self.item_cardinality} must be >= 1")
        if not self.zipf_a > 0:
            raise SpecError(f"{where}.zipf_a={self.zipf_a} must be > 0")
        if self.action_types < 1:
            raise SpecError(f"{where}.action_types={self.action_types} must be >= 1")
        if not self.mean_gap_s > 0:
            raise SpecError(f"{where}.mean_gap_s={self.mean_gap_s} must be > 0")


@dataclass(frozen=True)
class Task:
    name: str = "click"
    base_rate: float = 0.05

    def validate(self, where: str) -> None:
        if not 0.0 <= self.base_rate <= 1.0:
            raise SpecError(f"{where}.base_rate={self.base_rate} must be in [0, 1]")


@dataclass(frozen=True)
class WorkloadSpec:
    """One workload. RO = request-only (user/context), NRO = non-request-only (item, labels)."""

    name: str = "custom"
    description: str = ""
    impressions: Dist = field(default_factory=lambda: Dist(kind="fixed", value=1, min=1))
    history: HistorySpec = field(default_factory=HistorySpec)
    user_sparse: tuple[SparseGroup, ...] = ()
    user_dense: int = 0
    item_sparse: tuple[SparseGroup, ...] = ()
    item_dense: int = 0
    tasks: tuple[Task, ...] = (Task(),)
    requests_per_batch: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.impressions.min < 1:
            raise SpecError(
                f"impressions.min={self.impressions.min}: every request has at least one impression; set min >= 1"
            )
        self.history.validate("history")
        for where, d in self.distributions():
            _check_support(d, where)
        for i, g in enumerate(self.user_sparse):
            g.validate(f"user_sparse.{i}")
        for i, g in enumerate(self.item_sparse):
            g.validate(f"item_sparse.{i}")
        for f, v in (("user_dense", self.user_dense), ("item_dense", self.item_dense)):
            if v < 0:
                raise SpecError(f"{f}={v} must be >= 0")
        if not self.tasks:
            raise SpecError("tasks is empty; give at least one label task")
        for i, t in enumerate(self.tasks):
            t.validate(f"tasks.{i}")
        if self.requests_per_batch < 1:
            raise SpecError(f"requests_per_batch={self.requests_per_batch} must be >= 1")
        if self.seed < 0:
            raise SpecError(f"seed={self.seed} must be >= 0")

    # --- derived ----------------------------------------------------------------------------
    @property
    def n_user_sparse(self) -> int:
        return sum(g.count for g in self.user_sparse)

    @property
    def n_item_sparse(self) -> int:
        return sum(g.count for g in self.item_sparse)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def user_features(self) -> list[tuple[str, SparseGroup]]:
        """(feature name, its group) for every RO sparse feature, in batch order."""
        return [(n, g) for g in self.user_sparse for n in g.feature_names()]

    def item_features(self) -> list[tuple[str, SparseGroup]]:
        return [(n, g) for g in self.item_sparse for n in g.feature_names()]

    def distributions(self) -> list[tuple[str, Dist]]:
        """(dotted path, Dist) of every distribution in the spec, as `--set` names them."""
        out = [("impressions", self.impressions), ("history.length", self.history.length)]
        for key, groups in (("user_sparse", self.user_sparse), ("item_sparse", self.item_sparse)):
            out += [(f"{key}.{i}.pooling", g.pooling) for i, g in enumerate(groups)]
        return out

    def config_hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # --- dict / file round trip ---------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "impressions": self.impressions.to_dict(),
            "history": {
                "length": self.history.length.to_dict(),
                "item_cardinality": self.history.item_cardinality,
                "zipf_a": self.history.zipf_a,
                "action_types": self.history.action_types,
                "mean_gap_s": self.history.mean_gap_s,
            },
            "user_sparse": [_group_dict(g) for g in self.user_sparse],
            "user_dense": self.user_dense,
            "item_sparse": [_group_dict(g) for g in self.item_sparse],
            "item_dense": self.item_dense,
            "tasks": [{"name": t.name, "base_rate": t.base_rate} for t in self.tasks],
            "requests_per_batch": self.requests_per_batch,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict) -> WorkloadSpec:
        if not isinstance(d, dict):
            raise SpecError(f"a workload spec must be a table/object, got {type(d).__name__}")
        top = {f.name for f in dataclasses.fields(cls)}
        _check_keys(d, top, "spec")
        kw: dict = {}
        for key, v in d.items():
            if key == "impressions":
                kw[key] = _dist_from(v, key)
            elif key == "history":
                h = _table(v, key)
                _check_keys(h, {f.name for f in dataclasses.fields(HistorySpec)}, "history")
                h = dict(h)
                if "length" in h:
                    h["length"] = _dist_from(h["length"], "history.length")
                kw[key] = HistorySpec(**_typed(HistorySpec, h, "history"))
            elif key in ("user_sparse", "item_sparse"):
                kw[key] = tuple(_group_from(x, f"{key}.{i}") for i, x in enumerate(_list(v, key)))
            elif key == "tasks":
                ts = []
                for i, x in enumerate(_list(v, key)):
                    x = _table(x, f"tasks.{i}")
                    _check_keys(x, {"name", "base_rate"}, f"tasks.{i}")
                    ts.append(Task(**_typed(Task, x, f"tasks.{i}")))
                kw[key] = tuple(ts)
            else:
                kw[key] = v
        return cls(**_typed(cls, kw, "spec"))

    def with_overrides(self, assignments: list[str], warn: Callable[[str], None] | None = None) -> WorkloadSpec:
        """Apply `--set path=value` overrides (dotted paths into to_dict(); list items by index).

        An override its distribution does not read is an error; one whose distribution the bounds
        clip noticeably is passed to `warn` (default: a SpecWarning)."""
        d = self.to_dict()
        before = {where: dict(x) for where, x in _dist_dicts(d)}
        given: list[tuple[str, str]] = []
        for a in assignments:
            if "=" not in a:
                raise SpecError(f"--set {a!r}: expected key=value, e.g. impressions.mean=10")
            path, raw = a.split("=", 1)
            _assign(d, path.strip(), _parse_value(raw.strip()))
            given.append((path.strip(), raw.strip()))
        touched = _reconcile_dists(d, before, given)
        spec = WorkloadSpec.from_dict(d)
        for msg in clip_warnings(spec, touched):
            if warn is None:
                warnings.warn(msg, SpecWarning, stacklevel=2)
            else:
                warn(msg)
        return spec

    def to_toml(self) -> str:
        import tomli_w  # only needed to write spec files (not installed on the GPU machine)

        return tomli_w.dumps(_drop_none(self.to_dict()))

    @classmethod
    def from_file(cls, path: str | Path) -> WorkloadSpec:
        p = Path(path)
        if not p.is_file():
            raise SpecError(f"spec file {p} does not exist; write one with `roo-bench fit` or copy a preset")
        text = p.read_text()
        try:
            d = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise SpecError(f"spec file {p} is not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {e}") from None
        if d == {}:  # running the built-in defaults instead would hide the mistake
            raise SpecError(
                f"spec file {p} is empty (it sets nothing); write one with `roo-bench fit` or give --preset"
            )
        return cls.from_dict(d)


# --- distributions: what each kind reads, and what clipping does --------------------------------------
def _reads(kind: str) -> str:
    return f"{', '.join(KIND_PARAMS[kind])} (and min, max, which clip every kind)"


def _dist_from(v, where: str) -> Dist:
    """A Dist from a spec file's table; a parameter its kind does not read is an error."""
    d = _table(v, where)
    kind = d.get("kind", "fixed")
    if isinstance(kind, str) and kind in KIND_PARAMS:
        ignored = sorted((set(d) & _DIST_KEYS) - {"kind", *CLIP_PARAMS, *KIND_PARAMS[kind]})
        if ignored:
            raise SpecError(
                f"{where}.{ignored[0]}: {where} is a {kind} distribution, which does not read {ignored[0]!r}; "
                f"it reads {_reads(kind)}"
            )
    return Dist.from_dict(d, name=where)


def _dist_dicts(d: dict) -> Iterator[tuple[str, dict]]:
    """(dotted path, table) of every distribution in a spec dict (what `--set` may have changed)."""
    hist = d.get("history")
    for where, x in (
        ("impressions", d.get("impressions")),
        ("history.length", hist.get("length") if isinstance(hist, dict) else None),
    ):
        if isinstance(x, dict):
            yield where, x
    for key in ("user_sparse", "item_sparse"):
        groups = d.get(key)
        for i, g in enumerate(groups if isinstance(groups, list) else []):
            if isinstance(g, dict) and isinstance(g.get("pooling"), dict):
                yield f"{key}.{i}.pooling", g["pooling"]


def _reconcile_dists(d: dict, before: dict[str, dict], given: list[tuple[str, str]]) -> set[str]:
    """Check `--set` overrides of distributions against the kind each ends up with; drop the old
    kind's parameters where an override switched kinds. Returns the distributions overridden."""
    touched = set()
    for where, dist in _dist_dicts(d):
        mine = {p[len(where) + 1 :]: raw for p, raw in given if p.startswith(where + ".")}
        if not mine:
            continue
        touched.add(where)
        kind = dist.get("kind", "fixed")
        if not isinstance(kind, str) or kind not in KIND_PARAMS:
            continue  # Dist.from_dict names the bad kind
        for key in sorted(set(dist) - {"kind", *CLIP_PARAMS, *KIND_PARAMS[kind]}):
            if key in mine:
                users = [k for k, ps in KIND_PARAMS.items() if key in ps]
                hint = f"; to switch kinds, also --set {where}.kind={'|'.join(users)}" if "kind" not in mine else ""
                raise SpecError(
                    f"--set {where}.{key}={mine[key]}: {where} is a {kind} distribution, which does not read "
                    f"{key!r}; it reads {_reads(kind)}{hint}"
                )
            del dist[key]  # a parameter of the kind this override replaced
        old = before.get(where, {})
        if "kind" in mine and kind != old.get("kind"):
            missing = [p for p in KIND_PARAMS[kind] if p not in mine and p not in old]
            if missing:
                raise SpecError(
                    f"--set {where}.kind={kind}: a {kind} distribution reads {_reads(kind)}; "
                    f"also give {', '.join(f'--set {where}.{p}=...' for p in missing)}"
                )
    return touched


def _check_support(d: Dist, where: str) -> None:
    """A fixed, uniform or empirical value outside [min, max] would be clipped onto a bound: an error."""
    values: dict[str, tuple[int, ...]]
    if d.kind == "fixed":
        values = {"value": (d.value,)}
    elif d.kind == "uniform":
        values = {"low": (d.low,), "high": (d.high,)}
    elif d.kind == "empirical":
        values = {"values": d.values}
    else:
        return
    for key, vs in values.items():
        for v in vs:
            if v < d.min or (d.max is not None and v > d.max):
                side, bound = ("max", d.max) if d.max is not None and v > d.max else ("min", d.min)
                raise SpecError(
                    f"{where}.{key}={v} is {'above' if side == 'max' else 'below'} {where}.{side}={bound}: "
                    f"the {d.kind} distribution would be clipped to {bound}; set {where}.{side}={v} "
                    f"or keep {key} within [{d.min}, {'inf' if d.max is None else d.max}]"
                )


def clip_warnings(spec: WorkloadSpec, only: set[str] | None = None) -> list[str]:
    """One line per geometric/poisson/lognormal distribution (of `only`, if given) whose [min, max]
    moves its mean by more than CLIP_WARN."""
    out = []
    for where, d in spec.distributions():
        if d.kind not in _MEAN_KINDS or (only is not None and where not in only):
            continue
        free = dataclasses.replace(d, min=0, max=None).mean()
        got = d.mean()
        if free > 0 and abs(got / free - 1) > CLIP_WARN:
            hi = "inf" if d.max is None else d.max
            out.append(
                f"{where}: the {d.kind} distribution (mean={d.mean_:g}) is clipped to [{d.min}, {hi}], "
                f"so its draws average {got:.3g}, not {free:.3g}; widen {where}.min/max to keep the mean"
            )
    return out


# --- helpers ---------------------------------------------------------------------------------------
def _group_dict(g: SparseGroup) -> dict:
    return {
        "name": g.name,
        "count": g.count,
        "cardinality": g.cardinality,
        "pooling": g.pooling.to_dict(),
        "popularity": g.popularity,
        "zipf_a": g.zipf_a,
    }


def _group_from(x, where: str) -> SparseGroup:
    x = dict(_table(x, where))
    _check_keys(x, {f.name for f in dataclasses.fields(SparseGroup)}, where)
    if "pooling" in x:
        x["pooling"] = _dist_from(x["pooling"], f"{where}.pooling")
    return SparseGroup(**_typed(SparseGroup, x, where))


def _check_keys(d: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _table(v, where: str) -> dict:
    if not isinstance(v, dict):
        raise SpecError(f"{where} must be a table/object, got {v!r}")
    return v


def _list(v, where: str) -> list:
    if not isinstance(v, list | tuple):
        raise SpecError(f"{where} must be a list, got {v!r}")
    return list(v)


_TYPES = {"int": int, "float": float, "str": str}


def _typed(cls, kw: dict, where: str) -> dict:
    """Check scalar field types (ints stay ints; an int is accepted for a float)."""
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    out = {}
    for name, v in kw.items():
        t = hints.get(name)
        want = _TYPES.get(t) if isinstance(t, str) else None
        if want is int and (isinstance(v, bool) or not isinstance(v, int)):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise SpecError(f"{where}.{name}={v!r} must be an integer")
        elif want is float:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise SpecError(f"{where}.{name}={v!r} must be a number")
            v = float(v)
        elif want is str and not isinstance(v, str):
            raise SpecError(f"{where}.{name}={v!r} must be a string")
        out[name] = v
    return out


def _parse_value(raw: str):
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if raw.lower() in ("none", "null"):
        return None
    if raw.startswith("["):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise SpecError(f"--set value {raw!r} is not a valid JSON list") from None
    return raw


def _assign(d: dict, path: str, value) -> None:
    parts = path.split(".")
    cur = d
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        here = ".".join(parts[: i + 1])
        if isinstance(cur, list):
            if not p.isdigit() or int(p) >= len(cur):
                raise SpecError(f"--set {path}: {here!r} needs an index in 0..{len(cur) - 1}")
            if last:
                cur[int(p)] = value
            else:
                cur = cur[int(p)]
            continue
        if last:
            allowed = set(cur) | _optional_keys(parts[:-1], cur)
            if p not in allowed:
                raise SpecError(f"--set {path}: unknown key {p!r}; allowed here: {sorted(allowed)}")
            cur[p] = value
        else:
            if p not in cur:
                raise SpecError(f"--set {path}: unknown key {p!r}; allowed here: {sorted(cur)}")
            cur = cur[p]


def _optional_keys(parent: list[str], cur: dict) -> set[str]:
    """Keys that a Dist accepts though its to_dict() left them out (e.g. max on an unclipped dist)."""
    if "kind" in cur:
        return {"kind", "value", "low", "high", "mean", "sigma", "a", "values", "weights", "min", "max"}
    return set()


def _drop_none(x):
    if isinstance(x, dict):
        return {key: _drop_none(v) for key, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_drop_none(v) for v in x]
    return x
