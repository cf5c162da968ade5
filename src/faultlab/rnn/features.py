"""Trace features and SimNN: a linear surrogate of the RNN trained on its abstract traces.

Per step t the feature vector is ``[s_t, y_t, P(.|s_t)]``: the state id scaled to [0, 1],
the per-step predicted label scaled to [0, 1] and the label distribution of the state,
``P(c|s) = n(s, c) / sum_c n(s, c)`` from the training profile. Feature sets pick parts:
``ID`` (state only), ``RL`` (label only), ``ID_RL``, ``CS`` (P(.|s) only) and ``all``.
The virtual state 0 carries no prediction and is left out, so a trace gives T steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError, FaultlabError

FEATURE_SETS = ("ID", "RL", "ID_RL", "CS", "all")
_PARTS = {"ID": ("id",), "RL": ("rl",), "ID_RL": ("id", "rl"), "CS": ("cs",), "all": ("id", "rl", "cs")}


def label_distribution(counts: np.ndarray) -> np.ndarray:
    """``P(c|s)`` (n_states, n_classes) from label counts; uniform for states never visited in training."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    uniform = np.full_like(counts, 1.0 / counts.shape[1])
    return np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), uniform)


def _check_feature_set(feature_set: str) -> tuple[str, ...]:
    if feature_set not in _PARTS:
        raise FaultlabError(f"--feature-set {feature_set!r}: expected one of {', '.join(FEATURE_SETS)}")
    return _PARTS[feature_set]


def trace_features(
    traces: np.ndarray,
    step_pred: np.ndarray,
    label_dist: np.ndarray,
    *,
    feature_set: str = "all",
    max_len: int | None = None,
) -> np.ndarray:
    """Normalised per-step features (N, L, F) of state traces (N, T+1) and predictions (N, T).

    ``label_dist`` is :func:`label_distribution` of the training counts. Traces shorter
    than ``max_len`` are padded with zeros at the end (L = ``max_len`` or T).
    """
    parts = _check_feature_set(feature_set)
    traces = np.asarray(traces)
    step_pred = np.asarray(step_pred)
    if traces.ndim != 2 or step_pred.shape != (traces.shape[0], traces.shape[1] - 1):
        raise DataError(f"traces (N, T+1) and step_pred (N, T) do not line up: got {traces.shape} and {step_pred.shape}")
    n_states, n_classes = label_dist.shape
    states = traces[:, 1:]
    cols = []
    if "id" in parts:
        cols.append((states / max(n_states - 1, 1))[..., None])
    if "rl" in parts:
        cols.append((step_pred / max(n_classes - 1, 1))[..., None])
    if "cs" in parts:
        cols.append(label_dist[states])
    feats = np.concatenate(cols, axis=2).astype(np.float32)
    length = feats.shape[1]
    if max_len is not None and max_len != length:
        if length > max_len:
            raise DataError(f"traces have {length} steps, more than the {max_len} the SimNN was trained on")
        feats = np.concatenate([feats, np.zeros((len(feats), max_len - length, feats.shape[2]), np.float32)], axis=1)
    return feats


class SimNN:
    """A linear classifier (multinomial logistic regression) on flattened trace features."""

    def __init__(self, *, C: float = 1.0, max_iter: int = 2000, seed: int = 0) -> None:  # noqa: N803 - sklearn's name
        self.C = C
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, features: np.ndarray, y: np.ndarray) -> "SimNN":
        """Fit on features (N, L, F) and labels (N,); returns ``self``."""
        from sklearn.linear_model import LogisticRegression

        features = np.asarray(features)
        if len(features) == 0:
            raise DataError("SimNN needs at least one training trace; no correctly predicted training inputs?")
        self.shape_ = features.shape[1:]
        self.classifier_ = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
        self.classifier_.fit(features.reshape(len(features), -1), np.asarray(y))
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted labels (N,) for features (N, L, F) shaped like the training features."""
        features = np.asarray(features)
        if features.shape[1:] != self.shape_:
            raise DataError(f"features of shape {features.shape[1:]} do not match the SimNN's {self.shape_}")
        return self.classifier_.predict(features.reshape(len(features), -1))


@dataclass(frozen=True)
class SimNNScore:
    """How well a SimNN on one feature set matches the truth (accuracy) and the RNN (fidelity) on test traces."""

    feature_set: str
    accuracy: float
    fidelity: float
    rnn_accuracy: float
    n_train: int
    n_test: int


def evaluate_simnn(
    *,
    train_traces: np.ndarray,
    train_step_pred: np.ndarray,
    train_labels: np.ndarray,
    test_traces: np.ndarray,
    test_step_pred: np.ndarray,
    test_labels: np.ndarray,
    n_states: int,
    n_classes: int,
    feature_set: str = "all",
    seed: int = 0,
) -> SimNNScore:
    """Train a SimNN on the correctly predicted training traces and score it on the test traces.

    Accuracy is against ``test_labels``; fidelity against the RNN's own prediction (the
    last step of ``test_step_pred``).
    """
    from .stability import state_label_counts

    _check_feature_set(feature_set)
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    dist = label_distribution(state_label_counts(train_traces, train_step_pred, n_states=n_states, n_classes=n_classes))
    correct = np.asarray(train_step_pred)[:, -1] == train_labels
    x_train = trace_features(train_traces[correct], train_step_pred[correct], dist, feature_set=feature_set)
    model = SimNN(seed=seed).fit(x_train, train_labels[correct])
    x_test = trace_features(test_traces, test_step_pred, dist, feature_set=feature_set, max_len=model.shape_[0])
    pred = model.predict(x_test)
    rnn_pred = np.asarray(test_step_pred)[:, -1]
    return SimNNScore(
        feature_set=feature_set,
        accuracy=float(np.mean(pred == test_labels)),
        fidelity=float(np.mean(pred == rnn_pred)),
        rnn_accuracy=float(np.mean(rnn_pred == test_labels)),
        n_train=int(correct.sum()),
        n_test=len(test_labels),
    )


def compare_feature_sets(feature_sets: tuple[str, ...] = FEATURE_SETS, **kwargs: object) -> list[SimNNScore]:
    """:func:`evaluate_simnn` once per feature set (same keyword arguments otherwise)."""
    return [evaluate_simnn(feature_set=fs, **kwargs) for fs in feature_sets]  # type: ignore[arg-type]


__all__ = ["FEATURE_SETS", "label_distribution", "trace_features", "SimNN", "SimNNScore", "evaluate_simnn", "compare_feature_sets"]
