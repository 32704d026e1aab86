"""Uncertainty for every reported number: means with 95 % bootstrap intervals, proportions with
Wilson intervals, and comparisons that only claim what the intervals support.

The unit of resampling is the *prompt* (an image caption or a transport pair): values given as
``(prompts,)`` or ``(prompts, seeds)`` are resampled over prompts, seeds averaged within each
drawn prompt (a cluster bootstrap), so seeds of one prompt never count as independent evidence.
Intervals are percentile intervals of ``n_boot`` resamples from a fixed seed: the same numbers
give the same interval on every machine. A percentile bootstrap over very few prompts is far too narrow
(two prompts that agree in sign always "exclude zero"), so :func:`compare` claims a difference only from
``MIN_N_CLAIM`` = 6 prompts on (six differences of one sign are also what a two-sided sign test needs at 5 %).

    >>> from massact_viz.intervals import mean_interval, compare
    >>> top, bottom = mean_interval([0.6, 0.7, 0.55, 0.62]), mean_interval([0.2, 0.1, 0.3, 0.2])
    >>> str(top)
    '0.62 [0.57, 0.67], n = 4'
    >>> compare([0.6, 0.7, 0.55, 0.62], [0.2, 0.1, 0.3, 0.2], "top-k", "bottom-k").sentence
    'top-k and bottom-k: too few prompts to compare (n = 4, a claim needs 6): 0.62 [0.57, 0.67] vs 0.20 [0.12, 0.27] (difference 0.42 [0.29, 0.55])'
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Interval", "Comparison", "mean_interval", "proportion_interval", "wilson_interval", "compare",
           "N_BOOT", "LEVEL", "MIN_N_CLAIM"]

N_BOOT = 2000
LEVEL = 0.95
MIN_N_CLAIM = 6
_SEED = 20240917


@dataclass(frozen=True)
class Interval:
    """A mean (or proportion) with its interval. ``n`` counts prompts (the resampled unit);
    ``seeds`` the values averaged within each prompt."""

    mean: float
    lo: float
    hi: float
    n: int
    seeds: int = 1
    level: float = LEVEL
    method: str = "bootstrap"

    def fmt(self, digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
        f = lambda v: f"{v * scale:.{digits}f}{unit}"  # noqa: E731
        if not math.isfinite(self.mean):
            return "n/a"
        return f"{f(self.mean)} [{f(self.lo)}, {f(self.hi)}]"

    def __str__(self) -> str:
        s = f", {self.seeds} seeds each" if self.seeds > 1 else ""
        return f"{self.fmt()}, n = {self.n}{s}"

    def to_dict(self) -> dict:
        return {"mean": _finite(self.mean), "lo": _finite(self.lo), "hi": _finite(self.hi), "n": self.n,
                "seeds": self.seeds, "level": self.level, "method": self.method}

    @classmethod
    def from_dict(cls, d: dict) -> "Interval":
        nan = float("nan")
        return cls(*(nan if d[k] is None else float(d[k]) for k in ("mean", "lo", "hi")), int(d["n"]),
                   int(d.get("seeds", 1)), float(d.get("level", LEVEL)), d.get("method", "bootstrap"))


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _as_matrix(values) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"values must be (prompts,) or (prompts, seeds), got shape {a.shape}")
    return a


def _prompt_means(a: np.ndarray) -> np.ndarray:
    """Mean over seeds per prompt, NaN where a prompt has no finite value (no warning)."""
    ok = np.isfinite(a)
    cnt = ok.sum(axis=1)
    tot = np.where(ok, a, 0.0).sum(axis=1)
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def _resample_means(a: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot,) means of prompt-resampled data; NaN entries (missing seeds) are ignored."""
    per_prompt = _prompt_means(a)
    ok = np.isfinite(per_prompt)
    per_prompt = per_prompt[ok]
    n = per_prompt.size
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    return per_prompt[idx].mean(axis=1)


def mean_interval(values, *, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = _SEED) -> Interval:
    """Mean over prompts with a percentile bootstrap interval (prompts resampled, seeds averaged
    within a prompt). One prompt gives a point interval; none gives NaN."""
    a = _as_matrix(values)
    per_prompt = _prompt_means(a) if a.size else np.array([])
    per_prompt = per_prompt[np.isfinite(per_prompt)]
    n, seeds = int(per_prompt.size), int(a.shape[1]) if a.size else 0
    if n == 0:
        nan = float("nan")
        return Interval(nan, nan, nan, 0, seeds, level)
    m = float(per_prompt.mean())
    if n == 1:
        return Interval(m, m, m, 1, seeds, level)
    boots = _resample_means(a, n_boot, seed)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Interval(m, float(lo), float(hi), n, seeds, level)


def wilson_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (sensible at 0 and n, unlike the normal one)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + level) / 2)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def proportion_interval(flags: Sequence[bool] | np.ndarray, level: float = LEVEL) -> Interval:
    """A success rate over independent trials (one per prompt or per image) with its Wilson interval."""
    f = np.asarray([bool(x) for x in np.ravel(flags)])
    n, k = int(f.size), int(f.sum())
    if n == 0:
        nan = float("nan")
        return Interval(nan, nan, nan, 0, 1, level, "wilson")
    lo, hi = wilson_interval(k, n, level)
    return Interval(k / n, lo, hi, n, 1, level, "wilson")


@dataclass(frozen=True)
class Comparison:
    """Two conditions measured on the same prompts: each one's interval, the paired difference's
    interval, and a verdict that claims only what the difference interval supports."""

    a: Interval
    b: Interval
    diff: Interval
    names: tuple[str, str]
    verdict: str  # ">", "<" or "~" (not distinguishable)

    @property
    def sentence(self) -> str:
        na, nb = self.names
        if self.verdict == "~" and self.diff.n < MIN_N_CLAIM:
            return (f"{na} and {nb}: too few prompts to compare (n = {self.diff.n}, a claim needs {MIN_N_CLAIM}): "
                    f"{self.a.fmt()} vs {self.b.fmt()} (difference {self.diff.fmt()})")
        if self.verdict == "~":
            head = f"{na} and {nb} are not distinguishable at n = {self.a.n}"
        else:
            head = f"{na} {self.verdict} {nb}"
        return (f"{head}: {self.a.fmt()} vs {self.b.fmt()}, n = {self.a.n} "
                f"(difference {self.diff.fmt()})")

    def to_dict(self) -> dict:
        return {"a": self.a.to_dict(), "b": self.b.to_dict(), "diff": self.diff.to_dict(), "names": list(self.names),
                "verdict": self.verdict, "sentence": self.sentence}


def compare(a, b, name_a: str = "a", name_b: str = "b", *, level: float = LEVEL, n_boot: int = N_BOOT,
            seed: int = _SEED) -> Comparison:
    """Paired comparison of two conditions on the same prompts (rows must match): ``>`` or ``<``
    only when the bootstrap interval of the mean difference excludes 0 over at least ``MIN_N_CLAIM`` prompts,
    else ``~``."""
    A, B = _as_matrix(a), _as_matrix(b)
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"compare needs the same prompts in both conditions, got {A.shape[0]} and {B.shape[0]}")
    d = _prompt_means(A) - _prompt_means(B)
    ia, ib = mean_interval(A, level=level, n_boot=n_boot, seed=seed), mean_interval(B, level=level, n_boot=n_boot,
                                                                                     seed=seed)
    idiff = mean_interval(d, level=level, n_boot=n_boot, seed=seed)
    if idiff.n < MIN_N_CLAIM or not math.isfinite(idiff.lo):
        verdict = "~"
    elif idiff.lo > 0:
        verdict = ">"
    elif idiff.hi < 0:
        verdict = "<"
    else:
        verdict = "~"
    return Comparison(ia, ib, idiff, (name_a, name_b), verdict)
