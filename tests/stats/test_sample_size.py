"""Leveugle et al. (DATE 2009) sample sizes: the paper's numbers and the formula itself."""
from __future__ import annotations

import math

import pytest
from scipy.stats import norm

from faultlab.errors import FaultlabError
from faultlab.stats import leveugle_sample_size, normal_quantile

N_PAPER = 268_336 * 32  # (element, bit) sites of the paper's example


def _formula(N: int, e: float, t: float, p: float = 0.5) -> float:
    return N / (1 + e * e * (N - 1) / (t * t * p * (1 - p)))


def test_normal_quantile_matches_scipy():
    for c in (0.8, 0.9, 0.95, 0.99, 0.999):
        assert normal_quantile(c) == pytest.approx(norm.ppf(1 - (1 - c) / 2), rel=1e-12)


def test_issue_example_exact_quantile_gives_16556():
    # The exact 99 % quantile 2.5758... gives 16,556 (the product owner's correction of the issue).
    assert leveugle_sample_size(N_PAPER, 0.01, 0.99) == 16_556
    assert leveugle_sample_size(N_PAPER, 0.01, 0.99) == math.ceil(_formula(N_PAPER, 0.01, norm.ppf(0.995)))


def test_issue_example_paper_table_t_gives_16609():
    assert leveugle_sample_size(N_PAPER, 0.01, 0.99, t=2.58) == 16_609


def test_five_percent_95_large_population_gives_385():
    # n -> t^2 p(1-p)/e^2 = 384.15 as N grows; rounding up gives 385 (with t exact or 1.96).
    for N in (10**9, 10**12, N_PAPER * 1000):
        assert leveugle_sample_size(N, 0.05, 0.95) == 385
        assert leveugle_sample_size(N, 0.05, 0.95, t=1.96) == 385


def test_rounds_up_and_never_exceeds_population():
    for N in (1, 2, 7, 50, 384, 385, 1000, 12_345, 10**6):
        for e in (0.01, 0.05, 0.1):
            for c in (0.9, 0.95, 0.99):
                for p in (0.5, 0.1, 0.02):
                    n = leveugle_sample_size(N, e, c, p)
                    exact = _formula(N, e, normal_quantile(c), p)
                    assert 1 <= n <= N
                    assert n >= exact - 1e-9 and n - exact < 1 + 1e-9


def test_smaller_p_or_wider_margin_needs_fewer_faults():
    N = 10**7
    assert leveugle_sample_size(N, 0.01, 0.95, p=0.1) < leveugle_sample_size(N, 0.01, 0.95, p=0.5)
    assert leveugle_sample_size(N, 0.02, 0.95) < leveugle_sample_size(N, 0.01, 0.95)
    assert leveugle_sample_size(N, 0.01, 0.95, p=0.3) == leveugle_sample_size(N, 0.01, 0.95, p=0.7)


def test_empty_population_needs_nothing():
    assert leveugle_sample_size(0, 0.01, 0.95) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(population=-1, margin=0.01),
        dict(population=10.5, margin=0.01),
        dict(population=100, margin=0),
        dict(population=100, margin=1.5),
        dict(population=100, margin=0.01, confidence=95),
        dict(population=100, margin=0.01, p=0),
        dict(population=100, margin=0.01, p=1.0),
        dict(population=100, margin=0.01, t=-2.0),
    ],
)
def test_bad_input_raises_faultlab_error(kwargs):
    with pytest.raises(FaultlabError):
        leveugle_sample_size(**kwargs)
