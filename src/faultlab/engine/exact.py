"""The exact engine: the reference path. Every fault gets real forward passes of the whole model.

Weight faults are written in place, one fault at a time, and each faulty model runs over
the fault's inputs. Activation faults are independent per (fault, input) pair, so pairs
are packed as batch rows -- each row carries its own fault through the hooks.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..faults import Fault
from ..outcomes import FaultResult, aggregate, classify, pair_stats
from ..targets.base import Target
from ._base import Engine, EvalSet


def _pairs(faults: Sequence[Fault], n_inputs: int) -> tuple[np.ndarray, np.ndarray]:
    """(fault position, input index) for every pair, grouped by fault, inputs ascending."""
    pf, pi = [], []
    for j, f in enumerate(faults):
        if f.input is None:
            pf.append(np.full(n_inputs, j))
            pi.append(np.arange(n_inputs))
        else:
            pf.append(np.array([j]))
            pi.append(np.array([f.input]))
    if not pf:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pf).astype(np.int64), np.concatenate(pi).astype(np.int64)


class ExactEngine(Engine):
    """Real forward passes for every fault (``--engine exact``)."""

    name = "exact"

    def run(self, target: Target, data: EvalSet, faults: Sequence[Fault]) -> list[FaultResult]:
        if not faults:
            return []
        weight = [f for f in faults if f.site == "weight"]
        act = [f for f in faults if f.site == "activation"]
        results = {r.fault_id: r for r in self._weights(target, data, weight)}
        results.update({r.fault_id: r for r in self._activations(target, data, act)})
        return [results[f.id] for f in faults]

    def _weights(self, target: Target, data: EvalSet, faults: Sequence[Fault]) -> list[FaultResult]:
        if not faults:
            return []
        dev = data.golden.device
        stats, codes, owners = [], [], []
        for j, f in enumerate(faults):
            idx = None if f.input is None else torch.tensor([f.input], device=dev)
            with target.inject([(f, None)]):
                for s in range(0, data.n if idx is None else 1, self.batch_size):
                    sel = slice(s, s + self.batch_size) if idx is None else idx
                    out = target.forward(data.x[sel])
                    g = data.golden[sel]
                    lab = None if data.labels is None else data.labels[sel]
                    c = classify(g, out, k=self.k, tolerance=self.tolerance)
                    stats.append(pair_stats(c, out, g, lab, k=self.k))
                    codes.append(c)
                    owners.append(torch.full((c.shape[0],), j, dtype=torch.long, device=dev))
        return aggregate([f.id for f in faults], torch.cat(owners), torch.cat(stats), torch.cat(codes), engine=self.name)

    def _activations(self, target: Target, data: EvalSet, faults: Sequence[Fault]) -> list[FaultResult]:
        if not faults:
            return []
        dev = data.golden.device
        pf, pi = _pairs(faults, data.n)
        stats, codes = [], []
        for s in range(0, len(pf), self.batch_size):
            bf, bi = pf[s : s + self.batch_size], pi[s : s + self.batch_size]
            # rows of each fault in this batch form one contiguous run (pairs are grouped by fault)
            starts = np.flatnonzero(np.r_[True, bf[1:] != bf[:-1]])
            ends = np.r_[starts[1:], len(bf)]
            assignments = [(faults[int(bf[a])], slice(int(a), int(b))) for a, b in zip(starts, ends)]
            inputs = torch.as_tensor(bi, device=dev)
            with target.inject(assignments):
                out = target.forward(data.x[inputs])
            g = data.golden[inputs]
            lab = None if data.labels is None else data.labels[inputs]
            c = classify(g, out, k=self.k, tolerance=self.tolerance)
            stats.append(pair_stats(c, out, g, lab, k=self.k))
            codes.append(c)
        owners = torch.as_tensor(pf, device=dev)
        return aggregate([f.id for f in faults], owners, torch.cat(stats), torch.cat(codes), engine=self.name)


__all__ = ["ExactEngine"]
