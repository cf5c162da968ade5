"""Backdoor analysis on the token task: poison, attack at an abstract context, fix by removal.

A fraction of the training sequences get the trigger token at a random position and
label 1. The *context* is the abstract state that most often came right before the
trigger in those poisoned sequences. Attack: test sequences of true label 0 with the
trigger at a position where their trace is in that context, versus the trigger at a
random position of the same sequences. Fix: remove the training sequences whose traces
contain a *trigger transition* (a transition the poisoned model takes when it reads the
trigger in the attack inputs and never takes on the same inputs without it) and retrain, versus removing as many random sequences.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import FaultlabError
from .inf_training import TrainConfig, predict, train_sgd
from .tokens import TokenTask, as_model_input, new_token_gru

TARGET_LABEL = 1


@dataclass(frozen=True)
class BackdoorSetup:
    """Sizes and hyper-parameters of one backdoor run."""

    vocab: int = 10
    length: int = 12
    n_train: int = 400
    n_test: int = 600
    poison_rate: float = 0.05
    epochs: int = 20
    hidden_size: int = 32
    pca_dims: int = 5
    components: int = 20

    def validate(self) -> None:
        if not 0 < self.poison_rate < 1:
            raise FaultlabError(f"--poison {self.poison_rate}: expected a fraction strictly between 0 and 1, e.g. 0.05")


def with_trigger(task: TokenTask, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Copies of sequences ``x`` with the trigger at ``positions`` (one per sequence)."""
    out = np.array(x, copy=True)
    out[np.arange(len(x)), positions] = task.trigger
    return out


def trigger_transitions(traces: np.ndarray, positions: np.ndarray) -> set[tuple[int, int]]:
    """The abstract transitions ``(state before, state after)`` taken when reading the trigger."""
    rows = np.arange(len(traces))
    return set(zip(traces[rows, positions].tolist(), traces[rows, positions + 1].tolist()))


def samples_with_transitions(traces: np.ndarray, wanted: set[tuple[int, int]]) -> np.ndarray:
    """Indices of traces that contain at least one transition of ``wanted``."""
    return np.array([i for i, tr in enumerate(traces) if wanted.intersection(zip(tr[:-1].tolist(), tr[1:].tolist()))], dtype=np.int64)


def run_backdoor(setup: BackdoorSetup, seed: int, *, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """One seed of the backdoor analysis; returns the attack and fix rates with their random baselines."""
    from .abstraction import Abstraction
    from .profile import profile_model

    setup.validate()
    task = TokenTask(vocab=setup.vocab, length=setup.length)
    rng = np.random.default_rng(seed)
    x_train = task.sample(setup.n_train, seed=seed)
    y_train = task.labels(x_train)
    n_poison = max(1, int(round(setup.poison_rate * setup.n_train)))
    poisoned = np.sort(rng.choice(setup.n_train, n_poison, replace=False))
    poison_pos = rng.integers(0, setup.length, size=n_poison)
    x_train[poisoned] = with_trigger(task, x_train[poisoned], poison_pos)
    y_train[poisoned] = TARGET_LABEL
    x_test = task.sample(setup.n_test, seed=10_000 + seed)
    y_test = task.labels(x_test)
    victims = x_test[y_test != TARGET_LABEL]
    config = TrainConfig(epochs=setup.epochs, seed=seed)

    def train(keep: np.ndarray) -> Any:
        model = new_token_gru(vocab=setup.vocab, hidden_size=setup.hidden_size, seed=seed)
        train_sgd(model, as_model_input(x_train[keep]), y_train[keep], config=config)
        return model

    def attack_rate(model: Any, x: np.ndarray, pos: np.ndarray) -> float:
        return float(np.mean(predict(model, as_model_input(with_trigger(task, x, pos))) == TARGET_LABEL)) if len(x) else float("nan")

    everyone = np.arange(setup.n_train)
    model = train(everyone)
    tick = 0

    def step() -> None:
        nonlocal tick
        tick += 1
        if progress:
            progress(tick, 3)

    step()
    prof_train = profile_model(model, as_model_input(x_train))
    abst = Abstraction(pca_dims=setup.pca_dims, components=setup.components, seed=seed).fit(prof_train.hidden)
    train_traces = abst.traces(prof_train.hidden)
    context = Counter(train_traces[poisoned, poison_pos].tolist()).most_common(1)[0][0]
    victim_traces = abst.traces(profile_model(model, as_model_input(victims)).hidden)
    # the first position whose preceding state is the context (positions 0..T-1 read token p after state trace[p])
    in_context = victim_traces[:, : setup.length] == context
    has = in_context.any(axis=1)
    ctx_pos = in_context.argmax(axis=1)
    rand_pos = rng.integers(0, setup.length, size=len(victims))
    attacked = with_trigger(task, victims, rand_pos)
    wanted = trigger_transitions(abst.traces(profile_model(model, as_model_input(attacked)).hidden), rand_pos)
    wanted -= {t for tr in victim_traces for t in zip(tr[:-1].tolist(), tr[1:].tolist())}  # also taken without the trigger
    flagged = samples_with_transitions(train_traces, wanted)
    random_removed = np.sort(rng.choice(setup.n_train, len(flagged), replace=False))
    fixed = train(np.setdiff1d(everyone, flagged))
    step()
    random_fix = train(np.setdiff1d(everyone, random_removed))
    step()
    clean_acc = lambda m: float(np.mean(predict(m, as_model_input(x_test)) == y_test))  # noqa: E731
    return {
        "seed": seed, "poisoned": int(n_poison), "victims": int(len(victims)), "context_state": int(context),
        "victims_with_context": int(has.sum()),
        "attack_context": attack_rate(model, victims[has], ctx_pos[has]),
        "attack_random_same_inputs": attack_rate(model, victims[has], rand_pos[has]),
        "attack_random": attack_rate(model, victims, rand_pos),
        "clean_acc": clean_acc(model),
        "removed": int(len(flagged)),
        "poison_recall_transitions": float(np.isin(poisoned, flagged).mean()),
        "poison_recall_random": float(np.isin(poisoned, random_removed).mean()),
        "attack_after_transition_fix": attack_rate(fixed, victims, rand_pos),
        "attack_after_random_fix": attack_rate(random_fix, victims, rand_pos),
        "clean_acc_transition_fix": clean_acc(fixed),
        "clean_acc_random_fix": clean_acc(random_fix),
    }


__all__ = ["BackdoorSetup", "TARGET_LABEL", "with_trigger", "trigger_transitions", "samples_with_transitions", "run_backdoor"]
