"""Seeded training runs of original and mutant configurations, streamed into the store.

:class:`MutationSweep` plans the runs a sweep needs, skips those already stored (from an
earlier operator, sweep or a killed process), and hands the rest to an
:class:`~faultlab.executors.Executor`. Run ``i`` of every configuration uses seed
``base_seed + i``, so original and mutant runs are paired by seed.
"""
from __future__ import annotations

import inspect
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import FaultlabError, FaultSpecError
from ..executors import Executor, InProcessExecutor
from .models import ModelRef, call_seeded, final_metrics, source_hash, trained_model
from .operators import Operator, OperatorCatalogue, class_ids, is_class_labels, operators_for
from .statistics import Comparison, KillTest, compare, default_metric, metric_direction
from .store import MutationStore, RunRecord, config_hash

log = logging.getLogger("faultlab")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunTask:
    """Train configuration ``config_hash`` once with ``seed`` (``operator`` None: the original)."""

    config_hash: str
    run: int
    seed: int
    operator: Operator | None = None
    value: Any = None


# ---------------------------------------------------------------- worker side
def _module_hook(fn: Callable[..., Any], name: str) -> Any:
    """Module-level ``name`` next to ``fn`` (its globals, else its module), or None."""
    hook = getattr(fn, "__globals__", {}).get(name)
    if hook is None:
        hook = getattr(sys.modules.get(getattr(fn, "__module__", ""), None), name, None)
    return hook if callable(hook) else None


def training_data(fn: Callable[..., Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """``load_training_data()`` of the function's module, for functions taking ``x_train, y_train``."""
    params = inspect.signature(fn).parameters
    if "x_train" not in params or "y_train" not in params:
        return None
    loader = _module_hook(fn, "load_training_data")
    if loader is None:
        return None
    x, y = loader()
    return np.asarray(x), np.asarray(y)


def per_input_outcomes(fn: Callable[..., Any], model: Any) -> bytes | None:
    """Packed per-input correctness of ``model`` on the module's ``evaluation_data()`` (classification only)."""
    loader = _module_hook(fn, "evaluation_data")
    if loader is None or model is None:
        return None
    x, y = loader()
    y = np.asarray(y)
    if not is_class_labels(y):
        return None
    y = class_ids(y)
    try:
        import torch

        if isinstance(model, torch.nn.Module):
            model.eval()
            with torch.no_grad():
                scores = model(torch.as_tensor(np.asarray(x), dtype=torch.float32)).numpy()
        else:
            scores = np.asarray(model.predict(np.asarray(x), verbose=0))
    except Exception:  # a model that cannot predict on the evaluation data gives no per-input outcomes
        log.debug("per-input evaluation failed", exc_info=True)
        return None
    pred = scores.argmax(axis=-1) if scores.ndim > 1 and scores.shape[-1] > 1 else (scores.reshape(-1) > 0.5).astype(int)
    return np.packbits(pred.reshape(-1) == y.reshape(-1)).tobytes()


class TrainingWorker:
    """Runs one :class:`RunTask`: mutate the call, seed, train, keep the final metrics."""

    def __init__(self, *, fn: Callable[..., Any], fixed: dict[str, Any], data: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.fn = fn
        self.fixed = fixed
        self.data = data

    def __call__(self, task: RunTask) -> dict[str, Any]:
        kwargs = dict(self.fixed)
        if self.data is not None:  # fresh copies: a function that edits its data in place must not reach later runs
            kwargs["x_train"], kwargs["y_train"] = (a.copy() for a in self.data)
        if task.operator is not None:
            kwargs = task.operator.apply(kwargs, task.value, np.random.default_rng(task.seed))
        start = time.perf_counter()
        result = call_seeded(self.fn, kwargs, task.seed)
        metrics = final_metrics(result)
        return {"metrics": metrics, "outcomes": per_input_outcomes(self.fn, trained_model(result)),
                "seconds": time.perf_counter() - start}


@dataclass(frozen=True)
class TrainingWorkerFactory:
    """Picklable: builds a :class:`TrainingWorker` once per process (imports the function, loads data)."""

    model: ModelRef
    fixed: tuple[tuple[str, Any], ...] = ()

    def __call__(self) -> TrainingWorker:
        fn = self.model.load()
        return TrainingWorker(fn=fn, fixed=dict(self.fixed), data=training_data(fn))


# ---------------------------------------------------------------- driver side
@dataclass(frozen=True)
class MutantOutcome:
    """A mutant's statistics and, for adaptive runs, how many trainings were saved."""

    operator: str
    value: Any
    comparison: Comparison
    saved_runs: int = 0


@dataclass
class MutationSweep:
    """A training function, its operators and a store: plans, runs and resumes sweeps.

    Holds no results in memory; everything is read back from the store, so a second sweep
    (another operator, more runs) reuses what is there.
    """

    model: ModelRef
    store: MutationStore
    executor: Executor = field(default_factory=InProcessExecutor)
    runs: int = 20
    base_seed: int = 0
    fixed: dict[str, Any] = field(default_factory=dict)
    domains: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.runs < 2:
            raise FaultlabError(f"--runs {self.runs}: need at least 2 runs per configuration for a statistical test")
        self.fn = self.model.load()
        params = inspect.signature(self.fn).parameters
        for key, value in self.fixed.items():
            if key not in params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                raise FaultSpecError(f"--set {key}=...: {self.model.label} has no keyword argument {key!r}; known: {', '.join(params)}")
            if key in params:
                check_set_type(key, value, params[key].default)
        self.source = source_hash(self.fn)
        data = training_data(self.fn)
        self.catalogue: OperatorCatalogue = operators_for(
            self.fn, self.domains, has_training_data=data is not None, defaults=self.fixed)
        self.original_hash = self._hash(None, None)
        self.store.add_config(config_hash=self.original_hash, model=self.model.label, source_hash=self.source,
                              operator=None, value=None, fixed=self.fixed, base_seed=self.base_seed)

    def _hash(self, operator: str | None, value: Any) -> str:
        return config_hash(source_hash=self.source, model=self.model.label, fixed=self.fixed,
                           base_seed=self.base_seed, operator=operator, value=value)

    # ---- planning
    def mutant(self, operator: str, value: Any) -> str:
        """Register mutant ``operator=value`` (validated against its domain); returns its key."""
        op = self.catalogue.get(operator)
        value = op.validate(value)
        h = self._hash(operator, value)
        self.store.add_config(config_hash=h, model=self.model.label, source_hash=self.source, operator=operator,
                              value=value, fixed=self.fixed, base_seed=self.base_seed)
        self.store.add_mutant(config_hash=h, original_hash=self.original_hash, model=self.model.label,
                              source_hash=self.source, operator=operator, value=value)
        return h

    def values_for(self, operator: str, values: Sequence[Any] | None = None) -> list[Any]:
        """The values to try: ``values`` (validated) or the domain's sweep values."""
        op = self.catalogue.get(operator)
        return [op.validate(v) for v in values] if values else list(op.domain.sweep)

    def pending(self, configs: Iterable[tuple[str | None, Any]], n_runs: int) -> list[RunTask]:
        """Runs ``0..n_runs-1`` of each configuration (original when operator is None) not yet stored."""
        tasks: list[RunTask] = []
        seen: set[str] = set()
        for operator, value in configs:
            h = self.original_hash if operator is None else self.mutant(operator, value)
            if h in seen:
                continue
            seen.add(h)
            done = self.store.done_runs(h)
            op = None if operator is None else self.catalogue.get(operator)
            tasks += [RunTask(h, i, self.base_seed + i, op, value) for i in range(n_runs) if i not in done]
        return tasks

    # ---- running
    def execute(self, tasks: list[RunTask], progress: Progress | None = None) -> int:
        """Train every task, storing each run (ok or failed) as it finishes; returns how many were stored."""
        if not tasks:
            return 0
        factory = TrainingWorkerFactory(self.model, tuple(sorted(self.fixed.items())))
        stored = 0
        if progress:
            progress(0, len(tasks))
        for outcome in self.executor.run(factory, tasks):
            t: RunTask = outcome.task
            if outcome.ok:
                res = outcome.result
                rec = RunRecord(t.config_hash, t.run, t.seed, "ok", res["metrics"], res["outcomes"], None)
                secs = {(t.config_hash, t.run): res["seconds"]}
            else:
                first = (outcome.error or "").splitlines()[0] if outcome.error else "error"
                log.info("run %s of %s=%s failed: %s", t.run, t.operator.name if t.operator else "original", t.value, first)
                rec = RunRecord(t.config_hash, t.run, t.seed, "failed", {}, None, outcome.error)
                secs = None
            stored += self.store.add_runs([rec], secs)
            if progress:
                progress(stored, len(tasks))
        return stored

    def run_values(self, operator: str, values: Sequence[Any] | None = None, progress: Progress | None = None) -> list[Any]:
        """Train the original and each mutant value ``runs`` times; returns the values tried."""
        vals = self.values_for(operator, values)
        self.execute(self.pending([(None, None)] + [(operator, v) for v in vals], self.runs), progress)
        return vals

    def train_original(self, n_runs: int | None = None, progress: Progress | None = None) -> None:
        """Train the original first; if every one of its runs fails the function is broken: one-line error."""
        self.execute(self.pending([(None, None)], n_runs or self.runs), progress)
        runs = self.store.runs(self.original_hash)
        if runs and all(r.status == "failed" for r in runs):
            resolve_metric(self.store, [self.original_hash], None)  # raises, naming the first error

    # ---- reading back
    def metric_values(self, h: str, metric: str) -> list[float]:
        return metric_values(self.store, h, metric)

    def compare(self, operator: str, value: Any, *, metric: str, test: KillTest, direction: str | None = None,
                alpha: float = 0.05, min_effect: float = 0.5) -> Comparison:
        h = self._hash(operator, value)
        return compare(self.metric_values(self.original_hash, metric), self.metric_values(h, metric), test=test,
                       direction=metric_direction(metric, direction), alpha=alpha, min_effect=min_effect)

    def resolve_metric(self, metric: str | None) -> str:
        """``metric`` checked against the original's stored runs, or the default one."""
        return resolve_metric(self.store, [self.original_hash], metric)

    def check_metric(self, metric: str | None) -> None:
        """Check ``metric`` against the original's successful stored runs, if there are any (else nothing to check yet)."""
        if metric is not None and any(r.status == "ok" for r in self.store.runs(self.original_hash)):
            self.resolve_metric(metric)


def check_set_type(name: str, value: Any, default: Any) -> None:
    """One-line error when a ``--set`` value does not have the type of the signature default (bool, int, float).

    Checked before training, so ``--set epochs=abc`` does not train runs that all fail; a default of
    None, a string or anything else accepts any value.
    """
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        return
    if not ok:
        raise FaultSpecError(f"--set {name}={value}: expected {expected} like the default {name}={default!r}; "
                             f"e.g. --set {name}={str(default).lower() if isinstance(default, bool) else default}")


def metric_values(store: MutationStore, h: str, metric: str) -> list[float]:
    """The metric of every successful run of configuration ``h`` (NaN for a diverged run)."""
    return [r.metrics.get(metric, math.nan) for r in store.runs(h) if r.status == "ok"]


def resolve_metric(store: MutationStore, hashes: Iterable[str], metric: str | None) -> str:
    """Check that ``metric`` is in the stored histories (or pick the default); one-line error otherwise."""
    available: set[str] = set()
    errors: list[str] = []
    for h in hashes:
        for r in store.runs(h):
            if r.status == "ok":
                available |= set(r.metrics)
            elif r.error:
                errors.append(r.error.strip().splitlines()[0])
    if not available:
        if errors:
            raise FaultlabError(
                f"the original configuration failed in all {len(errors)} stored run(s) (first error: {errors[0]}); "
                "fix the training function (or the --set values) so that it trains, then rerun: failed runs are retried"
            )
        raise FaultlabError("no successful original runs are stored, so no metric can be chosen; check that the original configuration trains")
    if metric is None:
        return default_metric(available)
    if metric not in available:
        raise FaultlabError(f"--metric {metric!r}: not in the training history; available: {', '.join(sorted(available))}")
    return metric


__all__ = ["RunTask", "TrainingWorker", "TrainingWorkerFactory", "MutationSweep", "MutantOutcome",
           "metric_values", "resolve_metric", "training_data", "check_set_type"]
