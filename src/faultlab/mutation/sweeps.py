"""Drivers over :class:`~faultlab.mutation.runner.MutationSweep`: plain sweeps, threshold search, adaptive runs."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from ..errors import FaultSpecError
from .runner import MutantOutcome, MutationSweep
from .search import ThresholdResult, find_kill_threshold, look_schedule, obrien_fleming_spending, sequential_decision
from .statistics import KillTest, compare, metric_direction

log = logging.getLogger("faultlab")
Progress = Callable[[int, int], None]


def sweep_configs(sweep: MutationSweep, operators: Sequence[str], values: Sequence[Any] | None = None) -> list[tuple[str, Any]]:
    """(operator, value) pairs to test: ``values`` for a single operator, else each operator's sweep values."""
    if values and len(operators) != 1:
        raise FaultSpecError("--value needs exactly one --operator; drop --value or pass a single operator")
    for op in operators:
        sweep.catalogue.get(op)
    return [(op, v) for op in operators for v in sweep.values_for(op, values)]


def run_sweep(sweep: MutationSweep, configs: Sequence[tuple[str, Any]], progress: Progress | None = None, *,
              metric: str | None = None) -> int:
    """Train the original and every mutant ``sweep.runs`` times (skipping successful stored runs); returns runs stored.

    With ``metric``, it is checked against the first successful original run, before the rest of the sweep trains.
    """
    if metric is not None and not any(r.status == "ok" for r in sweep.store.runs(sweep.original_hash)):
        sweep.execute(sweep.pending([(None, None)], 1), progress)
    sweep.check_metric(metric)
    sweep.train_original(progress=progress)
    sweep.check_metric(metric)
    tasks = sweep.pending(list(configs), sweep.runs)
    return sweep.execute(tasks, progress)


def _values_upto(sweep: MutationSweep, h: str, metric: str, n: int) -> list[float]:
    return [r.metrics.get(metric, math.nan) for r in sweep.store.runs(h) if r.status == "ok" and r.run < n]


def search_threshold(sweep: MutationSweep, operator: str, *, metric: str | None, test: KillTest, direction: str | None = None,
                     alpha: float = 0.05, min_effect: float = 0.5, precision: float | None = None,
                     progress: Progress | None = None) -> ThresholdResult:
    """Binary search for the value nearest the default that kills, training only grid points not yet stored."""
    op = sweep.catalogue.get(operator)
    dom = op.domain
    if not dom.numeric or op.kind not in ("keyword", "data"):
        raise FaultSpecError(f"--search: operator {operator!r} is not numeric ({dom.describe()}); search works on ranges only")
    default = op.default
    if not isinstance(default, (int, float)) or isinstance(default, bool):
        raise FaultSpecError(f"--search: operator {operator!r} has no numeric default ({default!r}); give it one or list --value instead")
    extreme = dom.search_to if dom.search_to is not None else dom.high
    if precision is None:
        precision = 1.0 if dom.integer else max(abs(extreme - default) / 64, 1e-12)
    elif not precision > 0:
        raise FaultSpecError(f"--precision {precision}: must be greater than 0; e.g. --precision {abs(extreme - default) / 64:g}")
    sweep.train_original(progress=progress)
    metric = sweep.resolve_metric(metric)
    dirn = metric_direction(metric, direction)

    def is_killed(value: float) -> bool:
        value = op.validate(int(value) if dom.integer else float(value))
        sweep.execute(sweep.pending([(operator, value)], sweep.runs), progress)
        c = sweep.compare(operator, value, metric=metric, test=test, direction=dirn, alpha=alpha, min_effect=min_effect)
        log.info("search %s=%s: p=%s d=%s killed=%s", operator, value, c.p_value, c.effect_size, c.killed)
        return bool(c.killed)

    return find_kill_threshold(is_killed, default=float(default), extreme=float(extreme), precision=precision, integer=dom.integer)


def run_adaptive(sweep: MutationSweep, configs: Sequence[tuple[str, Any]], *, metric: str | None, test: KillTest,
                 direction: str | None = None, alpha: float = 0.05, beta: float = 0.1, min_effect: float = 0.5,
                 round_size: int = 5, progress: Progress | None = None) -> list[MutantOutcome]:
    """Add runs in rounds of ``round_size`` up to ``sweep.runs``; stop a mutant once the sequential test decides.

    Errors are spent with O'Brien-Fleming-type boundaries, so false kills stay below ``alpha``
    and early "survived" stops of mutants with a harmful effect >= ``min_effect`` below ``beta``.
    """
    if round_size < 1:
        raise FaultSpecError(f"--round-size {round_size}: must be at least 1")
    looks = look_schedule(sweep.runs, round_size)
    fractions = [n / sweep.runs for n in looks]
    a_spend, b_spend = obrien_fleming_spending(fractions, alpha), obrien_fleming_spending(fractions, beta)
    undecided = list(dict.fromkeys(configs))
    hashes = {c: sweep.mutant(*c) for c in undecided}
    decided: dict[tuple[str, Any], tuple[str, int]] = {}
    resolved: str | None = None
    dirn = "higher"
    total_max = sweep.runs * (len(undecided) + 1)
    for k, n in enumerate(looks):
        sweep.train_original(n)
        if resolved is None:  # checked on the original's runs, before any mutant trains
            resolved = sweep.resolve_metric(metric)
            dirn = metric_direction(resolved, direction)
        sweep.execute(sweep.pending(undecided, n), None)
        orig = _values_upto(sweep, sweep.original_hash, resolved, n)
        still: list[tuple[str, Any]] = []
        for c in undecided:
            d = sequential_decision(orig, _values_upto(sweep, hashes[c], resolved, n), alpha_k=a_spend[k],
                                    beta_k=b_spend[k], final=k == len(looks) - 1, test=test, direction=dirn,
                                    min_effect=min_effect)
            if d is None:
                still.append(c)
            else:
                decided[c] = (d, n)
        undecided = still
        if progress:
            progress(min(total_max, n * (1 + len(undecided)) + sum(m for _, m in decided.values())), total_max)
        if not undecided:
            break
    assert resolved is not None
    out = []
    for c in configs:
        if c not in decided:
            continue
        decision, n = decided[c]
        cmp = compare(_values_upto(sweep, sweep.original_hash, resolved, n), _values_upto(sweep, hashes[c], resolved, n),
                      test=test, direction=dirn, alpha=alpha, min_effect=min_effect)
        out.append(MutantOutcome(c[0], c[1], replace(cmp, killed=decision == "killed"), saved_runs=sweep.runs - n))
    return out


@dataclass(frozen=True)
class AdaptiveSummary:
    """Trainings an adaptive sweep did against the fixed design's ``runs * (mutants + 1)``."""

    trained: int
    fixed_design: int

    @property
    def saved(self) -> int:
        return self.fixed_design - self.trained


def adaptive_summary(sweep: MutationSweep, outcomes: Sequence[MutantOutcome]) -> AdaptiveSummary:
    used_mutant = sum(sweep.runs - o.saved_runs for o in outcomes)
    used_original = max((sweep.runs - o.saved_runs for o in outcomes), default=0)
    return AdaptiveSummary(used_mutant + used_original, sweep.runs * (len(outcomes) + 1))


__all__ = ["sweep_configs", "run_sweep", "search_threshold", "run_adaptive", "AdaptiveSummary", "adaptive_summary"]
