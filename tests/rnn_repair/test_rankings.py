"""Influence on real GRUs: SGD-influence against leave-one-out retraining, rankings against random."""
from __future__ import annotations

import numpy as np
import pytest

from faultlab.errors import FaultlabError
from faultlab.rnn.flip import flip_labels, new_gru, run_flip
from faultlab.rnn.inf_training import TrainConfig, per_sample_loss, train_sgd
from faultlab.rnn.influence import InfluenceProblem, KohLiang, ModelBased, RandomRanking, TrainingLoss, recall_at, top_fraction
from faultlab.rnn.sgd import SGDInfluence, sgd_removal_effect


def test_flip_labels_flips_exactly_the_requested_share_of_the_source_class():
    y = np.array([0, 1, 2] * 20)
    out, idx = flip_labels(y, source=1, target=2, rate=0.25, seed=3)
    assert len(idx) == 5 and set(y[idx]) == {1} and set(out[idx]) == {2}
    assert np.array_equal(np.delete(out, idx), np.delete(y, idx))
    with pytest.raises(FaultlabError):
        flip_labels(y, source=1, target=2, rate=1.5, seed=0)


def test_recall_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    scores, relevant = rng.random(57), rng.choice(57, 9, replace=False)
    for p, r in recall_at(scores, relevant, [5, 20, 50, 100]).items():
        k = int(np.ceil(57 * p / 100))
        top = sorted(range(57), key=lambda i: -scores[i])[:k]
        assert r == pytest.approx(sum(i in top for i in relevant) / 9)


def _tiny():
    from faultlab.datasets import load_dataset

    d = load_dataset("digits-seq", split="train")
    keep = np.flatnonzero(np.isin(d.y, (1, 7)))[:80]
    x, y = d.x[keep], (d.y[keep] == 7).astype(np.int64)
    y_noisy, _ = flip_labels(y, source=0, target=1, rate=0.3, seed=0)
    return x, y, y_noisy


@pytest.mark.slow
def test_sgd_influence_predicts_leave_one_out_retraining():
    """Replaying the stored run predicts the change of leaving one sample out; a doubled 1/|S| would be 8x off."""
    x, y, y_noisy = _tiny()
    config = TrainConfig(epochs=4, batch_size=8, learning_rate=0.3, weight_decay=1e-3, seed=0)
    model = new_gru(input_size=8, hidden_size=6, n_classes=2, seed=0)
    record = train_sgd(model, x, y_noisy, config=config, record=True)
    xt, yt = x[y != y_noisy][:3], y[y != y_noisy][:3]  # targets: the true labels of some flipped samples
    pred = sgd_removal_effect(model, record, x, y_noisy, xt, yt)
    base = per_sample_loss(model, xt, yt).sum()
    idx = np.r_[np.argsort(pred)[:3], np.argsort(pred)[-3:]]
    actual = []
    for j in idx:
        w = np.ones(len(x))
        w[j] = 0
        m = new_gru(input_size=8, hidden_size=6, n_classes=2, seed=0)
        train_sgd(m, x, y_noisy, config=config, sample_weight=w)
        actual.append(per_sample_loss(m, xt, yt).sum() - base)
    actual = np.array(actual)
    assert np.corrcoef(pred[idx], actual)[0, 1] > 0.9
    assert 0.6 < np.polyfit(pred[idx], actual, 1)[0] < 1.6
    # removing the top 10 % by SGDInfluence's harm score lowers the targets' loss; the most helpful raise it
    prob = InfluenceProblem(model=model, x_train=x, y_train=y_noisy, x_target=xt, y_target=yt, weight_decay=1e-3, record=record)
    harm = SGDInfluence().scores(prob)
    np.testing.assert_allclose(harm, -pred)
    for picked, sign in ((top_fraction(harm, 10), -1), (top_fraction(-harm, 10), 1)):
        w = np.ones(len(x))
        w[picked] = 0
        m = new_gru(input_size=8, hidden_size=6, n_classes=2, seed=0)
        train_sgd(m, x, y_noisy, config=config, sample_weight=w)
        assert sign * (per_sample_loss(m, xt, yt).sum() - base) > 0


@pytest.fixture(scope="module")
def experiment():
    return run_flip(classes=(1, 7), rate=0.4, seed=1, config=TrainConfig(epochs=30, seed=1))


@pytest.fixture(scope="module")
def problem(experiment):
    e = experiment
    assert len(e.targets) > 0
    return InfluenceProblem(model=e.flipped_model, x_train=e.x_train, y_train=e.y_flipped, x_target=e.x_test[e.targets],
                            y_target=e.y_test[e.targets], weight_decay=e.config.weight_decay, record=e.record)


def _target_loss(model, e):
    return per_sample_loss(model, e.x_test[e.targets], e.y_test[e.targets]).sum()


@pytest.mark.slow
def test_model_based_and_kl_beat_random_on_flipped_recall(experiment, problem):
    expected_random = 0.2  # a random ranking finds p % of the flipped samples in the top p %
    rand = recall_at(RandomRanking(seed=1).scores(problem), experiment.flipped, [20])[20]
    for method in (KohLiang(scope="head"), ModelBased(seed=1)):
        r = recall_at(method.scores(problem), experiment.flipped, [20])[20]
        assert r > expected_random + 0.15, method.name
        assert r > rand, method.name


@pytest.mark.slow
def test_retraining_without_top_harmful_samples_reduces_target_loss(experiment, problem):
    """Remove the top 10 % by K&L harm score and retrain the GRU (same init, same batches): the targets' loss drops."""
    scores = KohLiang(scope="head").scores(problem)
    base = _target_loss(experiment.flipped_model, experiment)
    w = np.ones(len(experiment.x_train))
    w[top_fraction(scores, 10)] = 0
    assert _target_loss(experiment.retrain(experiment.y_flipped, sample_weight=w), experiment) < base
    w = np.ones(len(experiment.x_train))
    w[top_fraction(-scores, 10)] = 0  # the most helpful ones
    assert _target_loss(experiment.retrain(experiment.y_flipped, sample_weight=w), experiment) > base


def test_training_loss_baseline_is_the_per_sample_loss(problem):
    import torch

    s = TrainingLoss().scores(problem)
    assert s.shape == (len(problem.x_train),) and np.all(s >= 0)
    np.testing.assert_allclose(s, per_sample_loss(problem.model, problem.x_train, problem.y_train))
    # independent: cross-entropy -log softmax(z)[y] from the model's logits, in float64 numpy
    with torch.no_grad():
        z = problem.model(torch.as_tensor(np.asarray(problem.x_train, np.float32))).double().numpy()
    zmax = z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z - zmax).sum(axis=1)) + zmax[:, 0]
    y = np.asarray(problem.y_train, np.int64)
    np.testing.assert_allclose(s, log_norm - z[np.arange(len(y)), y], rtol=1e-5, atol=1e-6)
    assert len(set(y.tolist())) > 1 and s.std() > 0  # flipped labels among them: the losses differ


def test_kl_through_model_hvps_with_cg_equals_exact_head_hessian():
    """The all-parameter code path (autograd HVPs + CG), restricted to the head, equals the exact head Hessian."""
    from faultlab.rnn.influence import kl_full_influence

    x, y, y_noisy = _tiny()
    model = new_gru(input_size=8, hidden_size=6, n_classes=2, seed=0)
    train_sgd(model, x, y_noisy, config=TrainConfig(epochs=3, batch_size=8, seed=0))
    prob = InfluenceProblem(model=model, x_train=x, y_train=y_noisy, x_target=x[:5], y_target=y[:5], weight_decay=1e-3)
    exact = KohLiang(scope="head", solver="exact", damping=0.01).removal_effect(prob)
    via_hvp = kl_full_influence(model, x, y_noisy, x[:5], y[:5], weight_decay=1e-3, damping=0.01, solver="cg",
                                params=list(model.head.parameters()))
    np.testing.assert_allclose(via_hvp, exact, rtol=1e-3, atol=1e-6 * np.abs(exact).max())
