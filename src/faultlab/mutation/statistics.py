"""Kill decisions: is the mutant's metric distribution worse than the original's, significantly and by enough?

DeepCrime's rule: killed iff p < alpha and |Cohen's d| >= 0.5 in the harmful direction. The
p-value comes from a :class:`KillTest` strategy (Gaussian GLM with a Wald test by default,
Welch's t or Mann-Whitney U); p-values are kept at full float precision, never rounded. The
GLM's Wald z test, like DeepCrime's, is anti-conservative for few runs (it ignores the
t-distribution), so with under ~10 runs per configuration prefer more runs or Welch. Power is the
two-sample t-test power for the observed d (statsmodels), and ``runs_for_power`` the runs per
configuration that would reach 80 % power for it.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import FaultlabError


class KillTest(ABC):
    """A two-sample test of original vs mutant metric values; one abstract method."""

    name: str = ""

    @abstractmethod
    def p_value(self, original: np.ndarray, mutant: np.ndarray) -> float:
        """Two-sided p-value for "the two samples come from the same distribution"."""

    def sequential_p_value(self, original: np.ndarray, mutant: np.ndarray) -> float:
        """The p-value an adaptive look compares with its share of alpha: one that holds its level at that
        small share with few runs. The test's own p-value unless a subclass knows better."""
        return self.p_value(original, mutant)


class GLMTest(KillTest):
    """DeepCrime's test: Gaussian GLM ``metric ~ is_mutant``, Wald z test on the ``is_mutant`` coefficient.

    The z test is asymptotic: at n = 3 or 5 runs per side its false-kill rate is above alpha.
    """

    name = "glm"

    def p_value(self, original: np.ndarray, mutant: np.ndarray) -> float:
        import statsmodels.api as sm

        y = np.concatenate([original, mutant]).astype(float)
        x = sm.add_constant(np.concatenate([np.zeros(len(original)), np.ones(len(mutant))]))
        res = sm.GLM(y, x, family=sm.families.Gaussian()).fit()
        return float(res.pvalues[1])

    def sequential_p_value(self, original: np.ndarray, mutant: np.ndarray) -> float:
        """The Wald z of ``is_mutant`` is the pooled two-sample t statistic; an adaptive look refers it to
        Student's t with n - 2 df (exact for normal metrics). The normal's tail is far too light at a look's
        small share of alpha with few runs: at 3 runs per side and a share of 3.4e-4 the Wald test rejects
        a true null 2.3 % of the time, so summed over looks the false kills exceeded alpha."""
        from scipy import stats

        return float(stats.ttest_ind(original, mutant, equal_var=True).pvalue)


class WelchTest(KillTest):
    """Welch's unequal-variance t-test."""

    name = "welch"

    def p_value(self, original: np.ndarray, mutant: np.ndarray) -> float:
        from scipy import stats

        return float(stats.ttest_ind(original, mutant, equal_var=False).pvalue)


class MannWhitneyTest(KillTest):
    """Mann-Whitney U test (two-sided), for metrics far from normal."""

    name = "mann-whitney"

    def p_value(self, original: np.ndarray, mutant: np.ndarray) -> float:
        from scipy import stats

        return float(stats.mannwhitneyu(original, mutant, alternative="two-sided").pvalue)


KILL_TESTS: dict[str, type[KillTest]] = {"glm": GLMTest, "welch": WelchTest, "mann-whitney": MannWhitneyTest}


def kill_test(name: str) -> KillTest:
    """The kill test called ``name`` (glm, welch, mann-whitney)."""
    try:
        return KILL_TESTS[name]()
    except KeyError:
        raise FaultlabError(f"--test {name!r}: unknown kill test; use one of {', '.join(KILL_TESTS)}") from None


def check_kill_options(*, alpha: float, min_effect: float, direction: str | None = None) -> None:
    """One-line errors for a kill rule that cannot work, so they are caught before anything trains."""
    if not 0 < alpha < 1:
        raise FaultlabError(f"--alpha {alpha}: must be between 0 and 1 (exclusive), e.g. --alpha 0.05")
    if not min_effect >= 0:
        raise FaultlabError(f"--min-effect {min_effect}: must be 0 or more (|Cohen's d|), e.g. --min-effect 0.5")
    if direction is not None:
        metric_direction("", direction)


def mann_whitney_min_p(n_original: int, n_mutant: int) -> float:
    """Smallest two-sided p-value the exact Mann-Whitney U test can give for these sample sizes."""
    if n_original < 1 or n_mutant < 1:
        return 1.0
    return min(1.0, 2.0 / math.comb(n_original + n_mutant, n_original))


def pooled_sd(a: Sequence[float], b: Sequence[float]) -> float:
    """Pooled standard deviation of two samples (ddof=1 each)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = len(a), len(b)
    if na + nb <= 2:
        return float("nan")
    va = a.var(ddof=1) if na > 1 else 0.0
    vb = b.var(ddof=1) if nb > 1 else 0.0
    return float(math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2)))


def cohens_d(original: Sequence[float], mutant: Sequence[float]) -> float:
    """(mean mutant - mean original) / pooled SD; +-inf when the SD is 0 but the means differ."""
    o, m = np.asarray(original, float), np.asarray(mutant, float)
    diff = float(m.mean() - o.mean())
    sd = pooled_sd(o, m)
    if not math.isfinite(sd):
        return float("nan")
    if sd == 0.0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / sd


def power_two_sample(d: float, n_original: int, n_mutant: int, alpha: float = 0.05) -> float:
    """Power of the two-sided two-sample t-test to detect effect ``|d|`` with these sample sizes."""
    if not math.isfinite(d):
        return 1.0 if not math.isnan(d) else float("nan")
    if d == 0 or n_original < 2 or n_mutant < 2:
        return alpha if d == 0 and n_original >= 2 and n_mutant >= 2 else float("nan")
    from statsmodels.stats.power import TTestIndPower

    power = float(TTestIndPower().power(effect_size=abs(d), nobs1=n_original, ratio=n_mutant / n_original, alpha=alpha))
    if math.isnan(power) and abs(d) * math.sqrt(n_original * n_mutant / (n_original + n_mutant)) > 8:
        return 1.0  # the noncentral t tail underflows; the power is 1 to double precision
    return power


def runs_for_power(d: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Runs per configuration (equal groups) for ``power`` at effect ``|d|``; inf for d = 0."""
    if math.isnan(d):
        return float("nan")
    if d == 0:
        return math.inf
    if math.isinf(d):
        return 2.0
    def reaches(n: int) -> bool:
        return power_two_sample(d, n, n, alpha) >= power

    lo, hi = 2, 4  # smallest n with enough power, by doubling then bisection (solve_power fails for tiny d)
    if reaches(lo):
        return float(lo)
    while not reaches(hi):
        lo, hi = hi, hi * 2
        if hi > 10**9:
            return math.inf
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
    return float(hi)


def harmful(d: float, direction: str) -> bool:
    """Whether effect ``d`` (mutant minus original) makes the metric worse."""
    return d < 0 if direction == "higher" else d > 0


@dataclass(frozen=True)
class Comparison:
    """The statistics of one mutant against the original on one metric."""

    runs_original: int
    runs_mutant: int
    mean_original: float
    mean_mutant: float
    std_original: float
    std_mutant: float
    p_value: float
    effect_size: float
    power: float
    runs_for_80_power: float
    killed: bool | None  # None: not decidable (fewer than 2 successful runs on a side)


def compare(original: Sequence[float], mutant: Sequence[float], *, test: KillTest | None = None,
            direction: str = "higher", alpha: float = 0.05, min_effect: float = 0.5) -> Comparison:
    """Apply the kill rule: p < alpha and |d| >= min_effect with d in the harmful direction."""
    test = test or GLMTest()
    o = np.asarray([v for v in original if math.isfinite(v)], float)
    m_all = np.asarray(mutant, float)
    m = m_all[np.isfinite(m_all)]
    nan = float("nan")
    mean_o = float(o.mean()) if len(o) else nan
    mean_m = float(m.mean()) if len(m) else nan
    std_o = float(o.std(ddof=1)) if len(o) > 1 else nan
    std_m = float(m.std(ddof=1)) if len(m) > 1 else nan
    if len(o) < 2 or len(m) < 2:
        return Comparison(len(o), len(m), mean_o, mean_m, std_o, std_m, nan, nan, nan, nan, None)
    d = cohens_d(o, m)
    if np.ptp(o) == 0 and np.ptp(m) == 0:  # no variance: the tests are undefined, the answer is not
        p = 1.0 if mean_o == mean_m else 0.0
    else:
        p = test.p_value(o, m)
    killed = bool(p < alpha and abs(d) >= min_effect and harmful(d, direction))
    return Comparison(len(o), len(m), mean_o, mean_m, std_o, std_m, p, d,
                      power_two_sample(d, len(o), len(m), alpha), runs_for_power(d, alpha), killed)


def default_metric(available: set[str]) -> str:
    """``val_accuracy``, else ``accuracy``, else ``val_loss``, else ``loss``."""
    for name in ("val_accuracy", "accuracy", "val_loss", "loss"):
        if name in available:
            return name
    raise FaultlabError(
        f"no default metric in the stored runs (have: {', '.join(sorted(available)) or 'none'}); pass --metric NAME"
    )


def metric_direction(metric: str, override: str | None = None) -> str:
    """``higher`` or ``lower`` is better: from ``override``, else from the name (loss/error/mse/mae -> lower)."""
    if override is not None:
        if override not in ("higher", "lower"):
            raise FaultlabError(f"--direction {override!r}: expected 'higher' or 'lower'")
        return override
    low = metric.lower()
    return "lower" if any(s in low for s in ("loss", "error", "mse", "mae", "rmse", "perplexity")) else "higher"


__all__ = [
    "KillTest", "GLMTest", "WelchTest", "MannWhitneyTest", "KILL_TESTS", "kill_test", "check_kill_options",
    "mann_whitney_min_p", "pooled_sd", "cohens_d",
    "power_two_sample", "runs_for_power", "harmful", "Comparison", "compare", "default_metric", "metric_direction",
]
