"""Segment repair on the token task (RNNRepair's segment-level repair).

For each failing test sequence: locate the step where the per-step prediction turns
wrong for good (the start of the final run of steps whose prediction differs from the
rule's prefix label), take the ``width`` tokens ending there as the suspect segment and
the abstract state before it as its context; find training sequences whose traces reach
that same state, write the segment there, label the result by the rule and retrain.
Baselines, each adding the same number of sequences: the segment at random positions of
random training sequences, and fresh random sequences; plus the unrepaired model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import FaultlabError
from .inf_training import TrainConfig, predict, train_sgd
from .tokens import TokenTask, as_model_input, insert_tokens, new_token_gru

log = logging.getLogger("faultlab")

STRATEGIES = ("original", "segment", "random-position", "fresh-samples")


@dataclass(frozen=True)
class SegmentSetup:
    """Sizes and hyper-parameters of one segment-repair run (all stored with its results)."""

    vocab: int = 10
    length: int = 12
    n_train: int = 300
    n_test: int = 1000
    epochs: int = 20
    hidden_size: int = 32
    width: int = 3
    per_target: int = 5
    max_targets: int = 30
    pca_dims: int = 5
    components: int = 20


def turning_step(step_pred: np.ndarray, truth: np.ndarray) -> int:
    """Index of the first step of the final run of wrong per-step predictions (-1 if the last step is right)."""
    wrong = np.asarray(step_pred) != np.asarray(truth)
    if not wrong[-1]:
        return -1
    t = len(wrong) - 1
    while t > 0 and wrong[t - 1]:
        t -= 1
    return t


def _abstraction(model: Any, x: np.ndarray, setup: SegmentSetup, seed: int) -> tuple[Any, Any]:
    from .abstraction import Abstraction
    from .profile import profile_model

    prof = profile_model(model, as_model_input(x))
    return Abstraction(pca_dims=setup.pca_dims, components=setup.components, seed=seed).fit(prof.hidden), prof


def segment_candidates(task: TokenTask, model: Any, x_train: np.ndarray, x_fail: np.ndarray, *, setup: SegmentSetup,
                       seed: int) -> tuple[np.ndarray, list[tuple[np.ndarray, int]]]:
    """New training sequences that put each failure's suspect segment into its abstract context.

    Returns the sequences (k, T) and per failure ``(segment, context state)``.
    """
    from .profile import profile_model

    abst, prof_train = _abstraction(model, x_train, setup, seed)
    train_traces = abst.traces(prof_train.hidden)
    prof_fail = profile_model(model, as_model_input(x_fail))
    fail_traces = abst.traces(prof_fail.hidden)
    truth = task.prefix_labels(x_fail)
    rng = np.random.default_rng(seed)
    new, segments = [], []
    for i in range(len(x_fail)):
        t = turning_step(prof_fail.step_pred[i], truth[i])
        if t < 0:
            continue
        start = max(0, t - setup.width + 1)
        segment = x_fail[i, start:t + 1]
        context = int(fail_traces[i, start])  # state before token `start`
        segments.append((segment, context))
        # positions p where training trace i reaches `context` before token p and the segment fits
        hits = np.argwhere(train_traces[:, : task.length - len(segment) + 1] == context)
        if len(hits) == 0:
            continue
        pick = hits[rng.choice(len(hits), min(setup.per_target, len(hits)), replace=False)]
        for j, p in pick:
            new.append(insert_tokens(x_train[j], segment, int(p)))
    return (np.array(new, dtype=np.int64).reshape(-1, task.length)), segments


def random_position_candidates(task: TokenTask, x_train: np.ndarray, segments: list[tuple[np.ndarray, int]], n: int,
                               *, seed: int) -> np.ndarray:
    """``n`` sequences with the failures' segments written at random positions of random training sequences."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for k in range(n):
        segment = segments[k % len(segments)][0]
        j = int(rng.integers(len(x_train)))
        p = int(rng.integers(task.length - len(segment) + 1))
        out.append(insert_tokens(x_train[j], segment, p))
    return np.array(out, dtype=np.int64).reshape(-1, task.length)


def run_segment_repair(setup: SegmentSetup, seed: int, *, progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """One seed: train, find failures, add sequences per strategy, retrain; one row per strategy."""
    task = TokenTask(vocab=setup.vocab, length=setup.length)
    x_train = task.sample(setup.n_train, seed=seed)
    x_test = task.sample(setup.n_test, seed=10_000 + seed)
    y_test = task.labels(x_test)
    config = TrainConfig(epochs=setup.epochs, seed=seed)

    def train(x: np.ndarray) -> Any:
        model = new_token_gru(vocab=setup.vocab, hidden_size=setup.hidden_size, seed=seed)
        train_sgd(model, as_model_input(x), task.labels(x), config=config)
        return model

    model = train(x_train)
    fails = np.flatnonzero(predict(model, as_model_input(x_test)) != y_test)
    targets = fails[: setup.max_targets]
    if len(targets) == 0:
        raise FaultlabError("segment repair: the model makes no mistake on the test set; lower --epochs or --train")
    seg_x, segments = segment_candidates(task, model, x_train, x_test[targets], setup=setup, seed=seed)
    n_new = len(seg_x)
    if n_new == 0:
        raise FaultlabError("segment repair: no training trace reaches the failures' contexts; lower --components")
    added = {
        "original": np.zeros((0, task.length), dtype=np.int64),
        "segment": seg_x,
        "random-position": random_position_candidates(task, x_train, segments, n_new, seed=seed),
        "fresh-samples": task.sample(n_new, seed=20_000 + seed),
    }
    rows = []
    for k, (name, extra) in enumerate(added.items()):
        m = model if name == "original" else train(np.concatenate([x_train, extra]))
        pred = predict(m, as_model_input(x_test))
        rows.append({"seed": seed, "strategy": name, "added": int(len(extra)), "targets": int(len(targets)),
                     "fixed": float(np.mean(pred[targets] == y_test[targets])),
                     "test_acc": float(np.mean(pred == y_test)),
                     "test_acc_others": float(np.mean(np.delete(pred == y_test, targets)))})
        if progress:
            progress(k + 1, len(added))
    return rows


__all__ = ["SegmentSetup", "STRATEGIES", "turning_step", "segment_candidates", "random_position_candidates", "run_segment_repair"]
