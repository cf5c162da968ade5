"""The full-map early-exit check (``rows_equal_clean``): a sampled pre-check, then whole rows, must equal a byte comparison."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import faultlab.engine.fast_graph as fg


def _rows(shape, n_clean=9, seed=0):
    """Clean maps, rows drawn from them and a byte-level truth for each kind of row."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn((n_clean,) + shape, generator=g)
    rows = torch.randint(0, n_clean, (40,), generator=g)
    v = clean.index_select(0, rows).clone()
    width = int(np.prod(shape))
    at = set(fg.sample_positions(width, v.device).tolist()) if fg.CHECK_SAMPLE else set()
    off_sample = next((e for e in range(width) if e not in at), 0)  # small rows are never sampled
    flat = v.view(40, width)
    for r in range(40):
        kind = r % 5
        if kind == 1:  # one element changed, away from the sampled ones: only the whole-row pass sees it
            flat[r, off_sample] = -flat[r, off_sample]
        elif kind == 2:  # changed everywhere (a fault spread over the map)
            flat[r] += 1.0
        elif kind == 3:  # a sign of zero: equal as floats, not as bits
            flat[r, off_sample] = 0.0
            clean.view(n_clean, width)[int(rows[r]), off_sample] = 0.0
            flat[r, off_sample] = -0.0
    want = [v[r].numpy().tobytes() == clean[int(rows[r])].numpy().tobytes() for r in range(40)]
    return v, clean, rows, want


@pytest.mark.parametrize("shape", [(64, 8, 8), (32, 16, 16), (3, 4, 4), (500,)])
@pytest.mark.parametrize("sample", [0, 64])
def test_matches_a_byte_comparison_of_each_row(shape, sample, monkeypatch):
    monkeypatch.setattr(fg, "CHECK_SAMPLE", sample)
    v, clean, rows, want = _rows(shape)
    skip = torch.zeros(40, dtype=torch.bool)
    assert fg.rows_equal_clean(v, clean, rows, skip).tolist() == want
    skip[::4] = True  # skipped rows come out False
    assert fg.rows_equal_clean(v, clean, rows, skip).tolist() == [w and r % 4 != 0 for r, w in enumerate(want)]


def test_most_rows_equal_and_other_layouts(monkeypatch):
    """Many equal rows take the one-pass branch; a channels-last value takes the plain comparison: same answers."""
    monkeypatch.setattr(fg, "CHECK_SAMPLE", 64)
    v, clean, rows, want = _rows((64, 8, 8))
    skip = torch.zeros(40, dtype=torch.bool)
    same = clean.index_select(0, rows)
    assert fg.rows_equal_clean(same, clean, rows, skip).all()
    cl = v.contiguous(memory_format=torch.channels_last)
    assert fg.rows_equal_clean(cl, clean, rows, skip).tolist() == want


def test_few_rows_equal_on_the_sample_are_compared_whole(monkeypatch):
    """Most rows changed everywhere (as on whole maps): the few left by the sample are compared row by row, and a
    change away from the sample still counts."""
    monkeypatch.setattr(fg, "CHECK_SAMPLE", 64)
    g = torch.Generator().manual_seed(5)
    clean = torch.randn((9, 64, 8, 8), generator=g)
    rows = torch.randint(0, 9, (40,), generator=g)
    v = clean.index_select(0, rows).clone()
    flat = v.view(40, -1)
    at = set(fg.sample_positions(flat.shape[1], v.device).tolist())
    off = next(e for e in range(flat.shape[1]) if e not in at)
    for r in range(40):
        if r % 10 == 1:  # changed at one element away from the sample
            flat[r, off] = -flat[r, off]
        elif r % 10 != 0:  # 32 of 40 rows changed everywhere
            flat[r] += 1.0
    want = [r % 10 == 0 for r in range(40)]
    assert want == [v[r].numpy().tobytes() == clean[int(rows[r])].numpy().tobytes() for r in range(40)]
    assert fg.rows_equal_clean(v, clean, rows, torch.zeros(40, dtype=torch.bool)).tolist() == want
