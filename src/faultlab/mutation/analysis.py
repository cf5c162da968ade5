"""Read a logs directory back into per-mutant statistics, per-operator killability and scores.

Works from the store alone -- no training function needed -- so ``faultlab mutate analyze``
can re-decide with another metric, test or threshold without retraining.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FaultlabError
from .runner import metric_values, resolve_metric
from .search import TRIVIAL_AT, killability_score, mutation_score, triviality_score, unpack_outcomes
from .statistics import Comparison, KillTest, check_kill_options, compare, kill_test, metric_direction
from .store import MutantRecord, MutationStore


@dataclass(frozen=True)
class MutantAnalysis:
    """One mutant (operator=value) with its statistics, failures and triviality."""

    mutant: MutantRecord
    comparison: Comparison
    failed_original: int
    failed_mutant: int
    triviality: float  # NaN without per-input outcomes
    error: str | None = None  # first line of the first failed mutant run's error

    @property
    def operator(self) -> str:
        return self.mutant.operator

    @property
    def value(self) -> Any:
        return self.mutant.value

    @property
    def setting(self) -> str:
        """The rest of the configuration (``--set`` values, ``--seed``), which tells apart mutants with one value."""
        return self.mutant.setting

    @property
    def trivial(self) -> bool | None:
        return None if math.isnan(self.triviality) else self.triviality >= TRIVIAL_AT


@dataclass(frozen=True)
class Analysis:
    """Everything ``analyze`` reports for one model in a logs directory."""

    model: str
    metric: str
    direction: str
    test: str
    mutants: list[MutantAnalysis]
    killability: dict[str, float]
    mutation_score: float  # of the test metric against the training metric (NaN if no training metric)
    train_metric: str | None


def _train_counterpart(metric: str) -> str | None:
    return metric[4:] if metric.startswith("val_") else None


def _paired_triviality(store: MutationStore, m: MutantRecord) -> float:
    orig = {r.run: r.outcomes for r in store.runs(m.original_hash) if r.status == "ok" and r.outcomes}
    mut = {r.run: r.outcomes for r in store.runs(m.config_hash) if r.status == "ok" and r.outcomes}
    runs = sorted(set(orig) & set(mut))
    if not runs:
        return float("nan")
    o = [unpack_outcomes(orig[i]) for i in runs]
    mm = [unpack_outcomes(mut[i]) for i in runs]
    return triviality_score(o, mm)


def analyze(store: MutationStore, *, model: str | None = None, metric: str | None = None, direction: str | None = None,
            test: str | KillTest = "glm", alpha: float = 0.05, min_effect: float = 0.5,
            train_metric: str | None = None) -> Analysis:
    """Decide every stored mutant of ``model`` (the only one in the store when None) on ``metric``."""
    models = store.models()
    if not models:
        raise FaultlabError(f"{store.path}: no mutants stored yet; run 'faultlab mutate run' first")
    if model is None:
        if len(models) > 1:
            raise FaultlabError(f"{store.path}: holds several models ({', '.join(models)}); pass --model NAME")
        model = models[0]
    elif model not in models:
        raise FaultlabError(f"--model {model!r}: no mutants of it in {store.path}; stored: {', '.join(models)}")
    check_kill_options(alpha=alpha, min_effect=min_effect, direction=direction)
    mutants = store.mutants(model)
    originals = sorted({m.original_hash for m in mutants})
    metric = resolve_metric(store, originals, metric)
    kt = kill_test(test) if isinstance(test, str) else test
    dirn = metric_direction(metric, direction)
    rows: list[MutantAnalysis] = []
    for m in mutants:
        o_runs, m_runs = store.runs(m.original_hash), store.runs(m.config_hash)
        cmp = compare(metric_values(store, m.original_hash, metric), metric_values(store, m.config_hash, metric),
                      test=kt, direction=dirn, alpha=alpha, min_effect=min_effect)
        rows.append(MutantAnalysis(m, cmp, sum(r.status == "failed" for r in o_runs),
                                   sum(r.status == "failed" for r in m_runs), _paired_triviality(store, m),
                                   first_error(store, m.config_hash)))
    by_op: dict[str, dict[Any, bool | None]] = {}  # keyed by the mutant's configuration, so --set / --seed variants count apart
    for r in rows:
        by_op.setdefault(r.operator, {})[r.mutant.config_hash] = r.comparison.killed
    kill = {op: killability_score(v) for op, v in by_op.items()}
    train = train_metric if train_metric is not None else _train_counterpart(metric)
    score = float("nan")
    if train is not None:
        try:
            train = resolve_metric(store, originals, train)
        except FaultlabError:
            if train_metric is not None:
                raise
            train = None
        if train is not None:
            tdir = metric_direction(train, direction)
            train_kills: dict[str, dict[Any, bool | None]] = {}
            for m in mutants:
                c = compare(metric_values(store, m.original_hash, train), metric_values(store, m.config_hash, train),
                            test=kt, direction=tdir, alpha=alpha, min_effect=min_effect)
                train_kills.setdefault(m.operator, {})[m.config_hash] = c.killed
            score = mutation_score(by_op, train_kills)
    return Analysis(model, metric, dirn, kt.name, rows, kill, score, train)


def runs_table(store: MutationStore, analysis: Analysis) -> list[dict[str, Any]]:
    """Rows ``operator,value,setting,run,seed,status,metric,error`` for every stored run (each original once,
    operator ``original``); ``error`` is the first line of a failed run's stored error."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(h: str, operator: str, value: Any, setting: str) -> None:
        for r in store.runs(h):
            v = r.metrics.get(analysis.metric, float("nan")) if r.status == "ok" else float("nan")
            out.append({"operator": operator, "value": value, "setting": setting, "run": r.run, "seed": r.seed,
                        "status": r.status, "metric": "" if math.isnan(v) else repr(float(v)),
                        "error": first_line(r.error) if r.status == "failed" else ""})

    for m in analysis.mutants:
        if m.mutant.original_hash not in seen:
            seen.add(m.mutant.original_hash)
            add(m.mutant.original_hash, "original", "", m.setting)
    for m in analysis.mutants:
        add(m.mutant.config_hash, m.operator, format_value(m.value), m.setting)
    return out


def first_line(error: str | None) -> str:
    """The first non-empty line of a stored error (``Type: message``)."""
    lines = [ln.strip() for ln in (error or "").splitlines() if ln.strip()]
    return lines[0] if lines else "error"


def first_error(store: MutationStore, h: str) -> str | None:
    """First line of the first failed run's error of configuration ``h``, or None."""
    for r in store.runs(h):
        if r.status == "failed":
            return first_line(r.error)
    return None


def why_undecided(store: MutationStore, m: MutantAnalysis, metric: str) -> str:
    """Why mutant ``m`` (or its original) has fewer than two finite values of ``metric``: runs failed, NaN, or not recorded."""
    parts = []
    for who, h in (("mutant", m.mutant.config_hash), ("original", m.mutant.original_hash)):
        runs = store.runs(h)
        ok = [r for r in runs if r.status == "ok"]
        missing = sum(metric not in r.metrics for r in ok)
        nan = sum(metric in r.metrics and not math.isfinite(r.metrics[metric]) for r in ok)  # the store reads null back as NaN
        if len(ok) - missing - nan >= 2:
            continue
        why = [f"{n} {what}" for n, what in ((len(runs) - len(ok), "failed"), (nan, f"with {metric} NaN or infinite (training diverged?)"),
                                            (missing, f"without {metric}")) if n]
        parts.append(f"{who} runs: " + (", ".join(why) or f"only {len(ok)}"))
    return "; ".join(parts) or "too few runs"


def several_settings(analysis: Analysis) -> bool:
    """Whether the mutants come from more than one configuration (so reports must show the setting)."""
    return len({m.mutant.original_hash for m in analysis.mutants}) > 1


def format_value(v: Any) -> str:
    return "None" if v is None else str(v)


def metric_samples(store: MutationStore, analysis: Analysis) -> dict[str, dict[str, np.ndarray]]:
    """Per operator: ``{"original": values, "<value>": values, ...}`` for box plots."""
    out: dict[str, dict[str, np.ndarray]] = {}
    many = several_settings(analysis)
    for m in analysis.mutants:
        d = out.setdefault(m.operator, {})
        orig = f"original ({m.setting})" if many else "original"
        if orig not in d:
            d[orig] = np.asarray(metric_values(store, m.mutant.original_hash, analysis.metric))
        label = f"{format_value(m.value)} ({m.setting})" if many else format_value(m.value)
        d[label] = np.asarray(metric_values(store, m.mutant.config_hash, analysis.metric))
    return out


__all__ = ["Analysis", "MutantAnalysis", "analyze", "runs_table", "metric_samples", "format_value", "first_line",
           "first_error", "several_settings", "why_undecided"]
