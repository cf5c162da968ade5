"""The engine interface: run a chunk of faults against a target and its golden outputs."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..faults import Fault
from ..outcomes import FaultResult
from ..targets.base import Target


@dataclass
class EvalSet:
    """Evaluation inputs on the target's device with their golden outputs and labels."""

    x: torch.Tensor
    golden: torch.Tensor
    labels: torch.Tensor | None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @classmethod
    def build(cls, target: Target, x: np.ndarray, y: np.ndarray | None, *, batch_size: int = 512) -> "EvalSet":
        """Move ``x`` to the device once and compute the golden (fault-free) outputs."""
        xt = target.to_tensor(target.prepare(x))  # type: ignore[attr-defined]
        outs = [target.forward(xt[i : i + batch_size]) for i in range(0, len(xt), batch_size)]
        golden = torch.cat(outs)
        labels = None
        if y is not None and np.issubdtype(np.asarray(y).dtype, np.integer) and golden.shape[1] > 1:
            labels = torch.as_tensor(np.asarray(y), dtype=torch.long, device=golden.device)
        return cls(xt, golden, labels)


class Engine(ABC):
    """Computes per-fault results for a chunk of faults; engines differ in speed, never in outcomes."""

    name: str = "?"

    def __init__(self, *, batch_size: int = 512, k: int = 5, tolerance: float | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.k = k
        self.tolerance = tolerance

    @abstractmethod
    def run(self, target: Target, data: EvalSet, faults: Sequence[Fault]) -> list[FaultResult]:
        """Results for ``faults`` (same order), each over its inputs (all, or the fault's one input)."""


__all__ = ["Engine", "EvalSet"]
