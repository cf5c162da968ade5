"""Rate tables and per-input exports against independent computations (statsmodels, loops)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from faultlab.faults import Site
from report_helpers import fpc_wilson
from faultlab.report.export import (
    ALL_LAYERS, bit_field, critical_faults, field_table, layer_bit_matrix, outcome_breakdown, per_input_frame, rate_table,
)


def synthetic_results(rng, layers: dict[str, int], *, n_inputs: int = 20, p: float = 0.3) -> pd.DataFrame:
    """A results frame like CampaignStore.results_frame(with_codes=True), from random per-input codes."""
    rows, fid = [], 0
    for layer, count in layers.items():
        flat = rng.choice(64 * 32, size=count, replace=False)
        for f in flat:
            elem, bit = divmod(int(f), 32)
            codes = rng.choice(5, size=n_inputs, p=[0.5 - p / 2, 0.5 - p / 2, p * 0.5, p * 0.3, p * 0.2]).astype(np.uint8)
            c = np.bincount(codes, minlength=5)
            rows.append({
                "fault_id": fid, "layer": layer, "idx": f"({elem},)", "bits": str(bit), "site": "weight", "model": "flip", "value": None,
                "input": None, "stratum": None, "n": n_inputs, "masked": c[0], "non_critical": c[1], "sdc1": c[2] + c[3], "sdc5": c[3], "due": c[4],
                "top1_correct": 0, "top5_correct": 0, "top1_robust": 0, "top5_robust": 0, "engine": "exact", "codes": codes,
            })
            fid += 1
    return pd.DataFrame(rows)


SITES = {("weight", name): Site(name, "weight", name, "Linear", (64,), "float32") for name in ("a", "b", "c")}


def test_fault_and_pair_rates_match_statsmodels_without_fpc(rng):
    res = synthetic_results(rng, {"a": 30, "b": 50})
    t = rate_table(res, confidence=0.9)
    for layer in ("a", "b"):
        g = res[res["layer"] == layer]
        row = t[t["layer"] == layer].iloc[0]
        for e in ("sdc1", "sdc5", "due"):
            k = int(sum(1 for v in g[e] if v > 0))
            lo, hi = proportion_confint(k, len(g), alpha=0.1, method="wilson")
            assert row[f"{e}_faults"] == k
            assert row[f"{e}_fault_rate"] == pytest.approx(k / len(g))
            assert (row[f"{e}_fault_lo"], row[f"{e}_fault_hi"]) == pytest.approx((lo, hi), abs=1e-12)
            kp, np_ = int(g[e].sum()), int(g["n"].sum())
            # over pairs: faults are the units (Kish's effective n for per-fault input counts; every fault saw 20 inputs here)
            n_eff = np_**2 / float((g["n"].astype(float) ** 2).sum())
            assert n_eff == pytest.approx(len(g))
            lo, hi = proportion_confint(kp / np_ * n_eff, n_eff, alpha=0.1, method="wilson")
            assert (row[f"{e}_pair_rate"], row[f"{e}_pair_lo"], row[f"{e}_pair_hi"]) == pytest.approx((kp / np_, lo, hi), abs=1e-12)
        assert not row["fpc"] and row["fpc_note"] == "site shapes unknown"


def test_fpc_interval_uses_layer_population(rng):
    from scipy.stats import norm

    res = synthetic_results(rng, {"a": 300, "b": 40})
    t = rate_table(res, confidence=0.95, sites=SITES)
    z = norm.ppf(0.975)
    for layer in ("a", "b"):
        g = res[res["layer"] == layer]
        row = t[t["layer"] == layer].iloc[0]
        assert row["population"] == 64 * 32 and row["fpc"]
        k = int((g["sdc1"] > 0).sum())
        lo, hi = fpc_wilson(k, len(g), 64 * 32, z)
        assert (row["sdc1_fault_lo"], row["sdc1_fault_hi"]) == pytest.approx((lo, hi), abs=1e-9)
        assert row["margin"] == pytest.approx((hi - lo) / 2, abs=1e-9)
        plain = proportion_confint(k, len(g), alpha=0.05, method="wilson")
        assert hi - lo < plain[1] - plain[0]  # the correction narrows the interval


def test_unequal_sampling_gives_population_weighted_total(rng):
    sites = dict(SITES)
    sites[("weight", "b")] = Site("b", "weight", "b", "Linear", (640,), "float32")  # 10x the population of a
    res = synthetic_results(rng, {"a": 60, "b": 60})
    res.loc[res["layer"] == "b", "idx"] = [f"({i},)" for i in range(60)]  # distinct elements in b's larger tensor
    t = rate_table(res, sites=sites)
    total = t[t["layer"] == ALL_LAYERS].iloc[0]
    pa = (res[res["layer"] == "a"]["sdc1"] > 0).mean()
    pb = (res[res["layer"] == "b"]["sdc1"] > 0).mean()
    na, nb = 64 * 32, 640 * 32
    assert total["sdc1_fault_rate"] == pytest.approx((na * pa + nb * pb) / (na + nb))
    assert total["weighted"] and not total["fpc"]
    assert total["n_eff"] == pytest.approx((na + nb) ** 2 / (na**2 / 60 + nb**2 / 60))
    # the interval: Wilson on the smaller of Kish's n and the design-based p(1-p)/V with per-layer variances
    rate, wa, wb = total["sdc1_fault_rate"], na / (na + nb), nb / (na + nb)
    var = wa**2 * pa * (1 - pa) / 59 + wb**2 * pb * (1 - pb) / 59
    n_use = min(total["n_eff"], rate * (1 - rate) / var) if var > 0 else total["n_eff"]  # no spread within layers: Kish
    lo, hi = proportion_confint(rate * n_use, n_use, method="wilson")
    assert (total["sdc1_fault_lo"], total["sdc1_fault_hi"]) == pytest.approx((lo, hi), abs=1e-9)


def test_weighted_interval_covers_when_a_heavy_thin_layer_is_near_one_half():
    """Regression: Wilson on Kish's n alone uses the pooled p(1-p); with two equal-population layers, one
    sampled 30 times at a rate of 0.5 and one 3,000 times at 0.01, it covered 90 % for a nominal 95 %.
    Checked by simulation: per-fault SDC outcomes drawn with numpy, truth = the population-weighted rate."""
    from faultlab.report.export import Population, _fault_interval

    rng = np.random.default_rng(0)
    n_a, n_b, p_a, p_b = 30, 3000, 0.5, 0.01
    pop = Population({("weight", "a"): 32_000, ("weight", "b"): 32_000})
    g = pd.DataFrame({"site": "weight", "layer": ["a"] * n_a + ["b"] * n_b})
    truth, reps, covered = 0.5 * p_a + 0.5 * p_b, 2000, 0
    for _ in range(reps):
        flag = np.concatenate([rng.random(n_a) < p_a, rng.random(n_b) < p_b])
        rate, lo, hi, n_kish = _fault_interval(g.assign(any_sdc1=flag), "any_sdc1", 0.95, pop)
        assert n_kish == pytest.approx(64_000**2 / (32_000**2 / n_a + 32_000**2 / n_b))
        covered += lo <= truth <= hi
    # Kish alone: 0.90 (20,000 simulated campaigns); now about 0.937 (binomial discreteness at n = 30); SE 0.005
    assert covered / reps >= 0.92


def test_proportional_sampling_pools_with_fpc(rng):
    res = synthetic_results(rng, {"a": 50, "b": 50})
    t = rate_table(res, sites=SITES)
    total = t[t["layer"] == ALL_LAYERS].iloc[0]
    k = int((res["sdc1"] > 0).sum())
    assert not total["weighted"] and total["fpc"] and total["population"] == 2 * 64 * 32
    assert total["sdc1_fault_rate"] == pytest.approx(k / 100)
    # the pooled interval is the Wilson interval with the finite-population correction over both layers' populations
    from scipy.stats import norm

    lo, hi = fpc_wilson(k, 100, 2 * 64 * 32, norm.ppf(0.975))
    assert (total["sdc1_fault_lo"], total["sdc1_fault_hi"]) == pytest.approx((lo, hi), abs=1e-9)
    plain = proportion_confint(k, 100, alpha=0.05, method="wilson")
    assert hi - lo < plain[1] - plain[0]  # and so narrower than without it


def test_repeated_fault_disables_fpc(rng):
    res = synthetic_results(rng, {"a": 20})
    res = pd.concat([res, res.iloc[[0]].assign(fault_id=999)], ignore_index=True)
    row = rate_table(res, sites=SITES).iloc[0]
    assert not row["fpc"] and "repeats" in row["fpc_note"]
    k = int((res["sdc1"] > 0).sum())  # the plain Wilson interval, no correction
    lo, hi = proportion_confint(k, len(res), alpha=0.05, method="wilson")
    assert (row["sdc1_fault_lo"], row["sdc1_fault_hi"]) == pytest.approx((lo, hi), abs=1e-12)


def test_bit_fields_and_bit_tables(rng):
    assert [bit_field(b) for b in (31, 30, 23, 22, 0)] == ["sign", "exponent", "exponent", "mantissa", "mantissa"]
    assert bit_field(15, "float16") == "sign" and bit_field(10, "float16") == "exponent" and bit_field(9, "float16") == "mantissa"
    res = synthetic_results(rng, {"a": 200})
    f = field_table(res, sites=SITES)
    for _, r in f.iterrows():
        g = res[[bit_field(int(b)) == r["field"] for b in res["bits"]]]
        assert r["faults"] == len(g) and r["sdc1_faults"] == int((g["sdc1"] > 0).sum())
        assert r["population"] == 64 * {"sign": 1, "exponent": 8, "mantissa": 23}[r["field"]]
    m = layer_bit_matrix(res)
    for bit in range(32):
        g = res[res["bits"] == str(bit)]
        want = (g["sdc1"] > 0).mean() if len(g) else float("nan")
        got = m.loc[("weight", "a"), bit]
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want)


def test_outcome_breakdown_and_critical_faults(rng):
    res = synthetic_results(rng, {"a": 30, "b": 30})
    b = outcome_breakdown(res)
    pairs = b[b["unit"] == "pairs"].iloc[0]
    allcodes = np.concatenate(list(res["codes"]))
    assert [pairs[o] for o in ("masked", "non_critical", "sdc1", "sdc5", "due")] == list(np.bincount(allcodes, minlength=5))
    faults = b[b["unit"] == "faults"].iloc[0]
    worst = np.bincount([int(c.max()) for c in res["codes"]], minlength=5)
    assert [faults[o] for o in ("masked", "non_critical", "sdc1", "sdc5", "due")] == list(worst)
    top = critical_faults(res, 5)
    ranked = sorted(res.itertuples(), key=lambda r: (-r.sdc1, -r.sdc5, -r.due, r.fault_id))[:5]
    assert list(top["fault_id"]) == [r.fault_id for r in ranked]


def test_per_input_frame_matches_loop(rng):
    res = synthetic_results(rng, {"a": 7}, n_inputs=5)
    res.loc[3, "input"] = 4  # a per-input fault: one code, for input 4
    codes = list(res["codes"])
    codes[3] = np.array([2], np.uint8)
    res["codes"] = codes
    f = per_input_frame(res)
    want = []
    for r in res.itertuples():
        inputs = [int(r.input)] if r.input is not None and not pd.isna(r.input) else list(range(len(r.codes)))
        for i, c in zip(inputs, r.codes):
            want.append((r.fault_id, r.layer, r.site, int(r.bits), i, ["masked", "non_critical", "sdc1", "sdc5", "due"][c]))
    got = list(f[["fault_id", "layer", "site", "bit", "input"]].itertuples(index=False, name=None))
    assert [g + (o,) for g, o in zip(got, f["outcome"].astype(str))] == want


def test_outcome_names_match_the_codes():
    from faultlab import outcomes
    from faultlab.report import export

    assert export.OUTCOME_NAMES == outcomes.OUTCOME_NAMES
    assert [getattr(outcomes, n.upper()) for n in ("masked", "non_critical", "sdc1", "sdc5", "due")] == [0, 1, 2, 3, 4]


def test_bit_field_plan_weights_each_layer_over_its_fields(rng):
    """--by bit-field draws about as many sign as mantissa faults; a layer's rate must weight them by 1 : 8 : 23."""
    rows, fid = [], 0
    for bits, count in (([31], 40), (list(range(23, 31)), 40), (list(range(23)), 40)):
        for elem in range(count):
            bit = bits[elem % len(bits)]
            sdc = int(bit == 31 or (bit == 30 and elem % 2 == 0))
            rows.append({
                "fault_id": fid, "layer": "a", "idx": f"({elem},)", "bits": str(bit), "site": "weight", "model": "flip", "value": None, "input": None,
                "stratum": None, "n": 4, "masked": 4 - sdc, "non_critical": 0, "sdc1": sdc, "sdc5": 0, "due": 0,
            })
            fid += 1
    res = pd.DataFrame(rows)
    row = rate_table(res, sites=SITES, by_field=True).iloc[0]
    p = {f: (res[[bit_field(int(b)) == f for b in res["bits"]]]["sdc1"] > 0).mean() for f in ("sign", "exponent", "mantissa")}
    want = (1 * p["sign"] + 8 * p["exponent"] + 23 * p["mantissa"]) / 32
    assert row["sdc1_fault_rate"] == pytest.approx(want)
    assert row["weighted"]
    plain = rate_table(res, sites=SITES).iloc[0]
    assert plain["sdc1_fault_rate"] == pytest.approx((res["sdc1"] > 0).mean())  # the unweighted fraction differs
    assert abs(plain["sdc1_fault_rate"] - want) > 0.1
