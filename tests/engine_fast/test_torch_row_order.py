"""torch models whose kernels round a row by its place in the batch (MKL's matmul on AVX-512 CPUs: ``h @ W`` by parity).

Replays put an input's row elsewhere in a pass than in its clean block. The fast engine runs every node on the
block in another row order first (``TracedModel._check_row_order``) and keeps each row's position modulo the
smallest period that every node reproduces; the reference is the exact engine, which runs the real model.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from _helpers import compare, random_faults
from faultlab.engine.fast import FastEngine
from faultlab.engine.fast_graph import reverse_residues
from faultlab.targets.torch import TorchTarget


class MatmulHead(nn.Module):
    """fc1 -> ReLU -> ``h @ W`` with W of (32, 10): the (K, N) right operand MKL rounds by row parity on AVX-512."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)
        self.W = nn.Parameter(torch.randn(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.fc2(h) + h @ self.W


def _round_rows_by_place(layer: nn.Module, period: int) -> None:
    """Make ``layer`` round a row by its position in the batch modulo ``period`` (one ulp off where ``pos % period == 1``),
    as MKL's matmul does by parity on AVX-512 CPUs -- golden, exact and fast runs all see it."""
    call = layer.forward

    def by_place(x: torch.Tensor) -> torch.Tensor:
        out = call(x)
        odd = (torch.arange(out.shape[0]) % period == 1).view(-1, *([1] * (out.dim() - 1)))
        bits = out.view(torch.int32)
        return torch.where(odd, bits ^ 1, bits).view(torch.float32)

    layer.forward = by_place  # type: ignore[method-assign]


def _model_and_data(n: int) -> tuple[MatmulHead, np.ndarray]:
    torch.manual_seed(0)
    x = torch.randn(n, 64, generator=torch.Generator().manual_seed(1)).numpy()
    return MatmulHead().eval(), x


def _faults(target: TorchTarget, n: int, seed: int) -> list:
    """Weight and activation faults on fc1 (upstream of the layer that rounds by place), mantissa bits mostly."""
    w = [f for f in random_faults(target, "weight", 6 * n, seed) if f.layer.startswith("fc1")][:n]
    a = [f for f in random_faults(target, "activation", 6 * n, seed + 1, start=1000) if f.layer == "fc1"][:n]
    assert len(w) == n and len(a) == n
    return w + a


def test_reverse_residues_moves_every_row_within_its_class():
    for period in (1, 2, 4, 16):
        perm = reverse_residues(64, period, torch.device("cpu"))
        assert sorted(perm.tolist()) == list(range(64))
        assert bool((perm % period == torch.arange(64) % period).all())
        assert bool((perm[perm] == torch.arange(64)).all())  # a reversal: its own inverse
        assert int((perm != torch.arange(64)).sum()) == 64  # 64 / period rows per class, an even count: none stays


@pytest.mark.parametrize("n, max_memory", [(300, 1 << 30), (301, 1 << 30), (300, 1 << 20)])
def test_rows_rounded_by_parity_keep_their_residue_and_match_exact(n, max_memory):
    """fc2 rounds by parity: the fast engine finds period 2, replays with aligned rows (odd block sizes, and blocks
    split by a small memory budget, included) and gives exact mode's outcome for every pair, all on the fast path."""
    model, x = _model_and_data(n)
    _round_rows_by_place(model.fc2, 2)
    target = TorchTarget(model, example_input=x[:1])
    faults = _faults(target, 20, seed=3)
    fast = FastEngine(max_memory=max_memory)
    diff, total, _ = compare(fast, target, x, None, faults)
    assert total == len(faults) * n
    assert diff == 0
    tm = fast._traced[id(target)][1]
    assert tm is not None and tm.period == 2
    assert fast.stats["exact"] == 0 and fast.stats["redone"] == 0
    assert fast.stats["early_exit_rows"] > 0  # early exit compacted rows (in aligned pairs) and still matched


def test_period_one_when_no_node_rounds_by_place():
    model, x = _model_and_data(64)
    model.W.data.zero_()  # keeps the matmul; what it rounds is the CPU's business, so only plain layers are asserted on
    target = TorchTarget(nn.Sequential(model.fc1, nn.ReLU(), model.fc2).eval(), example_input=x[:1])
    fast = FastEngine()
    diff, _, _ = compare(fast, target, x, None, [f for f in random_faults(target, "weight", 10, seed=5)])
    assert diff == 0
    assert fast._traced[id(target)][1].period == 1


def test_rounding_by_a_place_no_period_keeps_goes_to_the_exact_engine(caplog):
    """Rounding by position modulo 3 defeats every power-of-two period: the whole model runs exact, said in the log."""
    model, x = _model_and_data(96)
    _round_rows_by_place(model.fc2, 3)
    target = TorchTarget(model, example_input=x[:1])
    faults = _faults(target, 5, seed=4)
    fast = FastEngine()
    with caplog.at_level(logging.WARNING, logger="faultlab"):
        diff, _, _ = compare(fast, target, x, None, faults)
    assert diff == 0
    assert fast.stats["exact"] == len(faults)
    assert any("apart by its place in the batch" in r.getMessage() for r in caplog.records)


def test_real_matmul_head_matches_exact():
    """The unpatched model on this CPU's own kernels (parity-rounded on AVX-512, not on AVX2): same outcomes as exact."""
    model, x = _model_and_data(300)
    target = TorchTarget(model, example_input=x[:1])
    faults = _faults(target, 20, seed=6)
    fast = FastEngine()
    diff, total, _ = compare(fast, target, x, None, faults)
    assert diff == 0 and total == len(faults) * 300
    assert fast.stats["exact"] == 0 and fast.stats["redone"] == 0
