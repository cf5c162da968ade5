"""Planners: strata, sizes, seeded sampling without replacement, fault fields."""
from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from faultlab.bits import flip_bits
from faultlab.errors import FaultlabError
from faultlab.faults import FaultList, Site
from faultlab.planning import (
    FLOAT_LAYOUTS,
    ExhaustivePlanner,
    Plan,
    Planner,
    RandomPlanner,
    StatisticalPlanner,
    bit_fields,
    sample_distinct,
    stratify,
)
from faultlab.stats import leveugle_sample_size

SITES = [
    Site("conv1", "weight", "conv1", "Conv2d", (4, 1, 3, 3), "float32"),
    Site("conv1.bias", "weight", "conv1", "Conv2d", (4,), "float32"),
    Site("fc", "weight", "fc", "Linear", (10, 36), "float16"),
    Site("q", "weight", "q", "QLinear", (5, 6), "int8"),
    Site("conv1", "activation", "conv1", "Conv2d", (4, 6, 6), "float32"),
]


def _all_triples(sites, bits=None):
    """Every (name, index, bit) by brute force."""
    out = []
    for s in sites:
        positions = range(s.bit_width) if bits is None else [b for b in bits if b < s.bit_width]
        for idx in itertools.product(*[range(d) for d in s.shape]):
            for b in positions:
                out.append((s.name, idx, b))
    return out


def _triples(faults):
    return [(f.layer, f.index, f.bits[0]) for f in faults]


# ----- bit fields -----
def test_float_layouts_match_torch_finfo():
    for name, (s, e, m) in FLOAT_LAYOUTS.items():
        fi = torch.finfo(getattr(torch, name))
        nmant = int(round(-np.log2(fi.eps)))
        assert (s, e, m) == (1, fi.bits - 1 - nmant, nmant)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_bit_fields_behave_as_named_when_flipped(dtype):
    f = bit_fields(dtype)
    x = np.array([1.5], dtype=dtype)
    assert flip_bits(x, f["sign"])[0] == -1.5
    for b in f["mantissa"]:  # mantissa flips stay within the same binade
        assert 1.0 <= flip_bits(x, [b])[0] < 2.0
    for b in f["exponent"]:  # exponent flips change the power of two
        y = float(flip_bits(x, [b])[0])
        assert not (1.0 <= abs(y) < 2.0)
    assert sorted(f["sign"] + f["exponent"] + f["mantissa"]) == list(range(x.dtype.itemsize * 8))


def test_bfloat16_and_integer_fields():
    f = bit_fields("bfloat16")
    x = torch.tensor([1.5], dtype=torch.bfloat16)
    assert flip_bits(x, f["sign"]).item() == -1.5
    assert all(1.0 <= flip_bits(x, [b]).item() < 2.0 for b in f["mantissa"])
    assert bit_fields("int8") == {"sign": (7,), "magnitude": tuple(range(7))}
    assert flip_bits(np.array([5], dtype=np.int8), [7])[0] < 0
    assert bit_fields("uint8") == {"magnitude": tuple(range(8))}


# ----- sampling -----
def test_sample_distinct_is_distinct_in_range_and_seeded():
    for N, n in [(10, 10), (1000, 999), (10**6, 5000), (10**15, 2000)]:
        a = sample_distinct(np.random.default_rng(1), N, n)
        b = sample_distinct(np.random.default_rng(1), N, n)
        assert len(np.unique(a)) == n and a.min() >= 0 and a.max() < N
        np.testing.assert_array_equal(a, b)


def test_sample_distinct_billions_without_materialising():
    # 10**15 int64 would be 8 PB: this only passes if the population is never listed.
    s = sample_distinct(np.random.default_rng(0), 10**15, 50_000)
    assert len(np.unique(s)) == 50_000


def test_sample_distinct_respects_exclusions():
    rng = np.random.default_rng(3)
    for N, first, more in [(100, 40, 60), (10**7, 1000, 3000)]:
        a = sample_distinct(rng, N, first)
        b = sample_distinct(rng, N, more, exclude=a)
        assert len(np.intersect1d(a, b)) == 0 and len(np.unique(b)) == more
    with pytest.raises(FaultlabError):
        sample_distinct(rng, 10, 5, exclude=np.arange(6))


@pytest.mark.parametrize("N,n", [(200_000, 500), (1000, 100)])  # the sparse and the dense method
def test_sample_distinct_is_uniform(N, n):
    rng = np.random.default_rng(42)
    counts = np.zeros(100)
    first = np.zeros(100)
    for _ in range(400):
        s = sample_distinct(rng, N, n)
        counts += np.bincount(s * 100 // N, minlength=100)
        first += np.bincount(s[:1] * 100 // N, minlength=100)  # order is random too
    assert chisquare(counts).pvalue > 1e-3
    assert chisquare(first + 0.0).pvalue > 1e-3


# ----- strata -----
@pytest.mark.parametrize("by", ["model", "layer", "layer-bit", "bit-field"])
def test_strata_partition_every_triple_once(by):
    weights = [s for s in SITES if s.kind == "weight"]
    pops = stratify(weights, by)
    listed = [t for p in pops for t in _triples(p.faults(np.arange(p.size)))]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(_all_triples(weights))
    assert sum(p.size for p in pops) == len(listed)


def test_strata_names_and_bit_field_membership():
    weights = [s for s in SITES if s.kind == "weight"]
    assert [p.name for p in stratify(weights, "layer")] == ["conv1", "conv1.bias", "fc", "q"]
    assert [p.name for p in stratify(weights, "bit-field")] == ["sign", "exponent", "mantissa", "magnitude"]
    names = [p.name for p in stratify(weights, "layer-bit")]
    assert names[0] == "conv1:bit31" and len(names) == 32 + 32 + 16 + 8
    by_field = {p.name: p for p in stratify(weights, "bit-field")}
    for f in by_field["exponent"].faults(np.arange(by_field["exponent"].size)):
        dtype = next(s.dtype for s in weights if s.name == f.layer)
        assert f.bits[0] in bit_fields(dtype)["exponent"]
    assert {f.layer for f in by_field["magnitude"].faults(np.arange(by_field["magnitude"].size))} == {"q"}


# ----- planners -----
def test_planners_share_one_interface():
    for planner in (RandomPlanner(n=5), ExhaustivePlanner(), StatisticalPlanner(margin=0.05)):
        assert isinstance(planner, Planner)
        plan = planner.plan(SITES, seed=0)
        assert isinstance(plan, Plan) and isinstance(plan.faults, FaultList)
        assert [f.id for f in plan.faults] == list(range(plan.total)) and len(plan.faults) == plan.total


def test_random_planner_is_seeded_distinct_and_uniform_over_element_bit():
    p1 = RandomPlanner(n=300).plan(SITES, seed=7)
    p2 = RandomPlanner(n=300).plan(SITES, seed=7)
    p3 = RandomPlanner(n=300).plan(SITES, seed=8)
    assert _triples(p1.faults) == _triples(p2.faults) != _triples(p3.faults)
    assert len(set(_triples(p1.faults))) == 300
    assert set(_triples(p1.faults)) <= set(_all_triples([s for s in SITES if s.kind == "weight"]))
    assert all(f.site == "weight" and f.model == "flip" for f in p1.faults)
    # Share of faults per site ~ its share of (element, bit) pairs.
    weights = [s for s in SITES if s.kind == "weight"]
    big = RandomPlanner(n=3000).plan(SITES, seed=1)
    sizes = np.array([s.numel * s.bit_width for s in weights])
    got = np.array([sum(f.layer == s.name for f in big.faults) for s in weights])
    assert chisquare(got, sizes / sizes.sum() * got.sum()).pvalue > 1e-3


def test_random_planner_options():
    plan = RandomPlanner(n=20, site_kind="activation", bits=[30, "sign"], model="stuck1").plan(SITES, seed=0)
    assert all(f.site == "activation" and f.layer == "conv1" and f.bits[0] in (30, 31) and f.model == "stuck1" for f in plan.faults)
    assert all(len(f.index) == 3 for f in plan.faults)
    plan = RandomPlanner(n=10, layers=["fc"]).plan(SITES, seed=0)
    assert {f.layer for f in plan.faults} == {"fc"}
    assert {f.layer for f in RandomPlanner(n=50, layers=["conv1"]).plan(SITES, seed=0).faults} == {"conv1", "conv1.bias"}


def test_random_planner_more_than_population_repeats_with_a_warning(caplog):
    tiny = [Site("t", "weight", "t", "Linear", (2,), "int8")]
    with caplog.at_level(logging.WARNING, logger="faultlab"):
        plan = RandomPlanner(n=40).plan(tiny, seed=0)
    assert len(plan.faults) == 40 and len(set(_triples(plan.faults))) <= 16
    assert "with replacement" in caplog.text


def test_exhaustive_planner_lists_everything_and_guards_size():
    plan = ExhaustivePlanner(layers=["fc", "q"]).plan(SITES, seed=0)
    assert _triples(plan.faults) == _all_triples([SITES[2], SITES[3]])
    assert [(s.name, s.N, s.n) for s in plan.strata] == [("fc", 360 * 16, 360 * 16), ("q", 30 * 8, 30 * 8)]
    huge = [Site("big", "weight", "big", "Linear", (4096, 4096), "float32")]
    with pytest.raises(FaultlabError, match="max_faults"):
        ExhaustivePlanner().plan(huge, seed=0)


@pytest.mark.parametrize("by", ["model", "layer", "layer-bit", "bit-field"])
def test_statistical_planner_sizes_each_stratum_with_leveugle(by):
    weights = [s for s in SITES if s.kind == "weight"]
    plan = StatisticalPlanner(margin=0.05, confidence=0.9, by=by).plan(SITES, seed=3)
    pops = stratify(weights, by)
    assert [s.name for s in plan.strata] == [p.name for p in pops]
    for row, pop in zip(plan.strata, pops):
        assert row.N == pop.size and row.n == leveugle_sample_size(pop.size, 0.05, 0.9)
        mine = [plan.faults[i] for i in range(plan.total) if plan.stratum_of(i) == row]
        assert len(mine) == row.n and len(set(_triples(mine))) == row.n  # without replacement
        assert set(_triples(mine)) <= set(_triples(pop.faults(np.arange(pop.size))))
    assert plan.total == sum(s.n for s in plan.strata) == len(plan.faults)
    doc = json.loads(json.dumps(plan.to_json()))
    assert doc == {"strata": [{"name": s.name, "N": s.N, "n": s.n} for s in plan.strata], "total": plan.total}


def test_statistical_planner_t_override_and_seed():
    big = [Site("fc", "weight", "fc", "Linear", (268_336,), "float32")]
    assert StatisticalPlanner(margin=0.01, confidence=0.99).plan(big, seed=0).total == 16_556
    assert StatisticalPlanner(margin=0.01, confidence=0.99, t=2.58).plan(big, seed=0).total == 16_609
    a = StatisticalPlanner(margin=0.05, by="layer").plan(SITES, seed=5)
    b = StatisticalPlanner(margin=0.05, by="layer").plan(SITES, seed=5)
    assert a == b and a.faults.fingerprint() == b.faults.fingerprint()


def test_statistical_planner_on_billions_of_sites():
    # 4 * 10**10 (element, bit) pairs in one stratum per bit: sampled without listing them.
    huge = [Site("emb", "weight", "emb", "Embedding", (50_000, 25_000), "float32")]
    plan = StatisticalPlanner(margin=0.05, by="bit-field").plan(huge, seed=0)
    assert plan.strata[0].N == 50_000 * 25_000 and plan.total == 3 * 385
    assert len(set(_triples(plan.faults))) == plan.total
    assert all(0 <= f.index[0] < 50_000 and 0 <= f.index[1] < 25_000 for f in plan.faults)


def test_plan_writes_a_fault_list_that_reads_back(tmp_path):
    plan = StatisticalPlanner(margin=0.1, by="layer").plan(SITES, seed=0)
    back = FaultList.from_csv(plan.faults.to_csv(tmp_path / "faults.csv"))
    assert back.fingerprint() == plan.faults.fingerprint()


@pytest.mark.parametrize(
    "make",
    [
        lambda: StatisticalPlanner(margin=0.05, by="neuron"),
        lambda: StatisticalPlanner(margin=5),
        lambda: StatisticalPlanner(margin=0.05, site_kind="bias"),
        lambda: RandomPlanner(n=-1),
        lambda: RandomPlanner(n=5, model="zero"),
    ],
)
def test_bad_settings_raise(make):
    with pytest.raises(FaultlabError):
        make()


@pytest.mark.parametrize(
    "planner,seed",
    [
        (RandomPlanner(n=5, layers=["nope"]), 0),
        (RandomPlanner(n=5, bits=[40]), 0),
        (RandomPlanner(n=5, bits=["fraction"]), 0),
        (RandomPlanner(n=5), -1),
        (StatisticalPlanner(margin=0.05), 1.5),
    ],
)
def test_bad_plan_input_raises(planner, seed):
    with pytest.raises(FaultlabError):
        planner.plan(SITES, seed=seed)
    with pytest.raises(FaultlabError):
        RandomPlanner(n=5, site_kind="activation").plan([s for s in SITES if s.kind == "weight"], seed=0)
