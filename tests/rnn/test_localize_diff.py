"""Nearest-trace fault localisation and the clean-vs-faulty diff."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from faultlab.errors import FaultlabError
from faultlab.rnn import (
    WeightBitFlip,
    diff_traces,
    flipped_bit,
    localisation_curves,
    nearest_traces,
    normalise_traces,
    parse_fault,
    profile_model,
)


def test_nearest_traces_against_brute_force(rng):
    refs = rng.integers(0, 5, size=(40, 6)) / 4
    targets = rng.integers(0, 5, size=(9, 6)) / 4
    idx, dist = nearest_traces(targets, refs, k=7, batch_size=4)
    for i, t in enumerate(targets):
        d = np.abs(refs - t).mean(1)
        order = sorted(range(len(refs)), key=lambda j: (d[j], j))[:7]  # ties: lower index first
        np.testing.assert_array_equal(idx[i], order)
        np.testing.assert_allclose(dist[i], d[order], rtol=1e-6)


def test_localisation_curves_against_brute_force(rng):
    idx = rng.integers(0, 30, size=(12, 5))
    dist = np.sort(rng.random((12, 5)), axis=1)
    ref_labels = rng.integers(0, 3, size=30)
    truth, pred = rng.integers(0, 3, size=12), rng.integers(0, 3, size=12)
    df = localisation_curves(idx, dist, reference_labels=ref_labels, target_truth=truth, target_pred=pred)
    assert list(df["k"]) == [1, 2, 3, 4, 5]
    for k in range(1, 6):
        row = df.iloc[k - 1]
        for name, lab in (("truth", truth), ("pred", pred)):
            matches = [[j for j in range(k) if ref_labels[idx[i, j]] == lab[i]] for i in range(12)]
            assert row[f"{name}_fraction"] == pytest.approx(np.mean([len(m) > 0 for m in matches]))
            assert row[f"{name}_count_mean"] == pytest.approx(np.mean([len(m) for m in matches]))
            ds = [dist[i, j] for i in range(12) for j in matches[i]]
            if ds:
                assert row[f"{name}_distance_mean"] == pytest.approx(np.mean(ds))
            else:
                assert np.isnan(row[f"{name}_distance_mean"])


def test_benign_inputs_have_more_top1_truth_neighbours_than_failed(gru_subject, gru_abstraction):
    a, s = gru_abstraction, gru_subject
    refs = normalise_traces(a.traces(s.train_profile.hidden), n_states=a.n_states)
    targets = normalise_traces(a.traces(s.test_profile.hidden), n_states=a.n_states)
    pred, truth = s.test_profile.pred, s.test.y
    top1 = {}
    for name, mask in (("benign", pred == truth), ("failed", pred != truth)):
        assert mask.sum() >= 5
        idx, dist = nearest_traces(targets[mask], refs, k=1)
        curves = localisation_curves(idx, dist, reference_labels=s.train.y, target_truth=truth[mask], target_pred=pred[mask])
        top1[name] = curves["truth_fraction"].iloc[0]
    assert top1["benign"] > top1["failed"]


@pytest.mark.parametrize("spec,expected", [
    ("rnn.weight_hh_l0,(2,1),31", WeightBitFlip(layer="rnn.weight_hh_l0", index=(2, 1), bits=(31,))),
    ("head, [3, 0], 7", WeightBitFlip(layer="head", index=(3, 0), bits=(7,))),
    ("head.bias,(4,),2", WeightBitFlip(layer="head.bias", index=(4,), bits=(2,))),
])
def test_parse_fault(spec, expected):
    assert parse_fault(spec) == expected


@pytest.mark.parametrize("spec", ["head", "head,(1,x),3", "head,(1,-2),3"])
def test_parse_fault_rejects_bad_specs(spec):
    with pytest.raises(FaultlabError, match="--fault"):
        parse_fault(spec)


def test_flipped_bit_flips_exactly_one_bit_and_restores(gru_subject):
    model = gru_subject.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    w = model.rnn.weight_hh_l0
    expected = (np.array([w[2, 1].item()], np.float32).view(np.int32) ^ np.int32(-(2 ** 31))).view(np.float32)[0]
    with flipped_bit(model, parse_fault("rnn.weight_hh_l0,(2,1),31")) as (old, new):
        assert w[2, 1].item() == expected == new == -old
        changed = sum(int((v != before[k]).sum()) for k, v in model.state_dict().items())
        assert changed == 1
    with pytest.raises(RuntimeError):
        with flipped_bit(model, parse_fault("head,(0,0),30")):  # module name means its weight
            assert model.head.weight[0, 0].item() != before["head.weight"][0, 0].item()
            raise RuntimeError("boom")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("spec,match", [("nope,(0,0),3", "no parameter"), ("head,(99,0),3", "outside"), ("head,(0,0),40", "bits")])
def test_flipped_bit_rejects_bad_targets(gru_subject, spec, match):
    with pytest.raises(FaultlabError, match=match):
        with flipped_bit(gru_subject.model, parse_fault(spec)):
            pass


def test_diff_of_identical_traces_is_empty(rng):
    tr = np.concatenate([np.zeros((10, 1), int), rng.integers(1, 6, size=(10, 4))], axis=1)
    d = diff_traces(tr, tr.copy(), n_states=6)
    assert d.state_distance == 0 and d.transition_distance == 0 and d.top_states() == []


def test_diff_names_the_states_that_changed(rng):
    clean = np.concatenate([np.zeros((10, 1), int), rng.integers(1, 6, size=(10, 4))], axis=1)
    faulty = clean.copy()
    faulty[:, 2:][faulty[:, 2:] == 3] = 5  # traffic moves from state 3 to state 5
    d = diff_traces(clean, faulty, n_states=6)
    assert set(d.top_states(2)) == {3, 5}
    vc = np.bincount(clean[:, 1:].ravel(), minlength=6)[1:]
    vf = np.bincount(faulty[:, 1:].ravel(), minlength=6)[1:]
    assert d.state_distance == pytest.approx(0.5 * np.abs(vc / vc.sum() - vf / vf.sum()).sum())


def test_a_large_fault_changes_the_traffic(gru_subject, gru_abstraction):
    s, a = gru_subject, gru_abstraction
    clean = a.traces(s.test_profile.hidden)
    with flipped_bit(s.model, parse_fault("rnn.weight_ih_l0,(0,3),30")):
        faulty = a.traces(profile_model(s.model, s.test.x).hidden)
    d = diff_traces(clean, faulty, n_states=a.n_states)
    assert d.state_distance > 0 and len(d.top_states()) > 0


def test_nearest_traces_ties_from_normalised_states_go_to_the_lower_index(rng):
    """States / (n_states - 1) are not exact binary fractions: equal distances must still tie (audit 11).

    The reference is exact integer arithmetic: the L1 distance of the integer state traces.
    """
    n_states = 31
    refs = rng.integers(0, n_states, size=(300, 9))
    targets = rng.integers(0, n_states, size=(20, 9))
    idx, dist = nearest_traces(normalise_traces(targets, n_states=n_states), normalise_traces(refs, n_states=n_states), k=10)
    for i, t in enumerate(targets):
        l1 = np.abs(refs - t).sum(1)  # exact integers
        order = sorted(range(len(refs)), key=lambda j: (l1[j], j))[:10]
        np.testing.assert_array_equal(idx[i], order)
        np.testing.assert_allclose(dist[i], l1[order] / (9 * (n_states - 1)), rtol=1e-6)
