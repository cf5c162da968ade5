"""Abstraction (PCA + diagonal GMM, virtual state 0) and state stability."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faultlab.errors import FaultlabError
from faultlab.rnn import Abstraction, components_range, purity, state_label_counts, state_stability, sweep_components


def test_transform_matches_sklearn_pipeline(gru_subject, gru_abstraction):
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    h = gru_subject.train_profile.hidden
    steps = h.reshape(-1, h.shape[2]).astype(np.float64)
    z = PCA(n_components=8, random_state=0).fit_transform(steps)
    gmm = GaussianMixture(n_components=20, covariance_type="diag", random_state=0, max_iter=200, reg_covar=1e-6).fit(z)
    expected = gmm.predict(z).reshape(h.shape[:2]) + 1
    got = gru_abstraction.transform(h)
    assert np.mean(got == expected) > 0.999  # identical up to float ties


def test_traces_start_in_virtual_state(gru_subject, gru_abstraction):
    tr = gru_abstraction.traces(gru_subject.test_profile.hidden)
    assert tr.shape == (len(gru_subject.test), 9)
    assert (tr[:, 0] == 0).all()
    assert tr[:, 1:].min() >= 1 and tr[:, 1:].max() <= 20
    assert gru_abstraction.n_states == 21


def test_save_load_round_trip(tmp_path, gru_subject, gru_abstraction):
    path = gru_abstraction.save(tmp_path / "a.npz")
    loaded = Abstraction.load(path)
    h = gru_subject.test_profile.hidden
    np.testing.assert_array_equal(loaded.traces(h), gru_abstraction.traces(h))
    assert (loaded.pca_dims, loaded.components) == (8, 20)


def test_bad_parameters_raise(gru_subject):
    with pytest.raises(FaultlabError, match="--pca"):
        Abstraction(pca_dims=99, components=3).fit(gru_subject.train_profile.hidden)
    with pytest.raises(FaultlabError, match="not fitted"):
        Abstraction(pca_dims=2, components=3).transform(gru_subject.train_profile.hidden)


@settings(deadline=None)
@given(start=st.integers(1, 30), span=st.integers(0, 40), step=st.integers(1, 7))
def test_components_range_includes_every_value_and_the_end_when_hit(start, span, step):
    end = start + span
    got = components_range(start, end, step)
    assert got == [m for m in range(start, end + 1) if (m - start) % step == 0]
    assert (end in got) == (span % step == 0)


@pytest.mark.parametrize("args", [(0, 5, 1), (5, 4, 1), (2, 6, 0)])
def test_components_range_rejects_bad_input(args):
    with pytest.raises(FaultlabError):
        components_range(*args)


def _brute_counts(traces, step_pred, n_states, n_classes):
    counts = np.zeros((n_states, n_classes), dtype=int)
    for i in range(traces.shape[0]):
        for t in range(step_pred.shape[1]):
            counts[traces[i, t + 1], step_pred[i, t]] += 1
    return counts


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), n_states=st.integers(2, 12), n_classes=st.integers(2, 5))
def test_stability_against_brute_force(seed, n_states, n_classes):
    rng = np.random.default_rng(seed)
    n, t = rng.integers(1, 15), rng.integers(1, 6)
    # only some states used, so several are empty; state 0 only in column 0
    used = rng.choice(np.arange(1, n_states), size=rng.integers(1, n_states), replace=True)
    traces = np.concatenate([np.zeros((n, 1), int), rng.choice(used, size=(n, t))], axis=1)
    step_pred = rng.integers(0, n_classes, size=(n, t))
    counts = state_label_counts(traces, step_pred, n_states=n_states, n_classes=n_classes)
    np.testing.assert_array_equal(counts, _brute_counts(traces, step_pred, n_states, n_classes))
    s = state_stability(traces, step_pred, n_states=n_states, n_classes=n_classes)
    assert np.isfinite([s.mean, s.weighted, s.min, s.max]).all()
    assert ((0 <= s.purity) & (s.purity <= 1)).all()
    visited = sorted(set(traces[:, 1:].ravel()))
    brute = [max(np.sum((traces[:, 1:] == v) & (step_pred == c)) for c in range(n_classes)) / np.sum(traces[:, 1:] == v) for v in visited]
    assert s.mean == pytest.approx(np.mean(brute))
    assert s.min == pytest.approx(min(brute)) and s.max == pytest.approx(max(brute))
    assert s.weighted == pytest.approx(counts.max(1).sum() / (n * t))
    assert s.visits[0] == 0 and s.purity[0] == 0.0  # the virtual state carries no label and is not forced to 1


def test_empty_states_do_not_make_nan():
    traces = np.array([[0, 1, 1], [0, 1, 3]])
    pred = np.array([[0, 1], [0, 0]])
    s = state_stability(traces, pred, n_states=5, n_classes=2)
    np.testing.assert_allclose(s.purity, [0, 2 / 3, 0, 1, 0])
    assert s.mean == pytest.approx((2 / 3 + 1) / 2)
    assert s.n_nonempty == 2
    np.testing.assert_allclose(purity(np.zeros((3, 2))), 0)


def test_purity_in_unit_interval_and_weighted_stability_grows_with_m(gru_subject):
    prof = gru_subject.train_profile
    rows = sweep_components(prof.hidden, prof.step_pred, pca_dims=8, ms=[2, 8, 32], seed=0)
    assert [r.m for r in rows] == [2, 8, 32]
    weighted = [r.stability_weighted for r in rows]
    assert weighted[0] < weighted[1] < weighted[2]
    for r in rows:
        assert 0 <= r.stability_min <= r.stability_mean <= r.stability_max <= 1
        assert 0 <= r.stability_weighted <= 1


def test_stability_rejects_misaligned_input():
    with pytest.raises(FaultlabError, match="line up"):
        state_stability(np.zeros((2, 3), int), np.zeros((2, 3), int), n_states=2)
