"""The flipped-label experiment: a clean and a label-flipped GRU and the failures the flip causes.

A fraction ``rate`` of the training samples of the first class get the second class's
label. Both models train with the same seed (initial weights and batch order), so the
*targets* -- test inputs the clean model gets right and the flipped model gets wrong --
are failures caused by the flipped labels. Influence methods then try to find the
flipped samples behind them (:mod:`faultlab.rnn.influence`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import DataError, FaultlabError
from .inf_training import TrainConfig, TrainRecord, predict, train_sgd

log = logging.getLogger("faultlab")


def parse_classes(text: str) -> tuple[int, int]:
    """``"1,7"`` -> ``(1, 7)``: the class whose labels are flipped and the label they get."""
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 2 or parts[0] == parts[1]:
        raise FaultlabError(f"--classes {text!r}: expected two different class labels like 1,7 (flip 1 -> 7)")
    return parts  # type: ignore[return-value]


def flip_labels(y: np.ndarray, *, source: int, target: int, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Give ``rate`` of the samples labelled ``source`` the label ``target``.

    Returns ``(flipped labels, indices of the flipped samples)``; ``y`` is not changed.
    """
    if not 0.0 < rate < 1.0:
        raise FaultlabError(f"--rate {rate}: expected a fraction strictly between 0 and 1, e.g. 0.3")
    candidates = np.flatnonzero(y == source)
    n = int(round(rate * len(candidates)))
    if n == 0:
        raise DataError(f"--rate {rate}: flips no sample of class {source} ({len(candidates)} samples); raise the rate")
    chosen = np.sort(np.random.default_rng(seed).choice(candidates, n, replace=False))
    out = y.copy()
    out[chosen] = target
    return out, chosen


@dataclass
class FlipExperiment:
    """Data, both models and the targets of one flipped-label run (labels remapped to 0..C-1)."""

    x_train: np.ndarray
    y_clean: np.ndarray
    y_flipped: np.ndarray
    flipped: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    clean_model: Any
    flipped_model: Any
    record: TrainRecord
    targets: np.ndarray
    classes: tuple[int, ...]
    config: TrainConfig
    hidden_size: int

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def new_model(self) -> Any:
        """A fresh GRU with the experiment's initial weights (seeded by ``config.seed``)."""
        return new_gru(input_size=self.x_train.shape[2], hidden_size=self.hidden_size, n_classes=self.n_classes, seed=self.config.seed)

    def retrain(self, y: np.ndarray, *, sample_weight: np.ndarray | None = None) -> Any:
        """The flipped model's training run (same initial weights, same batch order) on labels ``y``."""
        model = self.new_model()
        train_sgd(model, self.x_train, y, config=self.config, sample_weight=sample_weight)
        return model


def new_gru(*, input_size: int, hidden_size: int, n_classes: int, seed: int) -> Any:
    """A GRU -> linear classifier (#7's ``RecurrentClassifier``) with seeded initial weights."""
    import torch

    from ._torch_models import RecurrentClassifier

    torch.manual_seed(seed)
    return RecurrentClassifier(arch="gru", input_size=input_size, hidden_size=hidden_size, n_classes=n_classes)


def check_flip_options(*, classes: tuple[int, int], rate: float, epochs: int, hidden_size: int) -> None:
    """Refuse bad flip options before any data is loaded or model trained."""
    if not 0.0 < rate < 1.0:
        raise FaultlabError(f"--rate {rate}: expected a fraction strictly between 0 and 1, e.g. 0.3")
    if epochs < 1:
        raise FaultlabError(f"--epochs {epochs}: must be >= 1")
    if hidden_size < 1:
        raise FaultlabError(f"--hidden {hidden_size}: must be >= 1")
    if any(c < 0 for c in classes):
        raise FaultlabError(f"--classes {classes[0]},{classes[1]}: class labels are >= 0")


def load_flip_data(data: str, classes: tuple[int, int], rate: float) -> tuple[Any, Any, list[int]]:
    """Train and test splits of ``data`` with the checks a flip needs: sequences, both classes present, >= 1 flip.

    Returns ``(train, test, sorted labels of train)``.
    """
    from .analysis import load_sequences

    train, test = load_sequences(data, "train"), load_sequences(data, "test")
    labels = sorted(set(np.unique(train.y).tolist()))
    for c in classes:
        if c not in labels:
            raise DataError(f"--classes {classes[0]},{classes[1]}: class {c} is not in {data} "
                            f"(labels {labels[0]:g}..{labels[-1]:g})")
    n = int(round(rate * int(np.sum(train.y == classes[0]))))
    if n == 0:
        raise DataError(f"--rate {rate}: flips no sample of class {classes[0]} ({int(np.sum(train.y == classes[0]))} samples); raise the rate")
    return train, test, labels


def run_flip(
    *,
    data: str = "digits-seq",
    classes: tuple[int, int] = (1, 7),
    rate: float = 0.3,
    seed: int = 0,
    hidden_size: int = 32,
    config: TrainConfig | None = None,
    all_classes: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> FlipExperiment:
    """Train a clean and a flipped GRU on ``data`` and find the targets.

    By default only the two named classes are used (a binary task, seconds to train);
    ``all_classes`` keeps every class and flips only the first named one.
    """
    config = config or TrainConfig(seed=seed)
    check_flip_options(classes=classes, rate=rate, epochs=config.epochs, hidden_size=hidden_size)
    train, test, labels = load_flip_data(data, classes, rate)
    source, target = classes
    kept = tuple(labels) if all_classes else tuple(sorted(classes))
    remap = {c: i for i, c in enumerate(kept)}
    mtr, mte = np.isin(train.y, kept), np.isin(test.y, kept)
    x_train, y_train = train.x[mtr], np.array([remap[int(v)] for v in train.y[mtr]])
    x_test, y_test = test.x[mte], np.array([remap[int(v)] for v in test.y[mte]])
    y_flipped, flipped = flip_labels(y_train, source=remap[source], target=remap[target], rate=rate, seed=seed)
    done = [0]

    def tick(_: int, total: int) -> None:
        done[0] += 1
        if progress:
            progress(done[0], 2 * total)

    clean = new_gru(input_size=x_train.shape[2], hidden_size=hidden_size, n_classes=len(kept), seed=config.seed)
    train_sgd(clean, x_train, y_train, config=config, progress=tick)
    flipped_model = new_gru(input_size=x_train.shape[2], hidden_size=hidden_size, n_classes=len(kept), seed=config.seed)
    record = train_sgd(flipped_model, x_train, y_flipped, config=config, record=True, progress=tick)
    assert record is not None
    targets = np.flatnonzero((predict(clean, x_test) == y_test) & (predict(flipped_model, x_test) != y_test))
    log.info("flip %s->%s rate %.2f: %d flipped, %d targets", source, target, rate, len(flipped), len(targets))
    return FlipExperiment(x_train=x_train, y_clean=y_train, y_flipped=y_flipped, flipped=flipped, x_test=x_test,
                          y_test=y_test, clean_model=clean, flipped_model=flipped_model, record=record,
                          targets=targets, classes=kept, config=config, hidden_size=hidden_size)


__all__ = ["FlipExperiment", "flip_labels", "parse_classes", "run_flip", "new_gru", "check_flip_options", "load_flip_data"]
