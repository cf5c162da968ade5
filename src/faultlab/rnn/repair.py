"""Repair by generated data (RNNRepair's datagen) for image sequences such as digits-seq.

Targets are test inputs that every one of several independently seeded models gets
wrong. For each target (true label y, predicted y'), on the first model's abstraction:
the nearest correctly predicted training trace of label y' is the region the model
confuses the target with; the training images of label y nearest to the target are
mutated (rotations and shifts with ``scipy.ndimage``) and the mutants whose traces are
closest to that y' trace are kept, labelled y. Retraining on the original data plus the
generated mutants is compared with the original model and with the original data plus as
many randomly rotated/shifted training images.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..datasets import Dataset, load_dataset
from ..errors import DataError, FaultlabError
from .inf_training import predict
from .subjects import train_subject

log = logging.getLogger("faultlab")

ANGLES = (-15.0, -10.0, -5.0, 5.0, 10.0, 15.0)
SHIFTS = ((-1, 0), (1, 0), (0, -1), (0, 1))
STRATEGIES = ("original", "generated", "random-mutation")


@dataclass(frozen=True)
class DatagenSetup:
    """What one datagen run uses (stored with its results)."""

    data: str = "digits-seq"
    n_models: int = 3
    epochs: int = 15
    hidden_size: int = 32
    near: int = 5
    per_target: int = 5
    pca_dims: int = 5
    components: int = 20
    train_limit: int = 0  # use only the first n training samples (0: all)


def mutants(image: np.ndarray) -> np.ndarray:
    """Rotations (:data:`ANGLES`, degrees) and one-pixel shifts (:data:`SHIFTS`) of a 2-D image, clipped to [0, 1]."""
    from scipy import ndimage

    out = [ndimage.rotate(image, a, reshape=False, order=1, mode="constant", cval=0.0) for a in ANGLES]
    out += [ndimage.shift(image, s, order=0, mode="constant", cval=0.0) for s in SHIFTS]
    return np.clip(np.stack(out), 0.0, 1.0).astype(np.float32)


def random_mutants(images: np.ndarray, *, seed: int) -> np.ndarray:
    """One randomly chosen rotation or shift of each image (the baseline's augmentation)."""
    rng = np.random.default_rng(seed)
    return np.stack([mutants(img)[rng.integers(len(ANGLES) + len(SHIFTS))] for img in images])


@dataclass(frozen=True)
class TraceView:
    """A model's view of inputs: abstract traces (N, T+1), per-step labels (N, T) and probabilities (N, T, C)."""

    states: np.ndarray
    step_pred: np.ndarray
    step_proba: np.ndarray


def trace_distances(a: TraceView, i: int, b: TraceView) -> np.ndarray:
    """Distance of trace ``i`` of ``a`` to every trace of ``b``.

    Mean state mismatch + mean per-step label mismatch + mean half-L1 gap of the per-step
    probabilities (which breaks ties between equal abstract traces).
    """
    states = (b.states[:, 1:] != a.states[i, 1:]).mean(axis=1)
    labels = (b.step_pred != a.step_pred[i]).mean(axis=1)
    proba = 0.5 * np.abs(b.step_proba - a.step_proba[i]).sum(axis=2).mean(axis=1)
    return states + labels + proba


def generate_repair_data(model: Any, abstraction: Any, x_train: np.ndarray, y_train: np.ndarray, x_targets: np.ndarray,
                         y_targets: np.ndarray, *, near: int, per_target: int) -> tuple[np.ndarray, np.ndarray]:
    """Mutants of nearby true-label training images whose traces fall where each target is confused."""
    from .profile import profile_model

    def view(x: np.ndarray) -> TraceView:
        prof = profile_model(model, x)
        return TraceView(abstraction.traces(prof.hidden), prof.step_pred, prof.step_proba)

    train_view, target_view = view(x_train), view(x_targets)
    correct = train_view.step_pred[:, -1] == y_train
    gen_x, gen_y = [], []
    for i in range(len(x_targets)):
        wrong = target_view.step_pred[i, -1]
        d = trace_distances(target_view, i, train_view)
        confused = np.flatnonzero(correct & (y_train == wrong))
        same = np.flatnonzero(y_train == y_targets[i])
        if len(confused) == 0 or len(same) == 0:
            continue
        reference = confused[np.argmin(d[confused])]
        seeds = same[np.argsort(d[same], kind="stable")[:near]]
        cands = np.concatenate([mutants(x_train[j]) for j in seeds])
        ref_view = view(x_train[reference:reference + 1])
        dc = trace_distances(ref_view, 0, view(cands))
        keep = np.argsort(dc, kind="stable")[:per_target]
        gen_x.append(cands[keep])
        gen_y.append(np.full(len(keep), y_targets[i]))
    if not gen_x:
        return np.zeros((0,) + x_train.shape[1:], np.float32), np.zeros(0, np.int64)
    return np.concatenate(gen_x), np.concatenate(gen_y)


def run_datagen(setup: DatagenSetup, seed: int, *, progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """One seed: train the models, find the common failures, generate data, retrain; one row per strategy."""
    from .abstraction import Abstraction
    from .profile import profile_model

    if setup.n_models < 1:
        raise FaultlabError(f"--models {setup.n_models}: need at least one model")
    train, test = load_dataset(setup.data, split="train"), load_dataset(setup.data, split="test")
    if train.x.ndim != 3:
        raise DataError(f"--data {setup.data}: datagen needs image rows as sequences (N, T, F); use digits-seq or mnist-seq")
    if setup.train_limit:
        train = train.head(setup.train_limit)
    x_train, y_train, x_test, y_test = train.x, train.y, test.x, test.y
    total = setup.n_models + 2
    done = [0]

    def step() -> None:
        done[0] += 1
        if progress:
            progress(done[0], total)

    def fit(x: np.ndarray, y: np.ndarray, model_seed: int) -> Any:
        # #7's subject trainer (Adam): datagen needs no SGD replay
        return train_subject(Dataset(x, y, setup.data), arch="gru", hidden_size=setup.hidden_size, epochs=setup.epochs,
                             seed=model_seed)

    models = []
    for k in range(setup.n_models):
        models.append(fit(x_train, y_train, seed + 1000 * k))
        step()
    wrong_all = np.ones(len(x_test), bool)
    for m in models:
        wrong_all &= predict(m, x_test) != y_test
    targets = np.flatnonzero(wrong_all)
    base = models[0]
    if len(targets) == 0:
        log.warning("seed %d: no test input is misclassified by all %d models", seed, setup.n_models)
        return [{"seed": seed, "strategy": s, "targets": 0, "added": 0, "fixed": float("nan"),
                 "test_acc": float(np.mean(predict(base, x_test) == y_test)), "test_acc_others": float("nan")} for s in STRATEGIES]
    abst = Abstraction(pca_dims=setup.pca_dims, components=setup.components, seed=seed).fit(profile_model(base, x_train).hidden)
    gen_x, gen_y = generate_repair_data(base, abst, x_train, y_train, x_test[targets], y_test[targets],
                                        near=setup.near, per_target=setup.per_target)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(x_train), len(gen_x), replace=False) if len(gen_x) <= len(x_train) else rng.integers(len(x_train), size=len(gen_x))
    rand_x, rand_y = random_mutants(x_train[pick], seed=seed), y_train[pick]
    rows = []
    for name in STRATEGIES:
        if name == "original":
            m, added = base, 0
        else:
            ex, ey = (gen_x, gen_y) if name == "generated" else (rand_x, rand_y)
            m, added = fit(np.concatenate([x_train, ex]), np.concatenate([y_train, ey]), seed), len(ex)
            step()
        pred = predict(m, x_test)
        ok = pred == y_test
        rows.append({"seed": seed, "strategy": name, "targets": int(len(targets)), "added": int(added),
                     "fixed": float(ok[targets].mean()), "test_acc": float(ok.mean()),
                     "test_acc_others": float(np.delete(ok, targets).mean())})
    return rows


__all__ = ["DatagenSetup", "STRATEGIES", "ANGLES", "SHIFTS", "mutants", "random_mutants", "TraceView", "trace_distances",
           "generate_repair_data", "run_datagen"]
