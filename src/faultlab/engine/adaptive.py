"""Adaptive campaigns: run faults stratum by stratum in rounds until each interval is narrow enough.

Each round, :class:`faultlab.planning.AdaptiveAllocator` re-estimates every stratum's rate from
the results so far and proposes how many more faults it needs; strata whose Wilson interval
(with the finite-population correction) is within the margin stop. Faults are drawn without
replacement by seeded per-stratum samplers; every round's faults and counts are stored before
they run, so a killed campaign resumes exactly, drawing the same faults.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FaultlabError
from ..faults import FaultList
from ..planning import AdaptiveAllocator, PopulationSampler, StratifyBy, stratify
from ..store import CampaignStore
from .campaign import Campaign, CampaignSummary, ProgressFn, execute, pending_faults

#: Which per-fault event the adaptive rounds estimate: a fault is an event when it caused
#: this outcome on at least one evaluated input.
EVENTS = ("sdc1", "sdc5", "due")


@dataclass
class AdaptiveSummary(CampaignSummary):
    """A campaign summary plus each stratum's final interval and the faults saved against the fixed plan."""

    strata: Any = None  # list[StratumProgress]
    fixed_total: int = 0
    saved: int = 0
    rounds: int = 0
    margin: float = 0.0
    confidence: float = 0.95


class AdaptiveCampaign(Campaign):
    """A statistically sized campaign whose strata stop once their interval is narrower than ``margin``."""

    def __init__(self, *, margin: float, confidence: float = 0.95, by: StratifyBy = "layer", site_kind: str = "weight",
                 event: str = "sdc1", seed: int = 0, t: float | None = None, max_rounds: int = 50, **kwargs: Any) -> None:
        super().__init__(faults=FaultList(()), **kwargs)
        if event not in EVENTS:
            raise FaultlabError(f"--event {event!r}: expected one of {', '.join(EVENTS)}")
        self.margin, self.confidence, self.by, self.site_kind = margin, confidence, by, site_kind
        self.event, self.seed, self.t, self.max_rounds = event, seed, t, max_rounds

    def identity(self, x: np.ndarray, y: np.ndarray | None) -> dict[str, Any]:
        ident = super().identity(x, y)
        ident["faults"] = f"adaptive margin={self.margin} confidence={self.confidence} by={self.by} site={self.site_kind} event={self.event} seed={self.seed} t={self.t}"
        return ident

    def _results(self, store: CampaignStore, names: list[str]) -> dict[str, tuple[int, int]]:
        df = store.results_frame()
        out = {n: (0, 0) for n in names}
        if df.empty:
            return out
        hit = df[self.event] > 0
        for name, g in df.groupby("stratum"):
            out[str(name)] = (int(hit[g.index].sum()), int(len(g)))
        return out

    def run(self, progress: ProgressFn | None = None) -> AdaptiveSummary:
        t0 = time.perf_counter()
        self.check_engine()
        x, y, _ = self._prepared()
        sites = [s for s in self.target.sites() if s.kind == self.site_kind]
        pops = stratify(sites, self.by)
        if not pops:
            raise FaultlabError(f"the model has no {self.site_kind} sites to sample from")
        names = [p.name for p in pops]
        alloc = AdaptiveAllocator(populations={p.name: p.size for p in pops}, margin=self.margin, confidence=self.confidence, t=self.t)
        samplers = {p.name: PopulationSampler(population=p, seed=self.seed * 100_003 + i) for i, p in enumerate(pops)}
        fixed_total = sum(alloc.fixed_plan().values())
        settings = {"model": self.model_id, "data": self.data.name, "n_inputs": int(len(x)), "engine": self.engine,
                    "batch_size": self.batch_size, "criterion": self.criterion, "margin": self.margin,
                    "adaptive": {"fixed_plan_faults": fixed_total, "populations": {p.name: p.size for p in pops}, "event": self.event},
                    "confidence": self.confidence, "by": self.by, "site": self.site_kind, "event": self.event, "seed": self.seed,
                    **self.common_settings()}
        worker = self.worker(x, y)
        new = 0
        with CampaignStore(self.out) as store:
            resumed = store.init_campaign(self.identity(x, y), settings)
            from ._base import EvalSet

            golden = EvalSet.build(self.target, x, y, batch_size=self.batch_size)
            clean_top1 = None if golden.labels is None else float((golden.golden.argmax(1) == golden.labels).float().mean().item())
            store.set_meta("clean_top1", clean_top1)
            rounds: list[dict[str, int]] = store.get_meta("adaptive_rounds") or []
            next_id = 0
            for r in rounds:  # replay stored rounds so the samplers continue where they stopped
                for name, n in r.items():
                    next_id += len(samplers[name].draw(n, first_id=next_id))
            while True:
                stored = store.faults()
                pending = pending_faults(stored, store)
                if len(pending):
                    done = len(stored) - len(pending)
                    new += execute(store, pending, worker, self.executor, chunk_size=self.chunk_size, progress=progress, done=done, total=len(stored))
                results = self._results(store, names)
                proposal = {k: v for k, v in alloc.propose(results).items() if v > 0}
                if not proposal or len(rounds) >= self.max_rounds:
                    break
                faults, strata = [], []
                for name, n in proposal.items():
                    drawn = samplers[name].draw(n, first_id=next_id)
                    next_id += len(drawn)
                    faults += drawn
                    strata += [name] * len(drawn)
                rounds.append(proposal)
                store.add_faults_with_strata(faults, strata, meta={"adaptive_rounds": rounds})
            results = self._results(store, names)
            df = store.results_frame()
        fixed = alloc.fixed_plan()
        return AdaptiveSummary(
            self.out, df, int(len(x)), clean_top1, self.criterion, resumed, new, time.perf_counter() - t0,
            strata=alloc.assess(results), fixed_total=sum(fixed.values()), saved=alloc.faults_saved_vs_fixed(results),
            rounds=len(rounds), margin=self.margin, confidence=self.confidence,
        )


__all__ = ["AdaptiveCampaign", "AdaptiveSummary", "EVENTS"]
