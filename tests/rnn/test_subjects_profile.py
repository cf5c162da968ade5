"""Training, saving/loading and per-step profiling of recurrent subjects."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from faultlab.errors import FaultlabError
from faultlab.rnn import Profile, load_model, profile_model


def test_subject_learns_and_last_step_matches_forward(gru_subject):
    prof = gru_subject.test_profile
    assert prof.hidden.shape == (len(gru_subject.test), 8, 16)
    with torch.no_grad():
        logits = gru_subject.model(torch.as_tensor(gru_subject.test.x)).numpy()
    np.testing.assert_array_equal(prof.pred, logits.argmax(1))
    assert np.mean(prof.pred == gru_subject.test.y) > 0.6  # 10 classes: chance is 0.1


def test_step_prediction_equals_model_on_truncated_sequences(gru_subject):
    x = gru_subject.test.x[:20]
    prof = profile_model(gru_subject.model, x)
    for t in range(x.shape[1]):
        with torch.no_grad():
            logits = gru_subject.model(torch.as_tensor(x[:, : t + 1]))
        np.testing.assert_allclose(prof.step_proba[:, t], torch.softmax(logits, 1).numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(prof.step_pred[:, t], logits.argmax(1).numpy())


def test_save_load_round_trip(gru_subject):
    want = gru_subject.model.state_dict()
    assert len(want) > 0
    for path in (gru_subject.path, gru_subject.path.with_suffix("")):  # without the suffix too
        got = load_model(path).state_dict()
        assert list(got) == list(want), path
        for name, value in want.items():
            assert torch.equal(got[name], value), (path, name)


def test_load_rejects_missing_sidecar_and_bad_format(tmp_path, gru_subject):
    pt = tmp_path / "m.pt"
    pt.write_bytes(gru_subject.path.read_bytes())
    with pytest.raises(FaultlabError, match="m.json"):
        load_model(pt)
    (tmp_path / "m.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(FaultlabError, match="format"):
        load_model(pt)
    with pytest.raises(FaultlabError, match="no such file"):
        load_model(tmp_path / "absent")


def test_generic_torch_module_and_profile_hook(gru_subject):
    class Plain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(8, 6, batch_first=True)
            self.fc = torch.nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(self.lstm(x)[0][:, -1])

    torch.manual_seed(0)
    net = Plain().eval()
    x = gru_subject.test.x[:10]
    prof = profile_model(net, x)
    with torch.no_grad():
        np.testing.assert_array_equal(prof.pred, net(torch.as_tensor(x)).argmax(1).numpy())
        hidden = net.lstm(torch.as_tensor(x))[0].numpy()
    np.testing.assert_allclose(prof.hidden, hidden, atol=1e-6)

    def hook(model, xs):
        h = np.cumsum(xs, axis=1)
        proba = np.full((len(xs), xs.shape[1], 2), 0.5)
        proba[..., 0] += 0.1
        proba[..., 1] -= 0.1
        return h, proba

    p2 = profile_model(net, x, profile_fn=hook)
    assert isinstance(p2, Profile)
    np.testing.assert_allclose(p2.hidden, np.cumsum(x, axis=1))
    assert (p2.step_pred == 0).all()


def test_profile_rejects_images():
    with pytest.raises(FaultlabError, match=r"\(N, T, F\)"):
        profile_model(object(), np.zeros((2, 1, 8, 8), np.float32))


@pytest.mark.slow
def test_keras_profile_matches_truncated_predictions():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(None, 8)), keras.layers.LSTM(6, name="rnn"),
                              keras.layers.Dense(4, activation="softmax", name="head")])
    x = np.random.default_rng(0).random((12, 5, 8)).astype(np.float32)
    prof = profile_model(model, x)
    assert prof.hidden.shape == (12, 5, 6)
    for t in range(5):
        np.testing.assert_allclose(prof.step_proba[:, t], model.predict(x[:, : t + 1], verbose=0), rtol=1e-4, atol=1e-5)
