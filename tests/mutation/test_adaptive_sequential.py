"""The adaptive (group-sequential) kill against an independent spending function and a Monte Carlo of its claims.

docs/mutation.md: kill at a look when p is below the O'Brien-Fleming (Lan-DeMets) share of alpha spent
there and |d| >= 0.5 harmful; stop as survived when a one-sided t-test rejects "harmful effect >= 0.5 SD"
at that look's share of beta = 0.1; false kills stay below alpha, early survivals of a >= 0.5 SD harmful
mutant below beta. The Monte Carlo runs faultlab's decision function look by look, as ``run_adaptive`` does.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from faultlab.mutation.search import look_schedule, obrien_fleming_spending, sequential_decision
from faultlab.mutation.statistics import GLMTest, MannWhitneyTest, WelchTest

ALPHA, BETA = 0.05, 0.1


def lan_demets_obf(t: float, total: float) -> float:
    """Cumulative error spent by information fraction t: alpha(t) = 2 - 2 Phi(z_{alpha/2} / sqrt(t))."""
    return 2.0 - 2.0 * stats.norm.cdf(stats.norm.isf(total / 2) / np.sqrt(t))


@pytest.mark.parametrize("runs,round_size", [(20, 5), (10, 3), (20, 1), (7, 5), (3, 5)])
@pytest.mark.parametrize("total", [ALPHA, BETA])
def test_spending_is_lan_demets_obrien_fleming(runs, round_size, total):
    looks = look_schedule(runs, round_size)
    assert looks[-1] == runs and looks == sorted(set(looks)) and looks[0] >= min(3, runs)
    got = obrien_fleming_spending([n / runs for n in looks], total)
    cumulative = np.array([lan_demets_obf(n / runs, total) for n in looks])
    np.testing.assert_allclose(np.cumsum(got), cumulative, rtol=1e-9, atol=1e-15)
    assert sum(got) == pytest.approx(total, rel=1e-12) and all(g >= 0 for g in got)


def _simulate(runs: int, round_size: int, effect: float, direction: str, test, n_sims: int, seed: int):
    """(kills, early survivals) of ``n_sims`` adaptive mutants with normal metrics, mutant mean shifted by ``effect`` SD."""
    looks = look_schedule(runs, round_size)
    fr = [n / runs for n in looks]
    a, b = obrien_fleming_spending(fr, ALPHA), obrien_fleming_spending(fr, BETA)
    rng = np.random.default_rng(seed)
    kills = early = 0
    for _ in range(n_sims):
        o, m = rng.normal(size=runs), rng.normal(size=runs) + effect
        for k, n in enumerate(looks):
            final = k == len(looks) - 1
            d = sequential_decision(o[:n], m[:n], alpha_k=a[k], beta_k=b[k], final=final, test=test,
                                    direction=direction)
            if d is not None:
                kills += d == "killed"
                early += d == "survived" and not final
                break
    return kills, early


def _upper(count: int, n: int) -> float:
    """One-sided 99 % Clopper-Pearson upper bound of a rate."""
    return float(stats.beta.ppf(0.99, count + 1, n - count)) if count < n else 1.0


@pytest.mark.parametrize("runs,round_size,test", [
    (5, 3, GLMTest()),   # looks at 3 and 5 runs: the Wald z's light tails must not leak into the spent alpha
    (4, 3, GLMTest()),
    (20, 5, GLMTest()),  # the defaults
    (5, 3, WelchTest()),
])
def test_false_kills_stay_below_alpha(runs, round_size, test):
    n_sims = 2000
    kills, _ = _simulate(runs, round_size, 0.0, "higher", test, n_sims, seed=runs * 10 + round_size)
    assert _upper(kills, n_sims) < ALPHA, f"{kills}/{n_sims} false kills"


@pytest.mark.parametrize("runs,round_size,direction", [(20, 5, "higher"), (10, 3, "lower"), (5, 3, "higher"),
                                                       (9, 1, "lower")])
def test_early_survivals_of_harmful_mutants_stay_below_beta(runs, round_size, direction):
    n_sims = 1000
    effect = -0.5 if direction == "higher" else 0.5  # exactly the smallest effect that must be caught
    kills, early = _simulate(runs, round_size, effect, direction, GLMTest(), n_sims, seed=runs + round_size)
    assert _upper(early, n_sims) < BETA, f"{early}/{n_sims} early survivals"
    assert kills > 0.05 * n_sims  # the harmful mutants do get killed (power at d = 0.5 is low with few runs)


def test_mann_whitney_looks_never_kill_below_their_smallest_p():
    """The exact Mann-Whitney p cannot go below 2/C(2n, n): at 3 runs per side no look's share of alpha is reachable."""
    o, m = np.arange(3.0), np.arange(3.0) + 10
    assert sequential_decision(o, m, alpha_k=0.05, beta_k=0.1, final=False, test=MannWhitneyTest(),
                               direction="lower") is None
    assert sequential_decision(o, m, alpha_k=0.11, beta_k=0.1, final=False, test=MannWhitneyTest(),
                               direction="lower") == "killed"


def test_glm_wald_statistic_is_the_pooled_t():
    """Why the GLM's looks are referred to Student's t: its Wald z is the pooled two-sample t statistic."""
    rng = np.random.default_rng(5)
    o, m = rng.normal(size=4), rng.normal(size=6) + 0.3
    t = stats.ttest_ind(o, m, equal_var=True).statistic
    assert GLMTest().p_value(o, m) == pytest.approx(2 * stats.norm.sf(abs(t)), rel=1e-9)
