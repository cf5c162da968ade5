"""Kill rule, effect size and power against independent computations (statsmodels formulas, scipy, brute force)."""
from __future__ import annotations

import math
import sqlite3
import json

import pytest
from scipy import stats

from faultlab.mutation import ModelRef, MutationStore, MutationSweep, analyze, cohens_d, compare, power_two_sample, runs_for_power
from faultlab.mutation.statistics import GLMTest, MannWhitneyTest, WelchTest
from faultlab.mutation.sweeps import run_sweep

from .conftest import TOY_FILE


def _nct_power(d: float, n1: int, n2: int, alpha: float) -> float:
    """Two-sided two-sample t-test power from the noncentral t distribution (no statsmodels)."""
    df = n1 + n2 - 2
    nc = abs(d) * math.sqrt(n1 * n2 / (n1 + n2))
    t = stats.t.ppf(1 - alpha / 2, df)
    return float(1 - stats.nct.cdf(t, df, nc) + stats.nct.cdf(-t, df, nc))


def test_cohens_d_uses_pooled_sd(rng):
    a, b = rng.normal(0, 1, 7), rng.normal(1, 2, 11)
    sp = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    assert cohens_d(a, b) == pytest.approx((b.mean() - a.mean()) / sp, rel=1e-12)


@pytest.mark.parametrize("d,n1,n2", [(0.3, 20, 20), (0.8, 10, 15), (1.7, 5, 5), (-0.6, 12, 8)])
def test_power_is_two_sample_t_power(d, n1, n2):
    assert power_two_sample(d, n1, n2, 0.05) == pytest.approx(_nct_power(d, n1, n2, 0.05), abs=1e-6)


@pytest.mark.parametrize("d", [0.5, 0.8, 1.3, 2.5])
def test_runs_for_power_is_smallest_n_reaching_80_percent(d):
    brute = next(n for n in range(2, 500) if _nct_power(d, n, n, 0.05) >= 0.8)
    assert runs_for_power(d) == brute


def test_alternative_tests_match_scipy(rng):
    a, b = rng.normal(0, 1, 9), rng.normal(0.5, 1.5, 12)
    assert WelchTest().p_value(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert MannWhitneyTest().p_value(a, b) == pytest.approx(stats.mannwhitneyu(a, b).pvalue, rel=1e-12)


def test_glm_wald_p_matches_normal_approximation_of_ols(rng):
    """Gaussian GLM Wald p = 2*(1 - Phi(|beta/se|)) with the OLS coefficient and scale (independent formula)."""
    a, b = rng.normal(0, 1, 8), rng.normal(0.7, 1, 8)
    n = len(a) + len(b)
    beta = b.mean() - a.mean()
    s2 = (((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / (n - 2)
    se = math.sqrt(s2 * (1 / len(a) + 1 / len(b)))
    assert GLMTest().p_value(a, b) == pytest.approx(2 * stats.norm.sf(abs(beta / se)), rel=1e-9)


def test_kill_rule_direction_and_effect():
    base = [0.90, 0.91, 0.89, 0.90, 0.92, 0.88]
    worse = [v - 0.05 for v in base]
    better = [v + 0.05 for v in base]
    assert compare(base, worse, direction="higher").killed is True
    assert compare(base, better, direction="higher").killed is False  # better is not harmful
    assert compare(base, better, direction="lower").killed is True
    tiny = [v - 0.001 for v in base]  # significant? no; and d small
    assert compare(base, tiny, direction="higher").killed is False
    assert compare(base, [0.5], direction="higher").killed is None  # one run: undecidable


def test_kill_rule_matches_independent_statsmodels_on_stored_runs(tmp_path, toy_env):
    """Decisions from the store equal a from-scratch statsmodels GLM fit on the raw SQLite rows."""
    import pandas as pd
    import statsmodels.formula.api as smf
    import statsmodels.api as sm

    store = MutationStore(path=tmp_path)
    sweep = MutationSweep(model=ModelRef(name="toy", models_file=TOY_FILE), store=store, runs=6)
    configs = [("shift", v) for v in (0.002, 0.01, 0.03)] + [("activation", "tanh"), ("activation", "sigmoid")]
    run_sweep(sweep, configs)
    result = analyze(store, metric="val_accuracy")
    store.close()

    con = sqlite3.connect(tmp_path / "mutation.sqlite")
    rows = con.execute("SELECT m.operator, m.value_json, r.metrics_json, 1 FROM mutants m JOIN runs r ON r.config_hash=m.config_hash "
                       "UNION ALL SELECT 'original', NULL, r.metrics_json, 0 FROM runs r JOIN configs c ON c.config_hash=r.config_hash "
                       "WHERE c.operator IS NULL").fetchall()
    con.close()
    df = pd.DataFrame([(op, None if v is None else json.loads(v), json.loads(m)["val_accuracy"], mut) for op, v, m, mut in rows],
                      columns=["operator", "value", "metric", "is_mutant"])
    orig = df[df.is_mutant == 0]
    assert len(result.mutants) == len(configs)
    n_killed = 0
    for m in result.mutants:
        mut = df[(df.operator == m.operator) & (df.value == m.value)]
        data = pd.concat([orig, mut])
        fit = smf.glm("metric ~ is_mutant", data=data, family=sm.families.Gaussian()).fit()
        p = float(fit.pvalues["is_mutant"])
        sp = math.sqrt(((len(orig) - 1) * orig.metric.var() + (len(mut) - 1) * mut.metric.var()) / (len(orig) + len(mut) - 2))
        d = (mut.metric.mean() - orig.metric.mean()) / sp
        assert m.comparison.p_value == pytest.approx(p, rel=1e-9)
        assert m.comparison.effect_size == pytest.approx(d, rel=1e-9)
        expected = bool(p < 0.05 and abs(d) >= 0.5 and d < 0)
        assert m.comparison.killed is expected
        n_killed += expected
    assert 0 < n_killed < len(configs)  # the fixture has both killed and surviving mutants


def test_mann_whitney_smallest_p_matches_scipy():
    import numpy as np

    from faultlab.mutation.statistics import mann_whitney_min_p

    for n in (2, 3, 4, 5):
        separated = stats.mannwhitneyu(np.arange(n), np.arange(n) + 100, method="exact").pvalue
        assert mann_whitney_min_p(n, n) == pytest.approx(separated)
    assert mann_whitney_min_p(3, 3) == pytest.approx(0.1) and mann_whitney_min_p(4, 4) < 0.05


def test_kill_options_are_validated():
    from faultlab.errors import FaultlabError
    from faultlab.mutation.statistics import check_kill_options

    check_kill_options(alpha=0.05, min_effect=0.0, direction="lower")
    for kw, pattern in (({"alpha": 0.0, "min_effect": 0.5}, "--alpha"), ({"alpha": 1.5, "min_effect": 0.5}, "--alpha"),
                        ({"alpha": 0.05, "min_effect": -0.1}, "--min-effect"),
                        ({"alpha": 0.05, "min_effect": 0.5, "direction": "up"}, "--direction")):
        with pytest.raises(FaultlabError, match=pattern):
            check_kill_options(**kw)
