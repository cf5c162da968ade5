"""Statistics for fault-injection campaigns: sample sizes, rate intervals and paired comparisons.

Plain functions on counts (or per-fault boolean outcomes) so reports, planners and the CLI
share one implementation:

- :func:`leveugle_sample_size` sizes a campaign (Leveugle et al., DATE 2009).
- :func:`wilson_interval` / :func:`achieved_margin` put a Wilson score interval on a rate,
  with the finite-population correction when faults were sampled without replacement.
- :func:`pair_rate_interval` puts one on a rate over (fault, input) pairs, counting faults, not
  pairs, as the sampled units (pairs sharing a fault are not independent).
- :func:`mcnemar_test` and :func:`rate_difference_interval` compare two campaigns run on
  the same fault list (paired outcomes).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .errors import FaultlabError

__all__ = [
    "normal_quantile",
    "leveugle_sample_size",
    "wilson_interval",
    "achieved_margin",
    "pair_rate_interval",
    "paired_counts",
    "McNemarResult",
    "mcnemar_test",
    "RateDifference",
    "rate_difference_interval",
]

#: Below this many discordant pairs (b + c) :func:`mcnemar_test` uses the exact binomial test.
MCNEMAR_EXACT_BELOW = 25


def _check_confidence(confidence: float) -> float:
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise FaultlabError(f"confidence {confidence!r} must be a fraction in (0, 1), e.g. 0.95 for 95 %")
    return c


def normal_quantile(confidence: float) -> float:
    """The two-sided standard normal quantile ``t`` for ``confidence`` (0.95 -> 1.95996, 0.99 -> 2.57583)."""
    from scipy.stats import norm

    c = _check_confidence(confidence)
    return float(norm.ppf(0.5 + c / 2.0))


def leveugle_sample_size(
    population: int,
    margin: float,
    confidence: float = 0.95,
    p: float = 0.5,
    t: float | None = None,
) -> int:
    """Faults to inject so a rate over ``population`` faults is known within ``±margin`` at ``confidence``.

    Leveugle, Calvez, Maistri, Vanhauwaert, "Statistical fault injection: quantified error and
    confidence", DATE 2009: ``n = N / (1 + e² (N−1) / (t² p (1−p)))``, rounded up and never
    more than ``N``. ``t`` defaults to the exact normal quantile for ``confidence``; pass
    ``t=2.58`` (99 %) or ``t=1.96`` (95 %) to reproduce the paper's table values.
    """
    if isinstance(population, bool) or int(population) != population or population < 0:
        raise FaultlabError(f"population {population!r} must be a whole number of faults >= 0")
    big_n = int(population)
    e = float(margin)
    if not 0.0 < e < 1.0:
        raise FaultlabError(f"margin {margin!r} must be a fraction in (0, 1), e.g. 0.01 for ±1 %")
    if not 0.0 < float(p) < 1.0:
        raise FaultlabError(f"p {p!r} must be in (0, 1); use 0.5 (the default) when the rate is unknown")
    if t is None:
        tt = normal_quantile(confidence)
    else:
        tt = float(t)
        if not tt > 0.0 or not math.isfinite(tt):
            raise FaultlabError(f"t {t!r} must be a positive normal quantile, e.g. 1.96 for 95 % or 2.58 for 99 %")
    if big_n == 0:
        return 0
    n = big_n / (1.0 + e * e * (big_n - 1) / (tt * tt * float(p) * (1.0 - float(p))))
    # Round up, ignoring float noise just above an integer (n = 384.0000000001 means 384).
    return min(big_n, max(1, math.ceil(n - 1e-9)))


def _wilson(k: Any, n: Any, z: float, population: Any) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(n))):
        raise FaultlabError("wilson_interval: counts k and n must be finite numbers of faults (got NaN or inf)")
    if np.any(n < 0) or np.any(k < 0) or np.any(k > n):
        raise FaultlabError("wilson_interval: counts must satisfy 0 <= k <= n (k events out of n faults)")
    z2 = z * z
    if population is None:
        f = np.ones_like(n)
    else:
        big_n = np.asarray(population, dtype=float)
        if not np.all(np.isfinite(big_n)):
            raise FaultlabError("wilson_interval: population N must be a finite number of faults (got NaN or inf)")
        if np.any(n > big_n):
            raise FaultlabError("wilson_interval: n faults sampled cannot exceed the population N they were drawn from")
        # Finite-population correction of the variance of a sample proportion under simple random
        # sampling without replacement: Var = p(1-p)/n * (N-n)/(N-1)   (Cochran 1977, ch. 3).
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(big_n > 1, (big_n - n) / np.maximum(big_n - 1, 1), 0.0)
        f = np.broadcast_to(f, np.broadcast(k, n, f).shape)
    k, n, f = np.broadcast_arrays(k, n, f)
    a = z2 * f  # the chi-square critical value, scaled by the FPC
    safe_n = np.where(n > 0, n, 1.0)
    phat = k / safe_n
    denom = 1.0 + a / safe_n
    centre = (phat + a / (2.0 * safe_n)) / denom
    half = np.sqrt(a) / denom * np.sqrt(np.maximum(phat * (1.0 - phat) / safe_n + a / (4.0 * safe_n * safe_n), 0.0))
    low = np.clip(centre - half, 0.0, 1.0)
    high = np.clip(centre + half, 0.0, 1.0)
    # The ends are exact: no events gives lower limit 0, all events upper limit 1 (float noise aside).
    low = np.where(k == 0, 0.0, low)
    high = np.where(k == n, 1.0, high)
    # Nothing observed: the interval says nothing.
    low = np.where(n == 0, 0.0, low)
    high = np.where(n == 0, 1.0, high)
    return low, high


def wilson_interval(
    k: Any,
    n: Any,
    confidence: float = 0.95,
    population: Any = None,
) -> tuple[Any, Any]:
    """Wilson score interval ``(low, high)`` for a rate of ``k`` events in ``n`` faults.

    With ``population`` (N, the faults were drawn *without replacement* from N) the interval
    is for the population's rate and uses the finite-population correction: the Wilson
    score inversion of ``|p̂ − p| ≤ z·sqrt(p(1−p)/n · (N−n)/(N−1))``, i.e. Wilson's formula
    with ``z²`` replaced by ``z²·(N−n)/(N−1)`` (the "population proportion" form in
    B. O'Neill, "Mathematical properties and finite-population correction for the Wilson
    score interval", arXiv:2109.12464, 2021; variance from W. G. Cochran, *Sampling
    Techniques*, 3rd ed., 1977, ch. 3). ``n == N`` gives the zero-width interval ``k/n``.

    ``k``, ``n`` and ``population`` may be numpy arrays (broadcast together); ``n == 0``
    gives ``(0, 1)``. Scalars in, floats out.
    """
    z = normal_quantile(confidence)
    low, high = _wilson(k, n, z, population)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def achieved_margin(k: Any, n: Any, confidence: float = 0.95, population: Any = None) -> Any:
    """Half-width of :func:`wilson_interval`: the ``±margin`` a campaign actually achieved."""
    low, high = wilson_interval(k, n, confidence, population)
    half = (np.asarray(high) - np.asarray(low)) / 2.0
    return float(half) if np.ndim(half) == 0 else half


def pair_rate_interval(k: Any, n: Any, n_squares: Any, confidence: float = 0.95) -> tuple[Any, Any]:
    """Wilson interval ``(low, high)`` for the rate ``k / n`` of an event over (fault, input) pairs.

    ``k`` events in ``n`` pairs, ``n_squares`` the sum over faults of each fault's input count squared.
    Pairs that share a fault are correlated (a fault that flips the top-1 on one input usually does
    on many), so a Wilson interval over pairs as if independent is far too narrow: the sampled unit
    is the fault (it covered 4-28 % for a nominal 95 % in simulated campaigns). The pair rate is the
    mean of the faults' own rates r_i (weighted by their input counts n_i); each r_i lies in [0, 1],
    so its variance is at most p (1 - p), whatever the faults do. This interval is Wilson's on that
    worst case: the effective sample size ``(sum n_i)^2 / sum n_i^2`` (Kish's for weights n_i: the
    number of faults when every fault saw the same inputs, the number of pairs when each saw one).
    It needs no estimate of how faults vary, which for skewed campaigns (most faults masked, a few
    hitting most inputs) is unreliable below hundreds of faults. Arrays broadcast; scalars in, floats out.
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    nn = np.asarray(n_squares, dtype=float)
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(n)) and np.all(np.isfinite(nn))):
        raise FaultlabError("pair_rate_interval: counts must be finite numbers (got NaN or inf)")
    if np.any(k < 0) or np.any(k > n):
        raise FaultlabError("pair_rate_interval: counts must satisfy 0 <= k <= n (k events out of n pairs)")
    if np.any(nn > n * n) or np.any((n > 0) & (nn < n)):
        raise FaultlabError("pair_rate_interval: the sum of squared input counts must lie between n and n^2")
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(n > 0, n * n / np.where(nn > 0, nn, 1.0), 0.0)
        p = np.where(n > 0, k / np.where(n > 0, n, 1.0), 0.0)
    low, high = _wilson(p * n_eff, n_eff, normal_quantile(confidence), None)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def _as_bool_outcomes(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise FaultlabError(f"{name}: expected a 1-D sequence of per-fault outcomes (True = event), got shape {arr.shape}")
    if arr.dtype != bool:
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise FaultlabError(f"{name}: outcomes must be booleans or 0/1 (True = the fault caused the event)")
        arr = arr.astype(bool)
    return arr


def paired_counts(a_outcomes: Any, b_outcomes: Any) -> tuple[int, int, int, int]:
    """``(both, a_only, b_only, neither)`` for paired per-fault outcomes of campaigns A and B."""
    a = _as_bool_outcomes(a_outcomes, "a_outcomes")
    b = _as_bool_outcomes(b_outcomes, "b_outcomes")
    if a.shape != b.shape:
        raise FaultlabError(
            f"paired outcomes differ in length ({a.size} vs {b.size}); compare campaigns run on the same fault list"
        )
    return int(np.sum(a & b)), int(np.sum(a & ~b)), int(np.sum(~a & b)), int(np.sum(~a & ~b))


class McNemarResult(NamedTuple):
    """McNemar's test: ``b`` faults with the event only in A, ``c`` only in B, the statistic and p-value."""

    b: int
    c: int
    statistic: float
    p_value: float


def mcnemar_test(a_outcomes: Any, b_outcomes: Any, *, exact: bool | None = None) -> McNemarResult:
    """McNemar's test that campaigns A and B have the same event rate on the same faults.

    Only discordant faults count: ``b`` (event in A only) and ``c`` (in B only). With fewer
    than :data:`MCNEMAR_EXACT_BELOW` discordant faults (or ``exact=True``) the exact binomial
    test (statistic ``min(b, c)``, p = min(1, 2·P[Bin(b+c, ½) ≤ min(b, c)])); otherwise the
    chi-square test with continuity correction, ``(|b−c|−1)²/(b+c)`` on 1 df. Same numbers as
    ``statsmodels.stats.contingency_tables.mcnemar(table, exact=..., correction=True)``.
    """
    from scipy.stats import binom, chi2

    _, b, c, _ = paired_counts(a_outcomes, b_outcomes)
    use_exact = (b + c) < MCNEMAR_EXACT_BELOW if exact is None else bool(exact)
    if use_exact:
        stat = float(min(b, c))
        p = float(min(1.0, 2.0 * binom.cdf(min(b, c), b + c, 0.5)))
    else:
        if b + c == 0:
            return McNemarResult(b, c, 0.0, 1.0)
        stat = float((abs(b - c) - 1.0) ** 2 / (b + c))
        p = float(chi2.sf(stat, 1))
    return McNemarResult(b, c, stat, p)


class RateDifference(NamedTuple):
    """Rate of A minus rate of B on the same faults, with its confidence interval."""

    difference: float
    low: float
    high: float


def rate_difference_interval(
    a_outcomes: Any,
    b_outcomes: Any,
    confidence: float = 0.95,
    population: int | None = None,
) -> RateDifference:
    """Interval for ``rate(A) − rate(B)`` from paired per-fault outcomes (same faults in both campaigns).

    Newcombe's hybrid score interval for paired proportions ("method 10": Wilson limits of
    each rate combined with the correlation φ of the paired outcomes, φ reduced by n/2 when
    positive), R. G. Newcombe, "Improved confidence intervals for the difference between
    binomial proportions based on paired data", Statistics in Medicine 17:2635-2650, 1998;
    worked example in Altman et al., *Statistics with Confidence*, 2nd ed., 2000, ch. 6.
    With ``population`` (the faults were drawn without replacement from N) the two Wilson
    limits carry the finite-population correction (see :func:`wilson_interval`), so
    ``n == N`` gives the exact difference.
    """
    both, a_only, b_only, neither = paired_counts(a_outcomes, b_outcomes)
    n = both + a_only + b_only + neither
    if n == 0:
        return RateDifference(0.0, -1.0, 1.0)
    p1 = (both + a_only) / n
    p2 = (both + b_only) / n
    l1, u1 = wilson_interval(both + a_only, n, confidence, population)
    l2, u2 = wilson_interval(both + b_only, n, confidence, population)
    marg = float(both + a_only) * float(b_only + neither) * float(both + b_only) * float(a_only + neither)
    if marg == 0.0:
        phi = 0.0
    else:
        cross = float(both) * float(neither) - float(a_only) * float(b_only)
        if cross > 0:
            cross = max(cross - n / 2.0, 0.0)
        phi = cross / math.sqrt(marg)
    d = p1 - p2
    delta = math.sqrt(max((p1 - l1) ** 2 - 2.0 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    eps = math.sqrt(max((u1 - p1) ** 2 - 2.0 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return RateDifference(d, max(-1.0, d - delta), min(1.0, d + eps))
