"""DeepCrime's analyses: kill-threshold search, killability, triviality, mutation score, adaptive stopping.

All are plain functions over kill decisions or stored outcomes, so they can be tested
against brute force; the driver in :mod:`faultlab.mutation.sweeps` feeds them stored runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .statistics import KillTest, harmful


# ---------------------------------------------------------------- binary search for the kill threshold
@dataclass(frozen=True)
class ThresholdResult:
    """The value nearest the default that kills (None: even ``extreme`` survives), and every point tried."""

    threshold: float | None
    default: float
    extreme: float
    evaluated: dict[float, bool] = field(default_factory=dict)

    @property
    def killable(self) -> bool:
        return self.threshold is not None

    @property
    def killability(self) -> float:
        """Fraction of the range default..extreme whose values kill (DeepCrime's killability for searched operators)."""
        if self.threshold is None:
            return 0.0
        span = abs(self.extreme - self.default)
        return 1.0 if span == 0 else abs(self.extreme - self.threshold) / span


def grid_point(value: float, *, default: float, precision: float, integer: bool) -> float:
    """``value`` snapped to the search grid (integers, or ``default + k * precision``), so searches share points."""
    if integer:
        return float(int(round(value)))
    k = round((value - default) / precision)
    return round(default + k * precision, 12)


def find_kill_threshold(is_killed: Callable[[float], bool], *, default: float, extreme: float, precision: float,
                        integer: bool = False, evaluated: dict[float, bool] | None = None) -> ThresholdResult:
    """Binary search between ``default`` (not a mutant) and ``extreme`` for the kill threshold, to ``precision``.

    Assumes killing is monotone in the distance from the default, as DeepCrime does. Points
    already in ``evaluated`` (from an earlier search or sweep) are reused, never re-run.
    """
    if precision <= 0:
        raise ValueError(f"precision must be > 0, got {precision}")
    cache = evaluated if evaluated is not None else {}

    def check(v: float) -> bool:
        v = grid_point(v, default=default, precision=precision, integer=integer) if v != extreme else v
        if v not in cache:
            cache[v] = bool(is_killed(int(v) if integer else v))
        return cache[v]

    if not check(extreme):
        return ThresholdResult(None, default, extreme, dict(cache))
    lo, hi = float(default), float(extreme)
    step = max(precision, 1.0) if integer else precision
    while abs(hi - lo) > step:
        mid = grid_point((lo + hi) / 2, default=default, precision=precision, integer=integer)
        if mid in (lo, hi):
            break
        if check(mid):
            hi = mid
        else:
            lo = mid
    return ThresholdResult(hi, default, extreme, dict(cache))


# ---------------------------------------------------------------- killability and mutation score
def killability_score(killed: Mapping[Any, bool | None]) -> float:
    """Fraction of an operator's evaluated mutant values that are killed (undecided values count as not killed)."""
    if not killed:
        return float("nan")
    return sum(1 for k in killed.values() if k) / len(killed)


def mutation_score(test_kills: Mapping[str, Mapping[Any, bool | None]],
                   train_kills: Mapping[str, Mapping[Any, bool | None]]) -> float:
    """DeepCrime's mutation score of a test set: mean over operators killable by the training set of
    |killed by test and by train| / |killed by train|. NaN when the training set kills nothing."""
    scores = []
    for op, train in train_kills.items():
        k_train = {v for v, k in train.items() if k}
        if not k_train:
            continue
        k_test = {v for v, k in test_kills.get(op, {}).items() if k}
        scores.append(len(k_test & k_train) / len(k_train))
    return float(np.mean(scores)) if scores else float("nan")


def unpack_outcomes(blob: bytes, n_inputs: int | None = None) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(blob, dtype=np.uint8)).astype(bool)
    return bits if n_inputs is None else bits[:n_inputs]


def per_input_kill_probability(original: Sequence[np.ndarray], mutant: Sequence[np.ndarray]) -> np.ndarray:
    """For each input: over paired runs (same seed) where the original is right on it, the share where the mutant is wrong.

    NaN for inputs the original never gets right (they cannot kill).
    """
    o = np.asarray(original, bool)
    m = np.asarray(mutant, bool)
    right = o.sum(axis=0)
    kills = (o & ~m).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(right > 0, kills / np.maximum(right, 1), np.nan)


def triviality_score(original: Sequence[np.ndarray], mutant: Sequence[np.ndarray]) -> float:
    """Mean per-input kill probability over the inputs that can kill; a mutant is trivial when it is >= 0.9."""
    p = per_input_kill_probability(original, mutant)
    return float(np.nanmean(p)) if np.isfinite(p).any() else float("nan")


TRIVIAL_AT = 0.9


# ---------------------------------------------------------------- adaptive (group-sequential) stopping
def obrien_fleming_spending(fractions: Sequence[float], total: float) -> list[float]:
    """Lan-DeMets O'Brien-Fleming-type error spent at each look (increments summing to ``total``)."""
    from scipy.stats import norm

    z = norm.ppf(1 - total / 2)
    cum = [0.0] + [float(2 - 2 * norm.cdf(z / math.sqrt(t))) if t > 0 else 0.0 for t in fractions]
    cum[-1] = total
    return [max(0.0, cum[i + 1] - cum[i]) for i in range(len(fractions))]


def look_schedule(max_runs: int, round_size: int, min_runs: int = 3) -> list[int]:
    """Run counts at which adaptive runs look at the data: every ``round_size`` runs, ending at ``max_runs``."""
    first = max(min_runs, min(round_size, max_runs))
    looks = list(range(first, max_runs, max(1, round_size)))
    return looks + [max_runs] if not looks or looks[-1] != max_runs else looks


def sequential_decision(original: Sequence[float], mutant: Sequence[float], *, alpha_k: float, beta_k: float,
                        final: bool, test: KillTest, direction: str, min_effect: float = 0.5) -> str | None:
    """``killed``/``survived`` when this look can decide, else None.

    Kill when the test's p < ``alpha_k`` (this look's share of alpha) and |d| >= ``min_effect``
    harmfully. Stop as survived when a one-sided t-test rejects "harmful effect >= min_effect SD"
    at ``beta_k``. Spending makes the summed error at most alpha (false kills) and beta (early
    survivals of mutants at least ``min_effect`` harmful), by the union bound, which needs each look's
    p to hold its level: the p is ``test.sequential_p_value`` (for the GLM, its Wald statistic referred
    to Student's t rather than the normal).
    """
    from scipy import stats

    from .statistics import cohens_d, pooled_sd

    o = np.asarray(original, float)
    m = np.asarray(mutant, float)
    o, m = o[np.isfinite(o)], m[np.isfinite(m)]
    if len(o) < 2 or len(m) < 2:
        return "survived" if final else None
    d = cohens_d(o, m)
    sd = pooled_sd(o, m)
    if np.ptp(o) == 0 and np.ptp(m) == 0:
        p = 1.0 if o.mean() == m.mean() else 0.0
    else:
        p = test.sequential_p_value(o, m)
    if p < alpha_k and abs(d) >= min_effect and harmful(d, direction):
        return "killed"
    if final:
        return "survived"
    if sd > 0:
        worse = (o.mean() - m.mean()) if direction == "higher" else (m.mean() - o.mean())
        se = sd * math.sqrt(1 / len(o) + 1 / len(m))
        t = (worse - min_effect * sd) / se
        if stats.t.cdf(t, df=len(o) + len(m) - 2) < beta_k:
            return "survived"
    return None


__all__ = [
    "ThresholdResult", "find_kill_threshold", "grid_point", "killability_score", "mutation_score",
    "per_input_kill_probability", "triviality_score", "TRIVIAL_AT", "obrien_fleming_spending", "look_schedule",
    "sequential_decision", "unpack_outcomes",
]
