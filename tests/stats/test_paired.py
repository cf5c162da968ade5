"""Paired comparison of two campaigns on the same faults: McNemar and the rate-difference interval."""
from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from faultlab.errors import FaultlabError
from faultlab.stats import MCNEMAR_EXACT_BELOW, mcnemar_test, paired_counts, rate_difference_interval


def _outcomes(both, a_only, b_only, neither, rng=None):
    a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither, dtype=bool)
    if rng is not None:
        perm = rng.permutation(a.size)
        a, b = a[perm], b[perm]
    return a, b


def test_paired_counts_against_a_loop():
    rng = np.random.default_rng(0)
    a = rng.random(300) < 0.3
    b = rng.random(300) < 0.4
    ref = [0, 0, 0, 0]
    for x, y in zip(a, b):
        ref[{(True, True): 0, (True, False): 1, (False, True): 2, (False, False): 3}[(bool(x), bool(y))]] += 1
    assert paired_counts(a, b) == tuple(ref)
    assert paired_counts(a.astype(int), list(b)) == tuple(ref)


@pytest.mark.parametrize(
    "table",
    [(5, 3, 1, 40), (10, 0, 0, 10), (0, 7, 2, 3), (20, 12, 12, 50), (100, 30, 12, 800), (3, 60, 40, 9), (0, 0, 0, 0), (5, 13, 11, 0)],
)
def test_mcnemar_matches_statsmodels(table):
    a, b = _outcomes(*table, rng=np.random.default_rng(1))
    res = mcnemar_test(a, b)
    both, a_only, b_only, neither = table
    exact = (a_only + b_only) < MCNEMAR_EXACT_BELOW
    ref = mcnemar(np.array([[both, a_only], [b_only, neither]]), exact=exact, correction=True)
    assert (res.b, res.c) == (a_only, b_only)
    if a_only + b_only == 0 and not exact:
        return
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-12, abs=1e-12)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-10, abs=1e-15)


def test_mcnemar_forced_modes_match_statsmodels():
    rng = np.random.default_rng(5)
    for _ in range(50):
        counts = rng.integers(0, 60, size=4)
        a, b = _outcomes(*map(int, counts))
        table = np.array([[counts[0], counts[1]], [counts[2], counts[3]]])
        for exact in (True, False):
            if not exact and counts[1] + counts[2] == 0:
                continue
            res = mcnemar_test(a, b, exact=exact)
            ref = mcnemar(table, exact=exact, correction=True)
            assert res.statistic == pytest.approx(ref.statistic, rel=1e-12, abs=1e-12)
            assert res.p_value == pytest.approx(ref.pvalue, rel=1e-10, abs=1e-15)


def test_mismatched_lengths_raise():
    with pytest.raises(FaultlabError):
        mcnemar_test([True, False], [True])
    with pytest.raises(FaultlabError):
        rate_difference_interval([1, 2], [0, 1])


def _newcombe_reference(both, a_only, b_only, neither, conf=0.95):
    """Newcombe (1998) method 10 written out from the paper with statsmodels' Wilson limits."""
    n = both + a_only + b_only + neither
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    l1, u1 = proportion_confint(both + a_only, n, alpha=1 - conf, method="wilson")
    l2, u2 = proportion_confint(both + b_only, n, alpha=1 - conf, method="wilson")
    denom = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    ad_bc = both * neither - a_only * b_only
    if denom == 0:
        phi = 0.0
    elif ad_bc > 0:
        phi = max(ad_bc - n / 2, 0) / math.sqrt(denom)
    else:
        phi = ad_bc / math.sqrt(denom)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return d, lo, hi


@pytest.mark.parametrize("table", [(5, 3, 1, 40), (0, 7, 2, 3), (100, 30, 12, 800), (3, 60, 40, 9), (10, 0, 0, 10), (0, 0, 5, 0)])
def test_rate_difference_matches_written_out_newcombe(table):
    a, b = _outcomes(*table)
    res = rate_difference_interval(a, b, 0.95)
    ref = _newcombe_reference(*table)
    assert res == pytest.approx(ref, abs=1e-12)
    assert res.low <= res.difference <= res.high


def test_rate_difference_with_full_population_is_exact():
    a, b = _outcomes(10, 5, 2, 50)
    res = rate_difference_interval(a, b, population=a.size)
    assert res.low == res.high == pytest.approx(3 / 67)


def _paired_coverage(rng, n, p_a, p_b, rho_flip, draws, population=None):
    """Simulate paired outcomes: B copies A except a fraction of faults redrawn; returns coverage."""
    hits = 0
    if population is not None:
        a_pop = rng.random(population) < p_a
        redraw = rng.random(population) < rho_flip
        b_pop = np.where(redraw, rng.random(population) < p_b, a_pop)
        true = a_pop.mean() - b_pop.mean()
    for _ in range(draws):
        if population is None:
            a = rng.random(n) < p_a
            redraw = rng.random(n) < rho_flip
            b = np.where(redraw, rng.random(n) < p_b, a)
            # the model's true difference: p_a - ((1 - rho) p_a + rho p_b)
            true = rho_flip * (p_a - p_b)
        else:
            idx = rng.choice(population, n, replace=False)
            a, b = a_pop[idx], b_pop[idx]
        res = rate_difference_interval(a, b, 0.95, population=population)
        hits += res.low <= true <= res.high
    return hits / draws


@pytest.mark.parametrize("n,p_a,p_b,rho", [(200, 0.3, 0.1, 0.3), (400, 0.05, 0.02, 0.5), (150, 0.5, 0.5, 0.2), (300, 0.2, 0.6, 0.1)])
def test_rate_difference_coverage(n, p_a, p_b, rho):
    rng = np.random.default_rng(11)
    assert _paired_coverage(rng, n, p_a, p_b, rho, draws=2000) >= 0.93


@pytest.mark.parametrize("N,n", [(600, 400), (2000, 300)])
def test_rate_difference_coverage_with_fpc(N, n):
    rng = np.random.default_rng(12)
    assert _paired_coverage(rng, n, 0.3, 0.1, 0.3, draws=2000, population=N) >= 0.93
