"""Intervals on rates over (fault, input) pairs: faults, not pairs, are the sampled units."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from faultlab.errors import FaultlabError
from faultlab.report import layer_table
from faultlab.stats import pair_rate_interval

INPUTS = 100


def _population(rng: np.random.Generator, size: int = 20_000) -> np.ndarray:
    """Per-fault SDC counts over INPUTS inputs, as campaigns see them: most faults masked everywhere,
    a few hitting a few inputs, a few hitting most (a fault's inputs are strongly correlated)."""
    u = rng.random(size)
    rate = np.where(u < 0.9, 0.0, np.where(u < 0.97, rng.beta(0.5, 5.0, size), rng.beta(5.0, 1.0, size)))
    return (rng.random((size, INPUTS)) < rate[:, None]).sum(axis=1)


def _results(k: np.ndarray, n: np.ndarray, layer: str = "fc") -> pd.DataFrame:
    zeros = np.zeros(len(k), dtype=np.int64)
    return pd.DataFrame({"site": "weight", "layer": layer, "n": n, "masked": n - k, "non_critical": zeros, "sdc1": k, "sdc5": zeros, "due": zeros})


@pytest.mark.parametrize("faults", [30, 200])
def test_layer_table_intervals_cover_the_population_pair_rate(faults):
    # the per-layer table every run prints: its SDC-1 interval must cover the population's pair rate about 95 % of
    # the time over repeated draws of the fault list; over pairs as if independent it covered 15-30 % here
    rng = np.random.default_rng(faults)
    pop = _population(rng)
    truth = pop.sum() / (len(pop) * INPUTS)
    draws, hits = 400, 0
    for _ in range(draws):
        k = pop[rng.choice(len(pop), faults, replace=False)]
        row = layer_table(_results(k, np.full(faults, INPUTS))).iloc[0]
        assert row["sdc1_rate"] == pytest.approx(k.sum() / (faults * INPUTS))
        hits += row["sdc1_lo"] <= truth <= row["sdc1_hi"]
    assert hits / draws >= 0.93


def test_pair_interval_is_wilson_on_kish_effective_size_against_statsmodels():
    rng = np.random.default_rng(3)
    n = rng.integers(1, 50, size=40)  # faults with different input counts (e.g. some run on one input only)
    k = rng.binomial(n, 0.2)
    n_eff = n.sum() ** 2 / float((n.astype(float) ** 2).sum())
    ref = proportion_confint(k.sum() / n.sum() * n_eff, n_eff, alpha=0.05, method="wilson")
    got = pair_rate_interval(int(k.sum()), int(n.sum()), float((n.astype(float) ** 2).sum()))
    assert got == pytest.approx(ref, abs=1e-12)
    # one input per fault: the pairs are the faults, plain Wilson over them
    assert pair_rate_interval(7, 50, 50) == pytest.approx(proportion_confint(7, 50, method="wilson"), abs=1e-12)
    # no pairs: nothing known
    assert pair_rate_interval(0, 0, 0) == (0.0, 1.0)


def test_store_sums_give_the_same_table_as_the_frame(tmp_path):
    # layer_sums() carries the sum of squared input counts, so the constant-memory path sizes intervals the same way
    rng = np.random.default_rng(5)
    n = rng.integers(1, 30, size=25)
    k = rng.binomial(n, 0.4)
    frame = pd.concat([_results(k[:10], n[:10], "a"), _results(k[10:], n[10:], "b")], ignore_index=True)
    sums = frame.assign(n_nn=frame["n"] ** 2).groupby(["site", "layer"], sort=False)[["n", "masked", "non_critical", "sdc1", "sdc5", "due", "n_nn"]].sum()
    sums.insert(0, "faults", frame.groupby(["site", "layer"], sort=False).size())
    a, b = layer_table(frame), layer_table(sums.reset_index())
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert a.loc[a["layer"] == "a", "sdc1_lo"].iloc[0] == pytest.approx(
        pair_rate_interval(int(k[:10].sum()), int(n[:10].sum()), float((n[:10] ** 2).sum()))[0])


def test_bad_counts_are_refused():
    with pytest.raises(FaultlabError, match="0 <= k <= n"):
        pair_rate_interval(5, 3, 9)
    with pytest.raises(FaultlabError, match="between n and n"):
        pair_rate_interval(1, 3, 10)
    with pytest.raises(FaultlabError, match="finite"):
        pair_rate_interval(float("nan"), 3, 9)
