"""Where the fast path does not hold, the fast engine falls back to exact mode (same results)."""
from __future__ import annotations

import logging

import torch
from torch import nn

from _helpers import compare, random_faults
from faultlab.datasets import load_dataset
from faultlab.engine.fast import FastEngine
from faultlab.models import DigitsCNN
from faultlab.targets.torch import TorchTarget


class DataDependent(nn.Module):
    """Python control flow on values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x.flatten(1)))
        if h.sum() > 0:
            h = h * 2
        return self.fc2(h)


class SharedLayer(nn.Module):
    """One Linear applied twice: its weight is used non-linearly (squared, in effect)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(64, 16)
        self.shared = nn.Linear(16, 16)
        self.act = nn.ReLU()
        self.out = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.inp(x.flatten(1)))
        h = self.act(self.shared(self.act(self.shared(h))))
        return self.out(h)


def _data():
    ds = load_dataset("digits", split="test")
    return ds.x[:64].copy(), ds.y[:64]


def test_untraceable_model_falls_back(caplog):
    x, y = _data()
    torch.manual_seed(0)
    target = TorchTarget(DataDependent(), example_input=x[:1])
    faults = random_faults(target, "weight", 20, seed=1) + random_faults(target, "activation", 20, seed=2, start=20)
    eng = FastEngine()
    with caplog.at_level(logging.WARNING, logger="faultlab"):
        diff, total, _ = compare(eng, target, x, y, faults)
    assert diff == 0 and total == 40 * len(x)
    assert eng.stats["exact"] == 40
    assert "torch.fx cannot trace" in caplog.text


def test_training_mode_falls_back(caplog):
    x, y = _data()
    torch.manual_seed(0)
    model = DigitsCNN()
    target = TorchTarget(model, example_input=x[:1])
    model.fc1.train()  # after TorchTarget put everything in eval mode
    faults = random_faults(target, "weight", 10, seed=3)
    eng = FastEngine()
    with caplog.at_level(logging.WARNING, logger="faultlab"):
        diff, _, _ = compare(eng, target, x, y, faults)
    assert diff == 0 and eng.stats["exact"] == 10
    assert "training mode" in caplog.text


def test_shared_module_faults_go_exact():
    x, y = _data()
    torch.manual_seed(0)
    target = TorchTarget(SharedLayer(), example_input=x[:1])
    faults = random_faults(target, "weight", 40, seed=4)
    eng = FastEngine()
    diff, _, _ = compare(eng, target, x, y, faults)
    assert diff == 0
    n_shared = sum(f.layer.startswith("shared") for f in faults)
    assert n_shared > 0 and eng.stats["exact"] == n_shared
    assert eng.stats["stacked"] + eng.stats["node"] == len(faults) - n_shared


def test_non_torch_target_uses_exact():
    class KerasLike:
        """Not a TorchTarget, though it holds a traceable torch module (as Keras-on-torch does)."""

        framework = "keras"
        model = DigitsCNN().eval()

    eng = FastEngine()
    assert eng._trace(KerasLike()) is None  # type: ignore[arg-type]
    assert eng._trace(TorchTarget(DigitsCNN())) is not None
