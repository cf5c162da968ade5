"""Row layouts for kernels that round a row by its position modulo a period (MKL's matmul on AVX-512: parity)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from faultlab.engine.fast import _aligned_rows
from faultlab.engine.fast_graph import bucket, keep_rows


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2, 4, 8, 16]), st.integers(16, 70), st.lists(st.integers(0, 1000), min_size=1, max_size=40), st.booleans())
def test_aligned_rows_put_every_pair_and_control_on_its_inputs_residue(period, nb, raw, whole_set):
    # whole-set faults give runs 0..nb-1 (as the Keras path does); otherwise any block-local inputs
    ci = np.tile(np.arange(nb), len(raw) % 3 + 1) if whole_set else np.array([v % nb for v in raw])
    inputs, pinned, pos = _aligned_rows(ci, nb, period, torch.device("cpu"))
    inputs, pinned, pos = inputs.numpy(), pinned.numpy(), pos.numpy()
    assert len(inputs) == bucket(len(inputs)) and len(inputs) > pos[-1]  # a bucket size, at least one control row
    assert (np.diff(pos) > 0).all() and (inputs[pos] == ci).all() and not pinned[pos].any()
    assert pinned.sum() == len(inputs) - len(ci)
    rows = np.arange(len(inputs))
    assert (inputs % period == rows % period).all() and (inputs < nb).all() and (inputs >= 0).all()
    if whole_set and nb % period == 0:
        assert (pos == np.arange(len(ci))).all()  # nothing to skip


@pytest.mark.parametrize("period", [2, 4, 16])
def test_keep_rows_with_a_period_keeps_whole_groups_and_pins_their_finished_rows(period):
    g = torch.Generator().manual_seed(period)
    n = 256
    same = torch.rand(n, generator=g) < 0.9
    pinned = torch.zeros(n, dtype=torch.bool)
    pinned[-16:] = True
    idx, new_pin = keep_rows(same, pinned, period)
    assert idx is not None
    assert (idx % period == torch.arange(len(idx)) % period).all()  # every kept row keeps its residue
    assert len(idx) == bucket(len(idx)) and len(idx) % period == 0
    live = ~same | pinned
    assert live[~torch.isin(torch.arange(n), idx)].sum() == 0  # no live or pinned row dropped
    # finished rows kept beside live ones become pinned controls; live rows stay unpinned
    assert (new_pin[idx] == (pinned | same)[idx]).all()


def test_keep_rows_period_one_is_the_plain_compaction():
    same = torch.tensor([True, False] * 64)
    pinned = torch.zeros(128, dtype=torch.bool)
    idx, new_pin = keep_rows(same, pinned)
    assert idx is not None and len(idx) == 64 and bool((~same[idx]).all())
