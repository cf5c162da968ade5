"""Wilson score intervals, with and without the finite-population correction."""
from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from faultlab.errors import FaultlabError
from faultlab.stats import achieved_margin, normal_quantile, wilson_interval


def test_matches_statsmodels_wilson_without_population():
    rng = np.random.default_rng(1)
    n = rng.integers(1, 5000, size=500)
    k = rng.integers(0, n + 1)
    for conf in (0.9, 0.95, 0.99):
        lo, hi = wilson_interval(k, n, conf)
        ref_lo, ref_hi = proportion_confint(k, n, alpha=1 - conf, method="wilson")
        np.testing.assert_allclose(lo, ref_lo, atol=1e-12)
        np.testing.assert_allclose(hi, ref_hi, atol=1e-12)


def test_scalars_in_floats_out():
    lo, hi = wilson_interval(3, 10)
    assert isinstance(lo, float) and isinstance(hi, float)
    assert isinstance(achieved_margin(3, 10), float)


def _brute_force_fpc(k: int, n: int, N: int, conf: float) -> tuple[float, float]:
    """The set of p with |k/n - p| <= z sqrt(p(1-p)/n (N-n)/(N-1)), found on a fine grid."""
    z = normal_quantile(conf)
    p = np.linspace(0, 1, 2_000_001)
    f = (N - n) / (N - 1)
    inside = np.abs(k / n - p) <= z * np.sqrt(p * (1 - p) / n * f)
    return float(p[inside].min()), float(p[inside].max())


@pytest.mark.parametrize("k,n,N", [(3, 10, 40), (0, 50, 60), (17, 200, 1000), (50, 100, 150), (99, 100, 10**6)])
def test_fpc_interval_inverts_the_corrected_score_test(k, n, N):
    lo, hi = wilson_interval(k, n, 0.95, population=N)
    ref_lo, ref_hi = _brute_force_fpc(k, n, N, 0.95)
    assert lo == pytest.approx(ref_lo, abs=2e-6)
    assert hi == pytest.approx(ref_hi, abs=2e-6)


def test_fpc_narrows_and_vanishes_when_everything_was_sampled():
    lo, hi = wilson_interval(30, 100)
    flo, fhi = wilson_interval(30, 100, population=200)
    assert lo < flo <= 0.3 <= fhi < hi
    for k in (0, 7, 20):
        assert wilson_interval(k, 20, population=20) == (k / 20, k / 20)
        assert achieved_margin(k, 20, population=20) == 0.0
    # A huge population makes no difference.
    np.testing.assert_allclose(wilson_interval(30, 100, population=10**12), (lo, hi), atol=1e-9)


def test_vectorised_with_per_row_population_and_empty_rows():
    k = np.array([0, 3, 5, 0])
    n = np.array([0, 10, 5, 10])
    N = np.array([10, 100, 5, 10])
    lo, hi = wilson_interval(k, n, population=N)
    for i in range(len(k)):
        if n[i] == 0:
            assert (lo[i], hi[i]) == (0.0, 1.0)
        else:
            assert (lo[i], hi[i]) == pytest.approx(wilson_interval(int(k[i]), int(n[i]), population=int(N[i])))


def test_bad_counts_raise():
    with pytest.raises(FaultlabError):
        wilson_interval(5, 3)
    with pytest.raises(FaultlabError):
        wilson_interval(1, 30, population=20)
    with pytest.raises(FaultlabError):
        wilson_interval(1, 3, confidence=1.5)


def _coverage_binomial(rng, n, p, draws, conf=0.95):
    k = rng.binomial(n, p, size=draws)
    lo, hi = wilson_interval(k, np.full(draws, n), conf)
    return float(np.mean((lo <= p) & (p <= hi)))


def _coverage_finite(rng, N, n, p, draws, conf=0.95):
    """Sample n of N without replacement from a fixed population with round(p N) events."""
    K = round(p * N)
    population = np.zeros(N, dtype=bool)
    population[:K] = True
    covered = 0
    k = np.empty(draws, dtype=np.int64)
    for i in range(draws):
        k[i] = population[rng.choice(N, size=n, replace=False)].sum()
    lo, hi = wilson_interval(k, np.full(draws, n), conf, population=N)
    covered = np.mean((lo <= K / N) & (K / N <= hi))
    return float(covered)


@pytest.mark.parametrize("n,p", [(100, 0.5), (385, 0.1), (200, 0.03), (1000, 0.01), (600, 0.25)])
def test_coverage_on_bernoulli_population(n, p):
    rng = np.random.default_rng(2024)
    assert _coverage_binomial(rng, n, p, draws=20_000) >= 0.93


@pytest.mark.parametrize("N,n,p", [(2000, 385, 0.1), (1000, 500, 0.3), (5000, 1500, 0.5), (300, 100, 0.2), (800, 600, 0.05)])
def test_coverage_on_finite_population_sampled_without_replacement(N, n, p):
    rng = np.random.default_rng(7)
    assert _coverage_finite(rng, N, n, p, draws=3000) >= 0.93


def test_without_fpc_the_finite_population_interval_is_needlessly_wide():
    # Same draws as above: the uncorrected interval over-covers (wastes faults) when n/N is large.
    rng = np.random.default_rng(3)
    N, n, K = 1000, 800, 300
    pop = np.zeros(N, dtype=bool)
    pop[:K] = True
    k = np.array([pop[rng.choice(N, n, replace=False)].sum() for _ in range(500)])
    assert np.all(achieved_margin(k, n, population=N) < 0.5 * achieved_margin(k, n))


@pytest.mark.parametrize("args", [(float("nan"), 3), (1, float("nan")), (1, float("inf")), (1, 3, 0.95, float("nan"))])
def test_non_finite_counts_raise_instead_of_a_made_up_interval(args):
    # Regression: wilson_interval(1, nan) returned (0.2065, 1.0) and wilson_interval(nan, 3) (nan, nan).
    with pytest.raises(FaultlabError, match="finite"):
        wilson_interval(*args)
