"""State stability: how consistently the model predicts one label while in an abstract state.

The purity of state s is ``max_c n(s, c) / sum_c n(s, c)`` over all (input, step) pairs in
state s with per-step predicted label c. Empty states (including the virtual initial
state 0, which carries no prediction) are left out of every summary, so nothing is NaN.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


def state_label_counts(traces: np.ndarray, step_pred: np.ndarray, *, n_states: int, n_classes: int) -> np.ndarray:
    """Counts ``n(s, c)`` (n_states, n_classes) of per-step predicted label c in state s.

    ``traces`` are (N, T+1) state traces whose column 0 is the virtual state 0, aligned
    with ``step_pred`` (N, T): the state after step t is ``traces[:, t+1]``.
    """
    traces = np.asarray(traces)
    step_pred = np.asarray(step_pred)
    if traces.ndim != 2 or step_pred.shape != (traces.shape[0], traces.shape[1] - 1):
        raise DataError(f"traces (N, T+1) and step_pred (N, T) do not line up: got {traces.shape} and {step_pred.shape}")
    states = traces[:, 1:].ravel()
    labels = step_pred.ravel()
    if states.size and (states.min() < 0 or states.max() >= n_states):
        raise DataError(f"traces hold states outside 0..{n_states - 1}; pass the abstraction's n_states")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"step_pred holds labels outside 0..{n_classes - 1}; pass the right n_classes")
    counts = np.zeros((n_states, n_classes), dtype=np.int64)
    np.add.at(counts, (states, labels), 1)
    return counts


def purity(counts: np.ndarray) -> np.ndarray:
    """Purity per state (n_states,) from label counts; 0.0 for empty states (see ``counts.sum(1) > 0``)."""
    counts = np.asarray(counts)
    totals = counts.sum(axis=1)
    out = np.zeros(len(counts), dtype=np.float64)
    nonempty = totals > 0
    out[nonempty] = counts[nonempty].max(axis=1) / totals[nonempty]
    return out


@dataclass(frozen=True)
class Stability:
    """Per-state purity and its summaries over the non-empty states."""

    purity: np.ndarray  #: (n_states,) purity; 0.0 where ``visits`` is 0
    visits: np.ndarray  #: (n_states,) number of (input, step) pairs in each state
    mean: float  #: unweighted mean purity over non-empty states
    weighted: float  #: sum_s max_c n(s, c) / sum n: the fraction of steps agreeing with their state's majority label
    min: float
    max: float

    @property
    def nonempty(self) -> np.ndarray:
        """Boolean mask of the states that were visited at least once."""
        return self.visits > 0

    @property
    def n_nonempty(self) -> int:
        return int(self.nonempty.sum())


def state_stability(traces: np.ndarray, step_pred: np.ndarray, *, n_states: int, n_classes: int | None = None) -> Stability:
    """Stability of the abstract states visited by ``traces`` with per-step predictions ``step_pred``."""
    step_pred = np.asarray(step_pred)
    if n_classes is None:
        n_classes = int(step_pred.max()) + 1 if step_pred.size else 1
    counts = state_label_counts(traces, step_pred, n_states=n_states, n_classes=n_classes)
    return stability_from_counts(counts)


def stability_from_counts(counts: np.ndarray) -> Stability:
    """:class:`Stability` from a label-count table ``n(s, c)``."""
    counts = np.asarray(counts)
    visits = counts.sum(axis=1)
    total = int(visits.sum())
    if total == 0:
        raise DataError("stability needs at least one (input, step) pair; the traces are empty")
    p = purity(counts)
    ne = visits > 0
    return Stability(
        purity=p,
        visits=visits,
        mean=float(p[ne].mean()),
        weighted=float(counts.max(axis=1).sum() / total),
        min=float(p[ne].min()),
        max=float(p[ne].max()),
    )


__all__ = ["Stability", "state_label_counts", "purity", "state_stability", "stability_from_counts"]
