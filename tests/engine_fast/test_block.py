"""Block replay (one changed channel per row): block reads against brute force, codes equal to the exact engine's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import faultlab.engine.fast_block as fb
from _helpers import compare, random_faults
from faultlab.bits import as_int_view
from faultlab.engine import EvalSet
from faultlab.engine.fast import FastEngine
from faultlab.engine.fast_graph import run_pool, run_pool_maps
from faultlab.faults import Fault
from faultlab.targets.torch import TorchTarget
from test_window import _target


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(as_int_view(a.contiguous()), as_int_view(b.contiguous())))


@pytest.mark.parametrize("layout", ["2d", "4d", "4d_channels_last"])
def test_clean_block_and_write_blocks_match_brute_force(layout):
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(5, 12, generator=g) if layout == "2d" else torch.randn(5, 3, 4, 2, generator=g)
    if layout == "4d_channels_last":
        clean = clean.contiguous(memory_format=torch.channels_last)
    inp = torch.tensor([0, 4, 4, 2, 1, 3])
    sizes = (1, 3, 4) if layout == "2d" else (8,)
    for size in sizes:
        n_blocks = clean[0].numel() // size
        ch = torch.tensor([0, n_blocks - 1, 1, 0, n_blocks // 2, 1])
        got = fb.clean_block(clean, inp, ch, size)
        rows = clean.reshape(5, -1)  # logical (row-major) order, whatever the memory layout
        want = torch.stack([rows[int(i), int(c) * size : (int(c) + 1) * size] for i, c in zip(inp, ch)])
        assert _same_bits(got, want)
        val = torch.randn(len(inp), size, generator=g)
        full = fb.write_blocks(clean, fb.Block(val, ch), inp)
        assert full.stride() == clean[inp].contiguous(memory_format=torch.channels_last if layout.endswith("last") else torch.contiguous_format).stride()
        brute = clean.reshape(5, -1)[inp].clone()
        for r, c in enumerate(ch.tolist()):
            brute[r, c * size : (c + 1) * size] = val[r]
        assert _same_bits(full.reshape(len(inp), -1), brute)


@pytest.mark.parametrize("model", ["digits", "branchy", "resnet", "functional", "resnet_channels_last"])
def test_weight_faults_on_blocks_equal_exact(model, digits):
    x, y = digits
    target = _target(model, x)
    faults = random_faults(target, "weight", 50, seed=21)
    eng = FastEngine()
    diff, total, _ = compare(eng, target, x, y, faults)
    assert total == 50 * len(x) and diff == 0, f"{diff} of {total} pairs differ"
    assert eng.stats["block_passes"] > 0 and eng.stats["exact"] == 0


def test_linear_activation_faults_run_on_blocks(digits):
    """An element of a Linear output is a block of one value; stuck-at and flips equal the exact engine's."""
    x, y = digits
    target = _target("digits", x)
    faults = [f for f in random_faults(target, "activation", 400, seed=22, models=("flip", "stuck0", "stuck1")) if f.layer in ("fc1", "relu3", "fc2")]
    assert len(faults) >= 3
    eng = FastEngine()
    diff, _, _ = compare(eng, target, x, y, faults)
    assert diff == 0 and eng.stats["block_passes"] > 0


def test_blocks_change_nothing_but_speed(digits):
    x, y = digits
    target = _target("resnet", x)
    faults = random_faults(target, "weight", 30, seed=23)
    faults = [Fault(f.id, f.layer, f.index, f.bits, f.site, f.model, input=(i * 5) % len(x) if i % 3 == 0 else None) for i, f in enumerate(faults)]
    data = EvalSet.build(target, x, y)
    on, off = FastEngine(), FastEngine(blocks=False)
    for p, q in zip(on.run(target, data, faults), off.run(target, data, faults)):
        np.testing.assert_array_equal(p.codes, q.codes)
        assert (p.masked, p.non_critical, p.sdc1, p.sdc5, p.due) == (q.masked, q.non_critical, q.sdc1, q.sdc5, q.due)
    assert on.stats["block_passes"] > 0 and off.stats["block_passes"] == 0


def _off_by_one_ulp(fn):
    def wrapped(mod, blk):
        return (fn(mod, blk).view(torch.int32) ^ 1).view(torch.float32)

    return staticmethod(wrapped)


def test_block_kernel_that_rounds_differently_is_not_used(digits, monkeypatch):
    """A batch norm on blocks that is one ulp off: the once-per-node check refuses it; codes stay exact."""
    x, y = digits
    target = _target("resnet", x)
    monkeypatch.setattr(fb.BlockReplay, "_batch_norm", _off_by_one_ulp(fb.BlockReplay._batch_norm))
    eng = FastEngine()
    diff, _, _ = compare(eng, target, x, y, random_faults(target, "weight", 20, seed=24))
    assert diff == 0 and eng.stats["redone"] == 0
    assert all(ok is False for n, ok in eng._blocks(eng._trace(target))._ok.items() if "bn" in n.name)


def test_control_rows_catch_a_block_kernel_the_check_missed(digits, monkeypatch):
    """With the check skipped, the control rows see the wrong blocks and the replay goes on with whole rows."""
    x, y = digits
    target = _target("resnet", x)
    monkeypatch.setattr(fb.BlockReplay, "_batch_norm", _off_by_one_ulp(fb.BlockReplay._batch_norm))
    monkeypatch.setattr(fb.BlockReplay, "_checked", lambda self, n, a, fn, cache, g_in, g_out: True)
    calls = []
    step = fb.BlockReplay._step

    def spy(self, n, env, cache, inp):
        out = step(self, n, env, cache, inp)
        calls.append(out is not None and "bn" in n.name)
        return out

    monkeypatch.setattr(fb.BlockReplay, "_step", spy)
    eng = FastEngine()
    diff, _, _ = compare(eng, target, x, y, random_faults(target, "weight", 20, seed=25))
    assert diff == 0
    assert any(calls)  # wrong batch norms on blocks were computed, and caught


@pytest.mark.parametrize("mod", [nn.MaxPool2d(2), nn.MaxPool2d(3, 2), nn.MaxPool2d(3, 1, 1), nn.AdaptiveMaxPool2d(2), nn.AvgPool2d(2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_run_pool_equals_the_module_on_nan_and_signed_zeros(mod, channels_last):
    """Max pooling on channels-last data picks the same element as the module, NaN payloads and -0.0 included."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 5, 6, 8, generator=g)
    x[x.abs() < 0.4] = -0.0
    x[torch.rand(x.shape, generator=g) < 0.2] = 0.0
    x[torch.rand(x.shape, generator=g) < 0.02] = float("nan")
    x[torch.rand(x.shape, generator=g) < 0.02] = -float("nan")
    x[torch.rand(x.shape, generator=g) < 0.02] = -float("inf")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got, want = run_pool(mod, x), mod(x)
    assert _same_bits(got, want)
    assert got.stride() == want.stride()


@pytest.mark.parametrize("mod", [nn.MaxPool2d(2), nn.MaxPool2d(3, 2), nn.MaxPool2d(3, 1, 1), nn.AdaptiveMaxPool2d(2), nn.AvgPool2d(2)])
@pytest.mark.parametrize("rows", [7, 16, 200])
def test_single_channel_maps_pooled_in_groups_equal_the_module(mod, rows):
    """Block replays pool R one-channel maps as channels of a few tensors: the same elements as the module, NaN payloads and -0.0 included."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(rows, 1, 6, 8, generator=g)
    x[x.abs() < 0.4] = -0.0
    x[torch.rand(x.shape, generator=g) < 0.2] = 0.0
    x[torch.rand(x.shape, generator=g) < 0.03] = float("nan")
    x[torch.rand(x.shape, generator=g) < 0.03] = -float("nan")
    x[torch.rand(x.shape, generator=g) < 0.02] = -float("inf")
    got, want = run_pool_maps(mod, x), mod(x)
    assert got.shape == want.shape and got.is_contiguous()
    assert _same_bits(got, want)


class _ConvReluPool(nn.Module):
    """conv -> ReLU -> max pooling -> flatten -> linear: the pooling is the last node where a row can turn clean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


@pytest.mark.parametrize("kind", ["weight", "activation"])
@pytest.mark.parametrize("parts", [True, False])
def test_a_relu_read_only_by_max_pooling_hands_its_rows_on(digits, kind, parts, monkeypatch):
    """conv -> ReLU -> pool: only the pooling compares every row, and exactly the pairs whose pooled map is clean finish early.

    On blocks and windows (``parts``) and on whole rows alike. The count of early exits is checked
    against a plain loop (fault in place, forward hook on the pooling).
    """
    import faultlab.engine.fast_graph as fg

    x, y = digits
    x, y = x[:96], y[:96]
    torch.manual_seed(5)
    target = TorchTarget(_ConvReluPool().eval(), example_input=x[:1])
    shape = target.site("conv", kind).shape
    rng = np.random.default_rng(31)
    faults = [Fault(i, "conv", tuple(int(v) for v in np.unravel_index(int(rng.integers(int(np.prod(shape)))), shape)), (int(rng.integers(32)),), kind)
              for i in range(20)]
    every_row: dict[str, int] = {}
    original = fg.PartialReplay._compare

    def spy(self, n, part, cache, inp, ctrl, every):
        if every:
            every_row[n.name] = every_row.get(n.name, 0) + 1
        return original(self, n, part, cache, inp, ctrl, every)

    monkeypatch.setattr(fg.PartialReplay, "_compare", spy)
    eng = FastEngine(blocks=parts, window=parts)
    diff, _, _ = compare(eng, target, x, y, faults)
    assert diff == 0
    assert set(every_row) == ({"pool"} if parts else set())
    tm = eng._trace(target)
    steps, _, check, _ = tm._plan(tm.module_nodes["conv"][0])
    assert [n.name for n, c in zip(steps, check[1:]) if c] == ["pool"] and not check[0]  # whole-row replays drop rows there only
    data = EvalSet.build(target, x, y)
    seen: list[torch.Tensor] = []
    hook = target.model.pool.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        target.model(torch.as_tensor(data.x))
        clean = seen.pop()
        want = 0
        for f in faults:
            with target.inject([(f, None)]):
                target.model(torch.as_tensor(data.x))
            want += int((as_int_view(seen.pop()) == as_int_view(clean)).reshape(len(x), -1).all(dim=1).sum())
    finally:
        hook.remove()
    assert eng.stats["early_exit_rows"] == want > 0
