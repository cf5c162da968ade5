"""The abstract model as a Markov chain, and DeepStellar's basic state and transition coverage."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


def _check_traces(traces: np.ndarray, n_states: int) -> np.ndarray:
    traces = np.asarray(traces)
    if traces.ndim != 2 or traces.shape[1] < 2:
        raise DataError(f"state traces must be (N, T+1) with T >= 1, got shape {traces.shape}")
    if traces.size and (traces.min() < 0 or traces.max() >= n_states):
        raise DataError(f"traces hold states outside 0..{n_states - 1}; pass the abstraction's n_states")
    return traces


def transition_counts(traces: np.ndarray, *, n_states: int) -> np.ndarray:
    """Counts (n_states, n_states) of consecutive state pairs ``(s_t, s_t+1)`` over all traces."""
    traces = _check_traces(traces, n_states)
    counts = np.zeros((n_states, n_states), dtype=np.int64)
    np.add.at(counts, (traces[:, :-1].ravel(), traces[:, 1:].ravel()), 1)
    return counts


def state_visits(traces: np.ndarray, *, n_states: int, include_initial: bool = False) -> np.ndarray:
    """Visits per state (n_states,); the virtual state 0 column counts 0 unless ``include_initial``."""
    traces = _check_traces(traces, n_states)
    visits = np.bincount((traces if include_initial else traces[:, 1:]).ravel(), minlength=n_states).astype(np.int64)
    return visits


@dataclass(frozen=True)
class MarkovChain:
    """Transition counts and probabilities ``P(s' | s) = n(s, s') / sum_s'' n(s, s'')``.

    Rows of states with no outgoing transition (never visited, or only as the last
    step) are all zero; ``has_outgoing`` marks the others.
    """

    counts: np.ndarray
    probabilities: np.ndarray

    @property
    def n_states(self) -> int:
        return len(self.counts)

    @property
    def has_outgoing(self) -> np.ndarray:
        return self.counts.sum(axis=1) > 0

    def edges(self) -> list[tuple[int, int, int, float]]:
        """Every observed transition as ``(source, target, count, probability)``, by source then target."""
        src, dst = np.nonzero(self.counts)
        return [(int(s), int(d), int(self.counts[s, d]), float(self.probabilities[s, d])) for s, d in zip(src, dst)]


def markov_chain(traces: np.ndarray, *, n_states: int) -> MarkovChain:
    """The empirical Markov chain of ``traces`` (N, T+1)."""
    counts = transition_counts(traces, n_states=n_states)
    totals = counts.sum(axis=1, keepdims=True)
    probs = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)
    return MarkovChain(counts=counts, probabilities=probs)


@dataclass(frozen=True)
class Coverage:
    """Basic state / transition coverage of a test set against the abstract model built from training."""

    states_total: int  #: abstract states visited by the training traces (state 0 excluded)
    states_covered: int  #: of those, how many the test traces visit
    transitions_total: int  #: distinct transitions in the training traces (including those out of state 0)
    transitions_covered: int
    new_states: int  #: states the test traces visit that training never did
    new_transitions: int

    @property
    def state_coverage(self) -> float:
        return self.states_covered / self.states_total if self.states_total else 0.0

    @property
    def transition_coverage(self) -> float:
        return self.transitions_covered / self.transitions_total if self.transitions_total else 0.0


def coverage(reference_traces: np.ndarray, test_traces: np.ndarray, *, n_states: int) -> Coverage:
    """DeepStellar's basic state and transition coverage of ``test_traces`` w.r.t. ``reference_traces``."""
    ref_states = state_visits(reference_traces, n_states=n_states) > 0
    test_states = state_visits(test_traces, n_states=n_states) > 0
    ref_tr = transition_counts(reference_traces, n_states=n_states) > 0
    test_tr = transition_counts(test_traces, n_states=n_states) > 0
    return Coverage(
        states_total=int(ref_states.sum()),
        states_covered=int((ref_states & test_states).sum()),
        transitions_total=int(ref_tr.sum()),
        transitions_covered=int((ref_tr & test_tr).sum()),
        new_states=int((test_states & ~ref_states).sum()),
        new_transitions=int((test_tr & ~ref_tr).sum()),
    )


__all__ = ["MarkovChain", "Coverage", "transition_counts", "state_visits", "markov_chain", "coverage"]
