"""Evaluate influence rankings on the flipped-label experiment, over several seeds.

Per seed and method: recall of the flipped samples in the top p % of the ranking, and
"restore and retrain": give the flipped samples found in the top p % their true label
back, retrain with the same initial weights and batch order, and measure the accuracy
on the targets (true labels) and on the test set. Reference rows per seed: the flipped
model (nothing restored) and the clean model (all restored). Rows go into a
:class:`~faultlab.rnn.repair_store.ResultStore` as they are produced, so a killed run resumes.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import FaultlabError
from .flip import FlipExperiment, parse_classes, run_flip
from .inf_training import TrainConfig, predict
from .inf_hessian import SOLVERS
from .influence import METHODS, SCOPES, InfluenceProblem, make_method, recall_at, top_fraction
from .repair_store import ResultStore

log = logging.getLogger("faultlab")

RECALL_PERCENTS = tuple(range(5, 101, 5))


@dataclass(frozen=True)
class InfluenceSetup:
    """Everything that fixes an influence evaluation's results (stored with them)."""

    data: str = "digits-seq"
    classes: str = "1,7"
    rate: float = 0.3
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS
    retrain_percents: tuple[float, ...] = (10.0, 20.0)
    epochs: int = 30
    hidden_size: int = 32
    scope: str = "head"
    solver: str = "auto"
    pca_dims: int = 5
    components: int = 20

    def validate(self) -> None:
        parse_classes(self.classes)
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise FaultlabError(f"--method {','.join(bad)}: expected one or more of {', '.join(METHODS)}")
        if not self.seeds:
            raise FaultlabError("--seeds must be >= 1")
        if self.scope not in SCOPES:
            raise FaultlabError(f"--scope {self.scope!r}: expected one of {', '.join(SCOPES)}")
        if self.solver not in SOLVERS:
            raise FaultlabError(f"--solver {self.solver!r}: expected one of {', '.join(SOLVERS)}")
        if not 0.0 < self.rate < 1.0:
            raise FaultlabError(f"--rate {self.rate}: expected a fraction strictly between 0 and 1, e.g. 0.3")
        for p in self.retrain_percents:
            if not 0 < p <= 100:
                raise FaultlabError(f"--retrain-percents {p}: expected percentages in (0, 100]")


def _accuracies(model: Any, exp: FlipExperiment) -> tuple[float, float]:
    pred = predict(model, exp.x_test)
    target_acc = float(np.mean(pred[exp.targets] == exp.y_test[exp.targets])) if len(exp.targets) else float("nan")
    return target_acc, float(np.mean(pred == exp.y_test))


def evaluate_seed(setup: InfluenceSetup, seed: int, store: ResultStore,
                  tick: Callable[[], None] | None = None) -> None:
    """All rows of one seed that ``store`` does not hold yet."""
    keys = [f"seed={seed:04d}/method={m}" for m in setup.methods] + [f"seed={seed:04d}/reference"]
    if all(store.has(k) for k in keys):
        if tick:
            for _ in setup.methods:
                tick()
        return
    exp = run_flip(data=setup.data, classes=parse_classes(setup.classes), rate=setup.rate, seed=seed,
                   hidden_size=setup.hidden_size, config=TrainConfig(epochs=setup.epochs, seed=seed))
    base = {"seed": seed, "n_targets": int(len(exp.targets)), "n_flipped": int(len(exp.flipped)), "n_train": int(len(exp.x_train))}
    if not store.has(keys[-1]):
        flipped_acc, clean_acc = _accuracies(exp.flipped_model, exp), _accuracies(exp.clean_model, exp)
        store.put({keys[-1]: {**base, "kind": "reference", "flipped_target_acc": flipped_acc[0], "flipped_test_acc": flipped_acc[1],
                              "clean_target_acc": clean_acc[0], "clean_test_acc": clean_acc[1]}})
    if len(exp.targets) == 0:
        log.warning("seed %d: the flip caused no target failure; no influence to rank", seed)
        store.put({k: {**base, "kind": "skipped", "method": m} for k, m in zip(keys, setup.methods)})
        if tick:
            for _ in setup.methods:
                tick()
        return
    problem = InfluenceProblem(model=exp.flipped_model, x_train=exp.x_train, y_train=exp.y_flipped,
                               x_target=exp.x_test[exp.targets], y_target=exp.y_test[exp.targets],
                               weight_decay=exp.config.weight_decay, record=exp.record)
    for key, name in zip(keys, setup.methods):
        if store.has(key):
            if tick:
                tick()
            continue
        method = make_method(name, seed=seed, scope=setup.scope, solver=setup.solver, pca_dims=setup.pca_dims,
                             components=setup.components)
        scores = method.scores(problem)
        recall = recall_at(scores, exp.flipped, sorted({float(p) for p in RECALL_PERCENTS + tuple(setup.retrain_percents)}))
        retrain = {}
        for p in setup.retrain_percents:
            found = np.intersect1d(top_fraction(scores, p), exp.flipped)
            y = exp.y_flipped.copy()
            y[found] = exp.y_clean[found]
            t_acc, s_acc = _accuracies(exp.retrain(y), exp)
            retrain[str(float(p))] = {"restored": int(len(found)), "target_acc": t_acc, "test_acc": s_acc}
        store.put({key: {**base, "kind": "method", "method": name,
                         "recall": {str(p): r for p, r in recall.items()}, "retrain": retrain}})
        if tick:
            tick()


def evaluate_influence(setup: InfluenceSetup, store: ResultStore, *,
                       progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the evaluation of ``setup`` into ``store``; returns all stored rows."""
    setup.validate()
    total = len(setup.seeds) * len(setup.methods)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress:
            progress(done[0], total)

    for seed in setup.seeds:
        evaluate_seed(setup, seed, store, tick)
    return store.rows()


def setup_config(setup: InfluenceSetup) -> dict[str, Any]:
    """The setup as a JSON-able dict (what the store checks on resume)."""
    d = asdict(setup)
    d["seeds"] = list(setup.seeds)
    d["methods"] = list(setup.methods)
    d["retrain_percents"] = list(setup.retrain_percents)
    return d


def tables(rows: list[dict[str, Any]], *, percents: Sequence[float] = (5, 10, 20, 30, 50)) -> dict[str, Any]:
    """Summary DataFrames: ``recall`` (method x percent) and ``retrain`` (method x percent, plus references)."""
    import pandas as pd

    from .repair_store import summarise

    flat_recall, flat_retrain = [], []
    for r in rows:
        if r.get("kind") == "method":
            for p in percents:
                if str(float(p)) in r["recall"]:
                    flat_recall.append({"method": r["method"], "percent": float(p), "recall": r["recall"][str(float(p))]})
            for p, v in r["retrain"].items():
                flat_retrain.append({"method": r["method"], "percent": float(p), "target_acc": v["target_acc"],
                                     "test_acc": v["test_acc"], "restored": v["restored"]})
        elif r.get("kind") == "reference":
            flat_retrain.append({"method": "none (flipped model)", "percent": 0.0, "target_acc": r["flipped_target_acc"],
                                 "test_acc": r["flipped_test_acc"], "restored": 0})
            flat_retrain.append({"method": "all (clean model)", "percent": 100.0, "target_acc": r["clean_target_acc"],
                                 "test_acc": r["clean_test_acc"], "restored": r["n_flipped"]})
    recall = summarise(flat_recall, by=["method", "percent"], values=["recall"])
    retrain = summarise(flat_retrain, by=["method", "percent"], values=["target_acc", "test_acc", "restored"])
    seeds_used = sorted({r["seed"] for r in rows if r.get("kind") == "method"})
    skipped = sorted({r["seed"] for r in rows if r.get("kind") == "skipped"})
    return {"recall": recall, "retrain": retrain, "seeds": seeds_used, "skipped": skipped,
            "frame": pd.DataFrame(flat_recall)}


__all__ = ["InfluenceSetup", "RECALL_PERCENTS", "evaluate_influence", "evaluate_seed", "setup_config", "tables"]
