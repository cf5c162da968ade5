"""Shared helpers for the fast-engine tests: random fault lists and engine comparison."""
from __future__ import annotations

import numpy as np
import torch

from faultlab.engine import EvalSet
from faultlab.engine.exact import ExactEngine
from faultlab.faults import Fault
from faultlab.targets.torch import TorchTarget


def random_faults(target: TorchTarget, kind: str, n: int, seed: int, *, start: int = 0, models=("flip",)) -> list[Fault]:
    """``n`` faults drawn uniformly over the elements of every ``kind`` site, bits over all 32."""
    rng = np.random.default_rng(seed)
    sites = [s for s in target.sites() if s.kind == kind]
    sizes = np.array([s.numel for s in sites], dtype=np.float64)
    out = []
    for i in range(n):
        s = sites[rng.choice(len(sites), p=sizes / sizes.sum())]
        idx = tuple(int(v) for v in np.unravel_index(int(rng.integers(s.numel)), s.shape))
        model = str(rng.choice(models))
        out.append(Fault(start + i, s.name, idx, (int(rng.integers(32)),), kind, model))  # type: ignore[arg-type]
    return out


def compare(engine, target: TorchTarget, x: np.ndarray, y: np.ndarray | None, faults: list[Fault]) -> tuple[int, int, list]:
    """(differing pairs, total pairs, per-fault results) of ``engine`` against the exact engine."""
    data = EvalSet.build(target, x, y)
    fast = engine.run(target, data, faults)
    exact = ExactEngine().run(target, data, faults)
    diff = total = 0
    for a, b in zip(fast, exact):
        assert a.fault_id == b.fault_id
        assert len(a.codes) == len(b.codes)
        diff += int((a.codes != b.codes).sum())
        total += len(a.codes)
    return diff, total, list(zip(fast, exact))
