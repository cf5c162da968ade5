"""Replays run a ReLU or an add in place on a value they computed, where nothing else reads that value.

Each test compares the fast engine pair by pair with a plain loop written here (write the fault, one
real forward of every input, classify against the golden outputs), and checks that the engine stayed
on its fast path: a value overwritten while something still reads it would turn the pass's clean
control rows wrong, and its faults would go to the exact engine.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

import faultlab.engine.fast_graph as fg
from faultlab.engine import EvalSet
from faultlab.engine.fast import FastEngine
from faultlab.models import ResNet20
from faultlab.targets.torch import TorchTarget
from _helpers import plain_codes, random_faults


class Shared(nn.Module):
    """``c`` feeds a ReLU *and* a later add: the ReLU must not run in place on it. ``bn`` feeds only its ReLU: it may."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv1(x)))
        c = self.conv2(h)
        r = torch.relu(c)
        return self.fc((r + c).flatten(1))


def _names(tm: fg.TracedModel) -> dict[str, str]:
    return {n.name: a.name for n, a in tm.reuse.items()}


def test_only_values_read_by_one_relu_or_add_are_reused(digits):
    x, y = digits
    torch.manual_seed(0)
    model = Shared().eval()
    with torch.no_grad():
        model.bn.running_mean.normal_(0, 0.1)
    target = TorchTarget(model, example_input=x[:1])
    data = EvalSet.build(target, x, y)
    faults = random_faults(target, "weight", 24, seed=5) + random_faults(target, "activation", 24, seed=6, start=24)
    eng = FastEngine()
    got = eng.run(target, data, faults)
    tm = eng._trace(target)
    assert _names(tm) == {"relu": "bn"}  # not relu_1 (its input c is read by the add too)
    for f, r, want in zip(faults, got, plain_codes(target, data, faults)):
        np.testing.assert_array_equal(r.codes, want, err_msg=str(f))
    assert eng.stats["exact"] == 0


def test_resnet_block_reuses_and_keeps_the_clean_cache(monkeypatch):
    """ResNet-20's blocks: relu1 on bn1, the add on bn2, relu2 on the add; the kept clean values are never written."""
    torch.manual_seed(0)
    model = ResNet20().eval()
    x = torch.rand(24, 3, 32, 32, generator=torch.Generator().manual_seed(1)).numpy()
    target = TorchTarget(model, example_input=x[:1])
    data = EvalSet.build(target, x, None)
    faults = random_faults(target, "activation", 10, seed=7) + random_faults(target, "weight", 10, seed=8, start=10)
    monkeypatch.setattr(fg, "REUSE", False)
    plain_stats = FastEngine()
    plain_stats.run(target, data, faults)
    monkeypatch.setattr(fg, "REUSE", True)
    eng = FastEngine()
    eng.run(target, data, faults)  # traces, checks and keeps the clean cache
    tm = eng._trace(target)
    names = _names(tm)
    assert names["layer2_1_relu1"] == "layer2_1_bn1"
    assert names["add_4"] == "layer2_1_bn2" and names["layer2_1_relu2"] == "add_4"
    assert not any(a.startswith("conv") or a.startswith("relu") for a in names.values())
    cache = eng._block.cache  # type: ignore[union-attr]
    before = {n: v.clone() for n, v in cache.items() if isinstance(v, torch.Tensor)}
    got = eng.run(target, data, faults)
    for n, v in before.items():
        assert torch.equal(cache[n].view(torch.int32) if v.dtype == torch.float32 else cache[n], v.view(torch.int32) if v.dtype == torch.float32 else v), n.name
    for f, r, want in zip(faults, got, plain_codes(target, data, faults)):
        np.testing.assert_array_equal(r.codes, want, err_msg=str(f))
    # the same paths as without reuse (a clean control row gone wrong would have sent faults to the exact engine)
    assert eng.stats == plain_stats.stats  # stats are per run

