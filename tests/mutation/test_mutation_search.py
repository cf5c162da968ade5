"""Threshold search, killability, mutation score, triviality and sequential stopping against brute force."""
from __future__ import annotations

import numpy as np
import pytest

from faultlab.mutation import find_kill_threshold, killability_score, mutation_score, per_input_kill_probability, triviality_score
from faultlab.mutation.search import look_schedule, obrien_fleming_spending, sequential_decision
from faultlab.mutation.statistics import WelchTest


@pytest.mark.parametrize("true_t,precision", [(0.37, 0.01), (0.731, 0.005), (0.02, 0.01)])
def test_binary_search_finds_known_threshold(true_t, precision):
    calls: list[float] = []

    def killed(v: float) -> bool:
        calls.append(v)
        return v >= true_t

    res = find_kill_threshold(killed, default=0.0, extreme=1.0, precision=precision)
    assert res.killable
    assert true_t <= res.threshold <= true_t + precision + 1e-12
    assert len(calls) == len(set(calls))  # no point evaluated twice
    assert len(calls) <= 2 + int(np.ceil(np.log2(1 / precision)))  # binary, not a scan


def test_binary_search_integer_towards_lower_values():
    # e.g. units: default 50, killed when units <= 13; searched towards 1
    res = find_kill_threshold(lambda v: v <= 13, default=50, extreme=1, precision=1, integer=True)
    assert res.threshold == 13


def test_binary_search_reports_unkillable_and_reuses_points():
    evaluated: dict[float, bool] = {}
    calls = []

    def killed(v):
        calls.append(v)
        return v >= 0.5

    first = find_kill_threshold(killed, default=0.0, extreme=1.0, precision=0.01, evaluated=evaluated)
    n = len(calls)
    second = find_kill_threshold(killed, default=0.0, extreme=1.0, precision=0.01, evaluated=evaluated)
    assert len(calls) == n and second.threshold == first.threshold  # all points reused
    none = find_kill_threshold(lambda v: False, default=0.0, extreme=1.0, precision=0.01)
    assert not none.killable and none.killability == 0.0
    assert first.killability == pytest.approx((1.0 - first.threshold) / 1.0)


def test_killability_and_mutation_score_brute_force():
    train = {"lr": {1: True, 2: True, 3: False}, "act": {"a": True, "b": False}, "never": {"x": False}}
    test = {"lr": {1: True, 2: False, 3: True}, "act": {"a": True, "b": True}, "never": {"x": True}}
    assert killability_score(train["lr"]) == pytest.approx(2 / 3)
    brute = []
    for op, kills in train.items():
        ktr = [v for v, k in kills.items() if k]
        if ktr:
            brute.append(sum(1 for v in ktr if test[op].get(v)) / len(ktr))
    assert mutation_score(test, train) == pytest.approx(np.mean(brute))


def test_triviality_matches_loop(rng):
    runs, inputs = 6, 40
    orig = rng.random((runs, inputs)) < 0.8
    mut = rng.random((runs, inputs)) < 0.3
    p = per_input_kill_probability(orig, mut)
    for j in range(inputs):
        right = [i for i in range(runs) if orig[i, j]]
        if not right:
            assert np.isnan(p[j])
        else:
            assert p[j] == pytest.approx(sum(1 for i in right if not mut[i, j]) / len(right))
    assert triviality_score(orig, orig) == 0.0
    assert triviality_score(np.ones((3, 5), bool), np.zeros((3, 5), bool)) == 1.0


def test_spending_sums_to_alpha_and_schedule():
    looks = look_schedule(20, 5)
    assert looks == [5, 10, 15, 20]
    spend = obrien_fleming_spending([n / 20 for n in looks], 0.05)
    assert sum(spend) == pytest.approx(0.05) and all(s >= 0 for s in spend)
    assert spend[0] < spend[-1]  # O'Brien-Fleming spends little early
    # Lan & DeMets' O'Brien-Fleming-type function alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)), from scipy here;
    # its cumulative values at t = 1/4, 1/2, 3/4 are the textbook 0.0001, 0.0056, 0.0236 for alpha = 0.05
    from scipy.stats import norm

    cum = np.cumsum(spend)
    want = [2 - 2 * norm.cdf(norm.ppf(0.975) / np.sqrt(t)) for t in (0.25, 0.5, 0.75)]
    np.testing.assert_allclose(cum[:3], want, rtol=1e-9, atol=1e-15)
    assert [round(float(c), 4) for c in cum[:3]] == [0.0001, 0.0056, 0.0236]


def _simulate(effect: float, sims: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    looks = look_schedule(20, 5)
    a = obrien_fleming_spending([n / 20 for n in looks], 0.05)
    b = obrien_fleming_spending([n / 20 for n in looks], 0.1)
    kills, runs = 0, 0
    for _ in range(sims):
        o, m = rng.normal(0, 1, 20), rng.normal(-effect, 1, 20)
        for k, n in enumerate(looks):
            d = sequential_decision(o[:n], m[:n], alpha_k=a[k], beta_k=b[k], final=k == len(looks) - 1,
                                    test=WelchTest(), direction="higher")
            if d:
                kills += d == "killed"
                runs += n
                break
    return kills / sims, runs / sims


@pytest.mark.slow
def test_sequential_test_controls_false_kills_and_saves_runs():
    false_kill_rate, mean_runs_null = _simulate(0.0, 600, 1)
    assert false_kill_rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 600)
    assert mean_runs_null < 20  # futility stops save trainings when nothing happens
    kill_rate, mean_runs_big = _simulate(2.0, 200, 2)
    assert kill_rate > 0.9 and mean_runs_big < 15  # large harmful effects stop early as killed
