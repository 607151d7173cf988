"""Integer count distributions (impressions per request, history length, pooling factors).

A `Dist` is a frozen, validated description; `sample(rng, n)` draws `n` integers with numpy's
Generator (vectorized, no per-row Python), clipped to [min, max]. `mean()` is the expected value
*after* clipping, computed exactly on the (finite) support where one exists, so that the analytic
cost model and the generator agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
import torch
from scipy import stats

from workloads.errors import SpecError

KINDS = ("fixed", "uniform", "geometric", "poisson", "lognormal", "zipf", "powerlaw", "empirical")

# The parameters each kind reads, as spec files name them; `min` and `max` (CLIP_PARAMS) clip every
# kind. Spec files and `--set` overrides are checked against this table (workloads.spec), so a
# parameter the kind ignores is an error rather than a silent no-op.
KIND_PARAMS: dict[str, tuple[str, ...]] = {
    "fixed": ("value",),
    "uniform": ("low", "high"),
    "geometric": ("mean",),
    "poisson": ("mean",),
    "lognormal": ("mean", "sigma"),
    "zipf": ("a",),
    "powerlaw": ("a", "low"),
    "empirical": ("values", "weights"),
}
CLIP_PARAMS = ("min", "max")

# Where no explicit max is given, the support used for exact means is cut here (the mass beyond
# it is negligible for every preset and gets folded into the last value, as clipping does).
_SUPPORT_CAP = 1 << 20


@dataclass(frozen=True)
class Dist:
    """A distribution of non-negative integer counts.

    kind       parameters used
    fixed      value
    uniform    low, high (inclusive)
    geometric  mean (>= 1; support 1, 2, ...)
    poisson    mean
    lognormal  mean, sigma (of the underlying normal); rounded to the nearest integer
    zipf       a (> 1), support 1, 2, ...
    powerlaw   a (> 1), low (>= 1): a discrete Pareto, P(x) ~ x^-a for x >= low
    empirical  values, weights (a histogram)
    min / max clip every kind (max=None: no upper clip).
    """

    kind: str = "fixed"
    value: int = 1
    low: int = 0
    high: int = 0
    mean_: float = 1.0
    sigma: float = 0.5
    a: float = 2.0
    values: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    min: int = 0
    max: int | None = None
    _name: str = field(default="dist", compare=False, repr=False)

    def __post_init__(self) -> None:
        n = self._name
        if self.kind not in KINDS:
            raise SpecError(f"{n}.kind={self.kind!r} is not a distribution; allowed: {', '.join(KINDS)}")
        if self.min < 0:
            raise SpecError(f"{n}.min={self.min} must be >= 0")
        if self.max is not None and self.max < self.min:
            raise SpecError(f"{n}.max={self.max} is below {n}.min={self.min}; set max >= min")
        kind = self.kind
        if kind == "fixed" and self.value < 0:
            raise SpecError(f"{n}.value={self.value} must be >= 0")
        if kind == "uniform" and not (0 <= self.low <= self.high):
            raise SpecError(f"{n}: uniform needs 0 <= low <= high, got low={self.low} high={self.high}")
        if kind == "geometric" and not self.mean_ >= 1:
            raise SpecError(f"{n}.mean={self.mean_} must be >= 1 for a geometric distribution")
        if kind in ("poisson", "lognormal") and not self.mean_ > 0:
            raise SpecError(f"{n}.mean={self.mean_} must be > 0")
        if kind == "lognormal" and not self.sigma > 0:
            raise SpecError(f"{n}.sigma={self.sigma} must be > 0")
        if kind in ("zipf", "powerlaw") and not self.a > 1:
            raise SpecError(f"{n}.a={self.a} must be > 1")
        if kind == "powerlaw" and self.low < 1:
            raise SpecError(f"{n}.low={self.low} must be >= 1 for a power law")
        if kind == "empirical":
            if not self.values or len(self.values) != len(self.weights):
                raise SpecError(f"{n}: empirical needs values and weights of equal, non-zero length")
            if any(v < 0 for v in self.values) or any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise SpecError(f"{n}: empirical values and weights must be >= 0 with a positive sum")

    # --- construction helpers -------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict, name: str = "dist") -> Dist:
        d = dict(d)
        if "mean" in d:
            d["mean_"] = d.pop("mean")
        allowed = {f for f in cls.__dataclass_fields__ if not f.startswith("_")}
        unknown = set(d) - allowed
        if unknown:
            raise SpecError(f"{name}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_public(allowed))}")
        for key, want in _FIELD_TYPES.items():
            if key in d and d[key] is not None:
                d[key] = _coerce(d[key], want, f"{name}.{'mean' if key == 'mean_' else key}")
        if "kind" in d and not isinstance(d["kind"], str):
            raise SpecError(f"{name}.kind={d['kind']!r} must be a string; allowed: {', '.join(KINDS)}")
        return cls(**d, _name=name)

    def to_dict(self) -> dict:
        """Only the keys that matter for this kind (plus clipping), for readable spec files."""
        out: dict = {"kind": self.kind}
        for f in KIND_PARAMS[self.kind]:
            v = getattr(self, "mean_" if f == "mean" else f)
            out[f] = list(v) if isinstance(v, tuple) else v
        if self.min:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        return out

    # --- support and moments ----------------------------------------------------------------
    @cached_property
    def pmf_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(support, probabilities) after clipping; exact for finite supports."""
        hi = self.max if self.max is not None else None
        kind = self.kind
        if kind == "fixed":
            xs, ps = np.array([self.value]), np.array([1.0])
        elif kind == "uniform":
            xs = np.arange(self.low, self.high + 1)
            ps = np.full(len(xs), 1.0 / len(xs))
        elif kind == "empirical":
            xs = np.asarray(self.values, dtype=np.int64)
            ps = np.asarray(self.weights, dtype=np.float64)
            ps = ps / ps.sum()
        else:
            top = hi if hi is not None else self._natural_cap()
            xs = np.arange(0, top + 1)
            ps = self._pmf(xs)
            ps = np.where(np.isfinite(ps), ps, 0.0)
            ps[-1] += max(0.0, 1.0 - ps.sum())  # mass beyond the cap lands on the cap (clipping)
            ps = ps / ps.sum()
        clipped = np.clip(xs, self.min, hi if hi is not None else np.iinfo(np.int64).max)
        uniq, inv = np.unique(clipped, return_inverse=True)
        return uniq.astype(np.int64), np.bincount(inv, weights=ps, minlength=len(uniq))

    def _natural_cap(self) -> int:
        kind = self.kind
        if kind == "geometric":
            return int(min(_SUPPORT_CAP, max(64, math.ceil(self.mean_ * 60))))
        if kind == "poisson":
            return int(min(_SUPPORT_CAP, self.mean_ + 20 * math.sqrt(self.mean_) + 20))
        if kind == "lognormal":
            mu = math.log(self.mean_) - self.sigma**2 / 2
            return int(min(_SUPPORT_CAP, math.exp(mu + 8 * self.sigma) + 2))
        return _SUPPORT_CAP  # zipf / powerlaw: heavy tails, cut at 2^20

    def _pmf(self, xs: np.ndarray) -> np.ndarray:
        kind = self.kind
        if kind == "geometric":
            return stats.geom.pmf(xs, 1.0 / self.mean_)
        if kind == "poisson":
            return stats.poisson.pmf(xs, self.mean_)
        if kind == "lognormal":
            mu = math.log(self.mean_) - self.sigma**2 / 2
            d = stats.lognorm(s=self.sigma, scale=math.exp(mu))
            # rounding to the nearest integer: P(x) = F(x+0.5) - F(x-0.5)
            return d.cdf(xs + 0.5) - d.cdf(np.maximum(xs - 0.5, 0.0))
        if kind == "zipf":
            return stats.zipf.pmf(xs, self.a)
        if kind == "powerlaw":
            p = np.where(xs >= self.low, np.power(np.maximum(xs, 1).astype(float), -self.a), 0.0)
            return p / p.sum()
        raise AssertionError(kind)

    def mean(self) -> float:
        xs, ps = self.pmf_table
        return float(np.dot(xs, ps))

    def second_moment(self) -> float:
        xs, ps = self.pmf_table
        return float(np.dot(xs.astype(float) ** 2, ps))

    # --- sampling ------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n draws as int64, clipped to [min, max]."""
        kind = self.kind
        if kind == "fixed":
            out = np.full(n, self.value, dtype=np.int64)
        elif kind == "uniform":
            out = rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)
        elif kind == "geometric":
            out = rng.geometric(1.0 / self.mean_, size=n).astype(np.int64)
        elif kind == "poisson":
            out = rng.poisson(self.mean_, size=n).astype(np.int64)
        elif kind == "lognormal":
            mu = math.log(self.mean_) - self.sigma**2 / 2
            out = np.rint(rng.lognormal(mu, self.sigma, size=n)).astype(np.int64)
        else:
            # zipf, powerlaw, empirical: inverse CDF on the (clipped) table, one searchsorted
            xs, ps = self.pmf_table
            cdf = np.cumsum(ps)
            cdf[-1] = 1.0
            out = xs[np.searchsorted(cdf, rng.random(n), side="right").clip(0, len(xs) - 1)]
            return out
        hi = self.max if self.max is not None else np.iinfo(np.int64).max
        return np.clip(out, self.min, hi, out=out)

    def sample_torch(self, gen: torch.Generator, n: int) -> torch.Tensor:
        """n draws as int64 on `gen`'s device, clipped to [min, max]: the distribution of `sample`
        (the same method per kind, drawn by torch), with no device->host sync."""
        dev = gen.device
        kind = self.kind
        if kind == "fixed":
            v = max(self.value, self.min) if self.max is None else min(max(self.value, self.min), self.max)
            return torch.full((n,), v, dtype=torch.int64, device=dev)
        if kind == "uniform":
            out = torch.randint(self.low, self.high + 1, (n,), generator=gen, device=dev, dtype=torch.int64)
        elif kind in ("zipf", "powerlaw", "empirical"):
            # inverse CDF on the (clipped) table, as `sample`: already inside [min, max]
            xs, cdf = _torch_table(self, str(dev))
            u = torch.rand(n, generator=gen, device=dev, dtype=torch.float64)
            return xs[torch.searchsorted(cdf, u, right=True).clamp_(max=xs.numel() - 1)]
        else:
            f = torch.empty(n, dtype=torch.float64, device=dev)
            if kind == "geometric":  # support 1, 2, ... as numpy's; p = 1 is the constant 1
                f = f.fill_(1.0) if self.mean_ <= 1.0 else f.geometric_(1.0 / self.mean_, generator=gen)
            elif kind == "poisson":
                f = torch.poisson(f.fill_(self.mean_), generator=gen)
            else:  # lognormal, rounded half to even as np.rint
                mu = math.log(self.mean_) - self.sigma**2 / 2
                f = f.log_normal_(mu, self.sigma, generator=gen).round_()
            # clip while still a float (a far tail would overflow the integer conversion)
            out = f.clamp_(self.min, float(self.max if self.max is not None else 2**62)).to(torch.int64)
            return out
        return out.clamp_(self.min, self.max)


_FIELD_TYPES = {
    "value": int,
    "low": int,
    "high": int,
    "min": int,
    "max": int,
    "mean_": float,
    "sigma": float,
    "a": float,
    "values": (int,),
    "weights": (float,),
}


@lru_cache(maxsize=64)
def _torch_table(d: Dist, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(support, cumulative probabilities) of d's clipped table on a device, made once per device
    (a host->device copy per draw would wait for the device's queue)."""
    xs, ps = d.pmf_table
    cdf = np.cumsum(ps)
    cdf[-1] = 1.0
    return torch.from_numpy(xs).to(device), torch.from_numpy(cdf).to(device)


def _coerce(v, want, where: str):
    if isinstance(want, tuple):
        if not isinstance(v, list | tuple):
            raise SpecError(f"{where}={v!r} must be a list of numbers")
        return tuple(_coerce(x, want[0], f"{where}[]") for x in v)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise SpecError(f"{where}={v!r} must be {'an integer' if want is int else 'a number'}")
    if want is int:
        if isinstance(v, float) and not v.is_integer():
            raise SpecError(f"{where}={v!r} must be an integer")
        return int(v)
    return float(v)


def _public(names: set[str]) -> set[str]:
    return {"mean" if f == "mean_" else f for f in names}


def fixed(v: int, name: str = "dist") -> Dist:
    return Dist(kind="fixed", value=v, _name=name)
