"""The exact engine: the reference path. Every fault gets real forward passes of the whole model.

Weight faults are written in place, one fault at a time, and the faulty model runs over
the fault's inputs. Activation faults are independent per (fault, input) pair, so pairs
are packed as batch rows -- each row carries its own fault through the hooks.

CPU and GPU kernels may round differently for different batch shapes, so a faulty batch
is always compared with a golden run of *the same batch* (same inputs, same shape): the
golden pass is computed once per batch layout and shared by every fault run in it. That
keeps "masked" meaning bit-identical to the fault-free computation.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..faults import Fault
from ..outcomes import FaultResult, aggregate, classify_pairs
from ..targets.base import Target
from ._base import Engine, EvalSet


class _Collector:
    """Per-pair codes and flags accumulated batch by batch; one host transfer at the end."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.flags: list[torch.Tensor] = []
        self.codes: list[torch.Tensor] = []
        self.owners: list[torch.Tensor] = []

    def add(self, owner: int, golden: torch.Tensor, faulty: torch.Tensor, labels: torch.Tensor | None, engine: Engine) -> None:
        c, fl = classify_pairs(golden, faulty, labels, k=engine.k, tolerance=engine.tolerance)
        self.flags.append(fl)
        self.codes.append(c)
        self.owners.append(torch.full((c.shape[0],), owner, dtype=torch.long, device=self.device))

    def results(self, faults: Sequence[Fault], engine: str) -> list[FaultResult]:
        if not self.codes:
            return []
        return aggregate([f.id for f in faults], torch.cat(self.owners), torch.cat(self.codes), torch.cat(self.flags), engine=engine)


class ExactEngine(Engine):
    """Real forward passes for every fault (``--engine exact``)."""

    name = "exact"

    def run(self, target: Target, data: EvalSet, faults: Sequence[Fault]) -> list[FaultResult]:
        if not faults:
            return []
        weight = [f for f in faults if f.site == "weight"]
        act_all = [f for f in faults if f.site == "activation" and f.input is None]
        act_one = [f for f in faults if f.site == "activation" and f.input is not None]
        results: dict[int, FaultResult] = {}
        for part in (self._weights(target, data, weight), self._activations_all(target, data, act_all), self._activations_one(target, data, act_one)):
            results.update({r.fault_id: r for r in part})
        return [results[f.id] for f in faults]

    def _blocks(self, n: int) -> list[slice]:
        return [slice(s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size)]

    def _weights(self, target: Target, data: EvalSet, faults: Sequence[Fault]) -> list[FaultResult]:
        if not faults:
            return []
        col = _Collector(data.golden.device)
        golden: dict[object, torch.Tensor] = {}

        def clean(key: object, xs: torch.Tensor) -> torch.Tensor:
            if key not in golden:
                golden[key] = target.forward(xs)
            return golden[key]

        # golden passes first, with no fault applied
        for b in self._blocks(data.n):
            clean((b.start, b.stop), data.x[b])
        for f in faults:
            if f.input is not None:
                clean(("one", f.input), data.x[f.input : f.input + 1])
        for j, f in enumerate(faults):
            sels = self._blocks(data.n) if f.input is None else [slice(f.input, f.input + 1)]
            with target.inject([(f, None)]):
                for b in sels:
                    key = (b.start, b.stop) if f.input is None else ("one", f.input)
                    out = target.forward(data.x[b])
                    col.add(j, golden[key], out, None if data.labels is None else data.labels[b], self)
        return col.results(faults, self.name)

    def _activations_all(self, target: Target, data: EvalSet, faults: Sequence[Fault]) -> list[FaultResult]:
        """Faults on every input: one forward per fault and golden batch, as a plain fault-in-place loop runs them.

        Several faults are never packed into one larger batch: CPU kernels pick their blocking, and with it
        their rounding, by batch size, so a packed batch could make a fault masked or not depending on
        ``batch_size`` and the number of inputs rather than on the model (the reference must not).
        """
        if not faults:
            return []
        col = _Collector(data.golden.device)
        for b in self._blocks(data.n):
            xb = data.x[b]
            lab = None if data.labels is None else data.labels[b]
            golden = target.forward(xb)
            for j, f in enumerate(faults):
                with target.inject([(f, None)]):
                    out = target.forward(xb)
                col.add(j, golden, out, lab, self)
        return col.results(faults, self.name)

    def _activations_one(self, target: Target, data: EvalSet, faults: Sequence[Fault]) -> list[FaultResult]:
        """Faults on one input each (InjectTF2 configs): one single-row forward per fault, against that input's
        single-row golden pass.

        Rows of different inputs are never packed into one batch: kernels round by batch size, so whether a
        1-ulp change survived would depend on which other faults shared the batch (and on ``chunk_size``).
        """
        if not faults:
            return []
        col = _Collector(data.golden.device)
        golden: dict[int, torch.Tensor] = {}
        for i in sorted({int(f.input) for f in faults}):  # golden passes first, with no fault applied
            golden[i] = target.forward(data.x[i : i + 1])
        for j, f in enumerate(faults):
            i = int(f.input)
            with target.inject([(f, None)]):
                out = target.forward(data.x[i : i + 1])
            col.add(j, golden[i], out, None if data.labels is None else data.labels[i : i + 1], self)
        return col.results(faults, self.name)


__all__ = ["ExactEngine"]
