"""Spatial-window replay: region reads against brute force, and outcome codes equal to the exact engine's."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faultlab.engine.fast_window as fw
from _helpers import compare, random_faults
from faultlab.engine import EvalSet
from faultlab.engine.fast import FastEngine
from faultlab.faults import Fault
from faultlab.models import BranchyCNN, pretrained_digits_cnn
from faultlab.targets.torch import TorchTarget
from test_fast_vs_exact import TinyResNet, _randomize_bn


class FunctionalNet(nn.Module):
    """Functional ReLU, in-place residual add, a dilated conv and a max-pool: window ops beyond modules."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.c2 = nn.Conv2d(8, 8, (1, 3), padding=(0, 1))
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        r = torch.relu(self.c1(h))
        r += h
        h = self.pool(F.relu(self.c2(r)) * 0.5 + r)
        return self.fc(torch.flatten(h, 1))


def _brute_region(clean, win, inp, oy, ox, hh, ww):
    """Per row: the clean map with the window pasted, zero-padded generously, then sliced."""
    out = []
    for r in range(len(inp)):
        full = clean[int(inp[r])].clone()
        if win is not None:
            h, w = win.crop.shape[2:]
            full[:, win.oy[r] : win.oy[r] + h, win.ox[r] : win.ox[r] + w] = win.crop[r]
        pad = 20
        big = F.pad(full, (pad, pad, pad, pad))
        out.append(big[:, oy[r] + pad : oy[r] + pad + hh, ox[r] + pad : ox[r] + pad + ww])
    return torch.stack(out)


@pytest.mark.parametrize("budget", [None, 1 << 20])
def test_read_region_and_materialize_match_brute_force(budget):
    tables = None if budget is None else fw.MapTables(budget)  # regions from a bordered copy, else from the map
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(6, 3, 9, 7, generator=g)
    inp = torch.tensor([0, 0, 3, 5, 5, 2, 1])
    rng = np.random.default_rng(1)
    win = fw.Window(torch.randn(7, 3, 3, 2, generator=g), rng.integers(0, 7, 7), rng.integers(0, 6, 7))
    for hh, ww in ((1, 1), (4, 5), (12, 10)):
        oy, ox = rng.integers(-3, 8, 7), rng.integers(-3, 6, 7)
        for w in (None, win):
            got = fw.read_region(clean, w, inp, oy, ox, hh, ww, tables=tables)
            torch.testing.assert_close(got, _brute_region(clean, w, inp, oy, ox, hh, ww), rtol=0, atol=0)
    assert budget is None or len(tables) == 1
    full = fw.materialize(clean, win, inp)
    want = _brute_region(clean, win, inp, np.zeros(7, int), np.zeros(7, int), 9, 7)
    torch.testing.assert_close(full, want, rtol=0, atol=0)


def test_crops_at_varying_offsets_inside_their_regions_and_maps():
    """Rows of one fault share a position (runs), positions differ between faults: one scatter writes them all, in either layout."""
    g = torch.Generator().manual_seed(7)
    rng = np.random.default_rng(8)
    runs = [3, 1, 4, 2]  # rows per fault
    inp = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2, 3])
    cy, cx = np.repeat(rng.integers(0, 5, len(runs)), runs), np.repeat(rng.integers(0, 4, len(runs)), runs)
    win = fw.Window(torch.randn(10, 3, 3, 2, generator=g), cy, cx)
    # regions of 4 x 3 at origins holding each crop inside, at per-row offsets 0..1 / 0..1
    oy, ox = cy - np.repeat(rng.integers(0, 2, len(runs)), runs), cx - np.repeat(rng.integers(0, 2, len(runs)), runs)
    for clean in (torch.randn(6, 3, 8, 6, generator=g), torch.randn(6, 3, 8, 6, generator=g).to(memory_format=torch.channels_last)):
        for tables in (None, fw.MapTables(1 << 20)):
            got = fw.read_region(clean, win, inp, oy, ox, 4, 3, tables=tables)
            torch.testing.assert_close(got, _brute_region(clean, win, inp, oy, ox, 4, 3), rtol=0, atol=0)
        full = fw.materialize(clean, win, inp)
        assert full.is_contiguous(memory_format=torch.channels_last if not clean.is_contiguous() else torch.contiguous_format)
        torch.testing.assert_close(full, _brute_region(clean, win, inp, np.zeros(10, int), np.zeros(10, int), 8, 6), rtol=0, atol=0)


def test_read_region_with_one_crop_offset_and_either_layout():
    """Every crop at the same place in its region (one strided copy), read in both layouts, also from channels-last maps."""
    g = torch.Generator().manual_seed(3)
    rng = np.random.default_rng(4)
    inp = torch.tensor([4, 1, 1, 0, 5])
    oy, ox = rng.integers(-1, 6, 5), rng.integers(-1, 4, 5)
    win = fw.Window(torch.randn(5, 3, 2, 3, generator=g), oy + 1, ox + 1)
    for clean in (torch.randn(6, 3, 9, 7, generator=g), torch.randn(6, 3, 9, 7, generator=g).to(memory_format=torch.channels_last)):
        want = _brute_region(clean, win, inp, oy, ox, 4, 5)
        for layout, tables in itertools.product((None, torch.channels_last, torch.contiguous_format), (None, fw.MapTables(1 << 20))):
            got = fw.read_region(clean, win, inp, oy, ox, 4, 5, layout, tables)
            torch.testing.assert_close(got, want, rtol=0, atol=0)
            fmt = layout or (torch.channels_last if not clean.is_contiguous() else torch.contiguous_format)
            assert got.is_contiguous(memory_format=fmt)


def test_map_tables_stay_within_their_budget():
    """Copies are made while they fit and never evicted; a map that does not fit is read from the map itself."""
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(4, 2, 5, 5, generator=g), torch.randn(4, 2, 5, 5, generator=g)
    one = 4 * 2 * 7 * 7 * 4  # a with a border of 1
    tables = fw.MapTables(one + 10)
    inp, oy, ox = torch.tensor([0, 3, 2]), np.array([-1, 2, 0]), np.array([1, -1, 3])
    for clean in (a, b, a):
        got = fw.read_region(clean, None, inp, oy, ox, 3, 3, tables=tables)
        torch.testing.assert_close(got, _brute_region(clean, None, inp, oy, ox, 3, 3), rtol=0, atol=0)
    assert len(tables) == 1 and tables.used == one and tables.get(b, 0) is None and tables.get(a, 1) is not None
    tables.clear()
    assert len(tables) == 0 and tables.used == 0


def test_rows_equal_is_bitwise_across_layouts():
    a = torch.randn(4, 3, 2, 2)
    b = a.contiguous(memory_format=torch.channels_last)
    b[1, 2, 1, 0] = -b[1, 2, 1, 0] if b[1, 2, 1, 0] != 0 else 1.0
    b[2, 0, 0, 0] = torch.nan
    a[3, 1, 0, 1], b[3, 1, 0, 1] = 0.0, -0.0  # equal as floats, not as bits
    assert fw.rows_equal(a, b).tolist() == [True, False, False, False]
    assert fw.rows_equal(a, a.contiguous(memory_format=torch.channels_last)).all()


@pytest.mark.parametrize("shape", [(37, 1), (37, 3), (37, 8), (37, 12), (37, 64), (37, 3, 2, 2), (37, 16, 4, 4), (0, 8)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_rows_equal_matches_a_byte_comparison_of_each_row(shape, layout, dtype):
    """Rows differing in one element anywhere (a sign of zero, a NaN payload) are found, in every layout and word size."""
    g = torch.Generator().manual_seed(len(shape) * 100 + shape[-1])
    a = torch.randn(shape, generator=g).to(dtype)
    if layout == "channels_last" and a.dim() == 4:
        a = a.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        a = a.transpose(0, -1).contiguous().transpose(0, -1)  # rows not outermost in memory
    b = a.clone()
    n = int(np.prod(shape[1:]))
    for r in range(0, shape[0], 3):  # every third row gets one element changed, at a row-dependent place
        idx = np.unravel_index(r * 7 % n, tuple(shape[1:]))
        v = b[(r,) + tuple(int(i) for i in idx)]
        b[(r,) + tuple(int(i) for i in idx)] = -v if v != 0 else -0.0
    if shape[0] > 4:
        a[4].fill_(0.0)
        b[4].fill_(0.0)
        b[(4,) + (0,) * (len(shape) - 1)] = -0.0  # equal as floats, not as bits
    want = [a[r].numpy().tobytes() == b[r].numpy().tobytes() for r in range(shape[0])]
    assert fw.rows_equal(a, b).tolist() == want
    assert bool(fw.rows_equal(a, a.clone()).all())


def _target(name: str, x: np.ndarray) -> TorchTarget:
    torch.manual_seed(0)
    model = {
        "digits": lambda: pretrained_digits_cnn(),
        "branchy": lambda: _randomize_bn(BranchyCNN(), 1),
        "resnet": lambda: _randomize_bn(TinyResNet(), 2),
        "functional": lambda: FunctionalNet().eval(),
        # channels-last weights make channels-last activations: crops must keep that layout
        "resnet_channels_last": lambda: _randomize_bn(TinyResNet(), 2).to(memory_format=torch.channels_last),
    }[name]()
    return TorchTarget(model, example_input=x[:1])


@pytest.mark.parametrize("model", ["digits", "branchy", "resnet", "functional", "resnet_channels_last"])
def test_windowed_activation_faults_equal_exact(model, digits):
    x, y = digits
    target = _target(model, x)
    faults = random_faults(target, "activation", 50, seed=11, models=("flip", "stuck0", "stuck1"))
    eng = FastEngine()
    diff, total, _ = compare(eng, target, x, y, faults)
    assert total == 50 * len(x) and diff == 0, f"{diff} of {total} pairs differ"
    assert eng.stats["windowed_passes"] > 0 and eng.stats["exact"] == 0


def test_windows_change_nothing_but_speed(digits):
    x, y = digits
    target = _target("resnet", x)
    faults = random_faults(target, "activation", 30, seed=12)
    faults = [Fault(f.id, f.layer, f.index, f.bits, f.site, f.model, input=(i * 7) % len(x) if i % 2 else None) for i, f in enumerate(faults)]
    data = EvalSet.build(target, x, y)
    on, off = FastEngine(), FastEngine(window=False)
    a, b = on.run(target, data, faults), off.run(target, data, faults)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.codes, q.codes)
        assert (p.masked, p.non_critical, p.sdc1, p.sdc5, p.due) == (q.masked, q.non_critical, q.sdc1, q.sdc5, q.due)
    assert on.stats["windowed_passes"] > 0 and off.stats["windowed_passes"] == 0
    # copies of clean maps live as long as their block: kept with the one block kept for the next run, dropped with it
    kept = [t for t in on._block.cache.values() if isinstance(t, torch.Tensor)]
    copies = [hit[0] for w in on._window_of.values() for hit in w.tables._tables.values()]
    assert copies and all(any(c is t for t in kept) for c in copies)
    again = on.run(target, data, faults)  # the next run reads the same copies: none is made anew
    assert [hit[0] for w in on._window_of.values() for hit in w.tables._tables.values()] == copies
    for p, q in zip(again, b):
        np.testing.assert_array_equal(p.codes, q.codes)
    on.release()
    assert all(len(w.tables) == 0 and w.tables.used == 0 for w in on._window_of.values())


def test_cropped_kernel_that_rounds_differently_is_not_used(digits, monkeypatch):
    """A window kernel off by one ulp: the once-per-size check refuses it; results stay exact."""
    x, y = digits
    target = _target("resnet", x)
    apply = fw.WindowReplay._apply

    def off_by_ulp(mod, region):
        out = apply(mod, region)
        return (out.view(torch.int32) ^ 1).view(torch.float32)

    monkeypatch.setattr(fw.WindowReplay, "_apply", staticmethod(off_by_ulp))
    faults = random_faults(target, "activation", 20, seed=13)
    eng = FastEngine()
    diff, _, _ = compare(eng, target, x, y, faults)
    assert diff == 0 and eng.stats["redone"] == 0


def test_control_rows_catch_a_kernel_the_size_check_missed(digits, monkeypatch):
    """If the size check is skipped, the control rows see the wrong windows and the replay goes on with whole maps."""
    x, y = digits
    target = _target("resnet", x)
    apply = fw.WindowReplay._apply
    monkeypatch.setattr(fw.WindowReplay, "_apply", staticmethod(lambda mod, region: (apply(mod, region).view(torch.int32) ^ 1).view(torch.float32)))
    monkeypatch.setattr(fw.WindowReplay, "_size", lambda self, n, mod, geo, nh, nw, a, cache: (nh, nw))
    seen = []
    step = fw.WindowReplay._step

    def spy(self, n, env, cache, inp):
        out = step(self, n, env, cache, inp)
        seen.append(out is not None and isinstance(self.tm.modules.get(str(n.target)), nn.Conv2d))
        return out

    monkeypatch.setattr(fw.WindowReplay, "_step", spy)
    faults = random_faults(target, "activation", 20, seed=14)
    eng = FastEngine()
    diff, _, _ = compare(eng, target, x, y, faults)
    assert diff == 0
    assert any(seen)  # wrong windowed convolutions were computed, and caught


@pytest.mark.parametrize("rounds_apart", [False, True])
def test_convolutions_take_regions_in_either_layout_only_where_both_are_exact(digits, monkeypatch, rounds_apart):
    """Window convolutions skip the layout copy only when checked bit-exact on both layouts; a kernel off by one ulp on
    the other layout keeps the clean one. Outcomes equal exact mode's either way."""
    x, y = digits
    target = _target("resnet", x)
    if rounds_apart:
        apply = fw.WindowReplay._apply

        def other_layout_off(mod, region):
            out = apply(mod, region)
            if isinstance(mod, nn.Conv2d) and region.stride(1) == 1 and region.shape[1] > 1:  # channels-last (or 1x1: both)
                out = (out.contiguous().view(torch.int32) ^ 1).view(torch.float32)
            return out

        monkeypatch.setattr(fw.WindowReplay, "_apply", staticmethod(other_layout_off))
    faults = random_faults(target, "activation", 30, seed=15)
    eng = FastEngine()
    diff, _, _ = compare(eng, target, x, y, faults)
    assert diff == 0 and eng.stats["redone"] == 0 and eng.stats["windowed_passes"] > 0
    checked = [v for w in eng._window_of.values() for v in w._any_layout.values()]
    assert checked and (not any(checked) if rounds_apart else any(checked))


def test_write_crops_on_maps_of_other_layouts():
    """Rows that are not dense blocks (a permuted view) take the element-wise path, with the same result."""
    g = torch.Generator().manual_seed(9)
    base = torch.randn(5, 6, 3, 7, generator=g).permute(0, 2, 1, 3)  # (5, 3, 6, 7), neither layout
    assert not base.is_contiguous() and not base.is_contiguous(memory_format=torch.channels_last)
    crop = torch.randn(5, 3, 2, 3, generator=g)
    dy, dx = np.array([0, 0, 4, 1, 2]), np.array([4, 4, 0, 2, 1])
    want = base.clone()
    for i in range(5):
        want[i, :, dy[i] : dy[i] + 2, dx[i] : dx[i] + 3] = crop[i]
    fw._write_crops(base, crop, dy, dx)
    torch.testing.assert_close(base, want, rtol=0, atol=0)


@pytest.mark.parametrize("run", [1, 5, fw.SLICE_RUN_ROWS, 3 * fw.SLICE_RUN_ROWS])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("crop_hw", [(2, 2), (3, 3), (4, 5)])
def test_write_crops_by_runs_or_by_scatter_equal_a_row_by_row_copy(run, layout, crop_hw):
    """Long runs of one position are written slice by slice, short ones (and 2-wide crops) by one scatter: the same maps, in either layout."""
    h, w = crop_hw
    g = torch.Generator().manual_seed(run + h)
    rng = np.random.default_rng(run * w)
    n_runs = 3
    r = run * n_runs
    base = torch.randn(r, 16, 6, 7, generator=g).contiguous(memory_format=layout)
    crop = torch.randn(r, 16, h, w, generator=g)
    dy = np.repeat(rng.integers(0, 6 - h + 1, n_runs), run)
    dx = np.repeat(rng.integers(0, 7 - w + 1, n_runs), run)
    want = base.clone()
    for i in range(r):
        want[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] = crop[i]
    got = base.clone()
    fw._write_crops(got, crop, dy, dx)
    assert got.is_contiguous(memory_format=layout)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
