"""Seeded repair runs reproduce exactly: the same seed gives the same rows, whatever torch's thread count."""
from __future__ import annotations

import math

import pytest

from faultlab.rnn.repair_backdoor import BackdoorSetup, run_backdoor
from faultlab.rnn.repair_segment import SegmentSetup, run_segment_repair


def _twice(fn):
    """``fn()`` with torch's default threads and again with one thread (another summation order if any were free)."""
    import torch

    first = fn()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        second = fn()
    finally:
        torch.set_num_threads(threads)
    return first, second


@pytest.mark.slow
def test_segment_repair_reproduces_from_its_seed():
    setup = SegmentSetup(n_train=150, n_test=300, epochs=6, max_targets=10, components=10)
    a, b = _twice(lambda: run_segment_repair(setup, seed=1))
    assert a == b
    assert a != run_segment_repair(setup, seed=2)  # the seed matters: another one draws other data


@pytest.mark.slow
def test_backdoor_reproduces_from_its_seed_and_its_recalls_are_counts():
    setup = BackdoorSetup(n_train=200, n_test=200, poison_rate=0.1, epochs=8, components=10)
    a, b = _twice(lambda: run_backdoor(setup, seed=1))
    assert a == b
    n = a["poisoned"]
    for key, removed in (("poison_recall_transitions", a["removed"]), ("poison_recall_random", a["removed"])):
        hits = a[key] * n  # a recall: the share of the n poisoned samples that were removed
        assert math.isclose(hits, round(hits)) and 0 <= round(hits) <= min(n, removed), key
