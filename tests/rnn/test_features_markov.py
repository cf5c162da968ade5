"""Trace features, the SimNN surrogate, the Markov chain and coverage."""
from __future__ import annotations

import numpy as np
import pytest

from faultlab.errors import FaultlabError
from faultlab.rnn import (
    FEATURE_SETS,
    compare_feature_sets,
    coverage,
    evaluate_simnn,
    label_distribution,
    markov_chain,
    trace_features,
    transition_counts,
)


def test_label_distribution_rows_are_distributions():
    counts = np.array([[0, 0, 0], [2, 1, 1], [0, 5, 0]])
    p = label_distribution(counts)
    np.testing.assert_allclose(p.sum(1), 1)
    np.testing.assert_allclose(p[0], 1 / 3)
    np.testing.assert_allclose(p[1], [0.5, 0.25, 0.25])


@pytest.mark.parametrize("fs,width", [("ID", 1), ("RL", 1), ("ID_RL", 2), ("CS", 4), ("all", 6)])
def test_trace_features_layout(fs, width, rng):
    traces = np.concatenate([np.zeros((5, 1), int), rng.integers(1, 7, size=(5, 3))], axis=1)
    pred = rng.integers(0, 4, size=(5, 3))
    dist = label_distribution(rng.integers(0, 3, size=(7, 4)))
    f = trace_features(traces, pred, dist, feature_set=fs)
    assert f.shape == (5, 3, width)
    assert f.min() >= 0 and f.max() <= 1
    # independent: each set's columns, in order, from a per-step loop (state id / (S-1), label / (C-1), P(c|state))
    parts = {"ID": ["id"], "RL": ["rl"], "ID_RL": ["id", "rl"], "CS": ["cs"], "all": ["id", "rl", "cs"]}[fs]
    want = np.zeros((5, 3, width))
    for i in range(5):
        for t in range(3):
            row = []
            for part in parts:
                if part == "id":
                    row.append(traces[i, t + 1] / 6)  # 7 states: ids 0..6
                elif part == "rl":
                    row.append(pred[i, t] / 3)  # 4 classes: labels 0..3
                else:
                    row.extend(dist[traces[i, t + 1]])
            want[i, t] = row
    np.testing.assert_allclose(f, want, rtol=1e-6)
    padded = trace_features(traces, pred, dist, feature_set=fs, max_len=5)
    assert padded.shape == (5, 5, width) and (padded[:, 3:] == 0).all()


def test_unknown_feature_set_is_rejected():
    with pytest.raises(FaultlabError, match="feature-set"):
        trace_features(np.zeros((1, 2), int), np.zeros((1, 1), int), np.ones((2, 2)) / 2, feature_set="XY")


def _simnn_kwargs(subject, abstraction):
    return dict(
        train_traces=abstraction.traces(subject.train_profile.hidden), train_step_pred=subject.train_profile.step_pred,
        train_labels=subject.train.y, test_traces=abstraction.traces(subject.test_profile.hidden),
        test_step_pred=subject.test_profile.step_pred, test_labels=subject.test.y,
        n_states=abstraction.n_states, n_classes=10)


def test_simnn_far_above_chance(gru_subject, gru_abstraction):
    score = evaluate_simnn(**_simnn_kwargs(gru_subject, gru_abstraction), feature_set="all")
    assert score.accuracy > 0.5 and score.fidelity > 0.5  # chance is 0.1
    assert score.n_train == int(np.sum(gru_subject.train_profile.pred == gru_subject.train.y))
    assert score.rnn_accuracy == pytest.approx(np.mean(gru_subject.test_profile.pred == gru_subject.test.y))


@pytest.mark.slow
def test_compare_feature_sets_covers_every_set(gru_subject, gru_abstraction):
    scores = compare_feature_sets(**_simnn_kwargs(gru_subject, gru_abstraction))
    assert [s.feature_set for s in scores] == list(FEATURE_SETS)
    assert all(0 <= s.accuracy <= 1 and 0 <= s.fidelity <= 1 for s in scores)


def test_transition_counts_and_chain_against_brute_force(rng):
    traces = np.concatenate([np.zeros((30, 1), int), rng.integers(1, 6, size=(30, 7))], axis=1)
    counts = transition_counts(traces, n_states=8)
    brute = np.zeros((8, 8), int)
    for row in traces:
        for a, b in zip(row[:-1], row[1:]):
            brute[a, b] += 1
    np.testing.assert_array_equal(counts, brute)
    chain = markov_chain(traces, n_states=8)
    for a in range(8):  # P(b | a) = n(a, b) / n(a, .), a zero row where a has no outgoing transition
        out_of_a = brute[a].sum()
        for b in range(8):
            assert chain.probabilities[a, b] == pytest.approx(brute[a, b] / out_of_a if out_of_a else 0.0, abs=1e-12)
    assert [(s, d, c) for s, d, c, _ in chain.edges()] == [(a, b, int(brute[a, b])) for a in range(8) for b in range(8) if brute[a, b]]
    sums = chain.probabilities.sum(1)
    np.testing.assert_allclose(sums[chain.has_outgoing], 1)
    assert (sums[~chain.has_outgoing] == 0).all() and not chain.has_outgoing[6:].any()
    assert sum(e[2] for e in chain.edges()) == 30 * 7


def test_coverage_against_sets(rng):
    ref = np.concatenate([np.zeros((20, 1), int), rng.integers(1, 8, size=(20, 4))], axis=1)
    test = np.concatenate([np.zeros((6, 1), int), rng.integers(3, 10, size=(6, 4))], axis=1)
    cov = coverage(ref, test, n_states=10)
    ref_states, test_states = set(ref[:, 1:].ravel()), set(test[:, 1:].ravel())
    ref_tr = {(a, b) for r in ref for a, b in zip(r[:-1], r[1:])}
    test_tr = {(a, b) for r in test for a, b in zip(r[:-1], r[1:])}
    assert cov.state_coverage == pytest.approx(len(ref_states & test_states) / len(ref_states))
    assert cov.transition_coverage == pytest.approx(len(ref_tr & test_tr) / len(ref_tr))
    assert cov.new_states == len(test_states - ref_states)
    assert cov.new_transitions == len(test_tr - ref_tr)
