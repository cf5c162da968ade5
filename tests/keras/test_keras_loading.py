"""Loading .keras and legacy .h5 files: safe mode for Lambda layers, Keras 2 RNN keys dropped with a warning."""
from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest

from faultlab.errors import ModelLoadError
from faultlab.faults import Fault
from kmodels import predict


def _digest(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_plain_keras3_rejects_the_fixture(keras2_lstm_h5):
    import keras

    path, _ = keras2_lstm_h5
    with pytest.raises(Exception, match="time_major"):
        keras.saving.load_model(str(path), compile=False)


def test_keras2_lstm_h5_loads_warns_and_leaves_the_file_alone(keras2_lstm_h5, caplog):
    from faultlab.targets.keras import load_keras_model

    path, original = keras2_lstm_h5
    before = _digest(path)
    with caplog.at_level(logging.WARNING, logger="faultlab"):
        model = load_keras_model(path)
    assert _digest(path) == before
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "time_major" in warned and "lstm" in warned
    x = np.random.default_rng(0).random((5, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(predict(model, x), predict(original, x))


def test_keras2_lstm_campaign_weight_and_activation(keras2_lstm_h5, tmp_path):
    """Faults on the LSTM's kernel, recurrent kernel and output, checked against set_weights / a brute-force loop."""
    from faultlab.datasets import load_dataset
    from faultlab.engine.campaign import Campaign
    from faultlab.faults import FaultList
    from faultlab.outcomes import classify
    from faultlab.targets.keras import KerasTarget, load_keras_model
    from kmodels import model_with_replacement, predict, replaced, layer_output

    import torch

    path, _ = keras2_lstm_h5
    model = load_keras_model(path)
    t = KerasTarget(model)
    ds = load_dataset("digits-seq", "test").head(30)
    t.trace(ds.x[:1])
    names = {s.name for s in t.sites()}
    assert {"lstm", "lstm.recurrent_kernel", "lstm.bias", "dense"} <= names
    faults = FaultList.of(
        [
            Fault(0, "lstm", (3, 5), (30,)),
            Fault(1, "lstm.recurrent_kernel", (2, 7), (31,)),
            Fault(2, "lstm", (4,), (29,), "activation"),
            Fault(3, "dense", (1,), (31,), "activation"),
        ]
    )
    summary = Campaign(target=t, data=ds, faults=faults, out=tmp_path / "c").run()
    golden = torch.as_tensor(predict(model, ds.x))
    for f in faults:
        if f.site == "weight":
            layer = model.get_layer("lstm")
            ws = layer.get_weights()
            k = 0 if f.layer == "lstm" else 1
            ws2 = list(ws)
            ws2[k] = replaced(ws[k], f.index, f.bits)
            layer.set_weights(ws2)
            faulty = predict(model, ds.x)
            layer.set_weights(ws)
        else:
            act = layer_output(model, f.layer, ds.x)
            faulty = np.concatenate(
                [predict(model_with_replacement(model, f.layer, f.index, float(replaced(act[i], f.index, f.bits)[f.index])), ds.x[i : i + 1]) for i in range(len(ds))]
            )
        codes = classify(golden, torch.as_tensor(faulty)).numpy()
        row = summary.results.set_index("fault_id").loc[f.id]
        assert row["sdc1"] == int((codes >= 2).sum()) and row["masked"] + row["non_critical"] == int((codes <= 1).sum()), f.describe()


def _lambda_model():
    import keras
    from keras import layers

    return keras.Sequential([keras.Input((4,)), layers.Lambda(lambda t: t * 2.0, name="double"), layers.Dense(2, name="dense")])


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layers_need_unsafe(suffix, tmp_path):
    from faultlab.targets.keras import load_keras_model

    p = tmp_path / f"lambda{suffix}"
    _lambda_model().save(p)
    with pytest.raises(ModelLoadError, match="--unsafe") as e:
        load_keras_model(p)
    assert "double" in str(e.value)
    model = load_keras_model(p, unsafe=True)
    assert [l.name for l in model.layers] == ["double", "dense"]


def test_missing_and_malformed_files(tmp_path):
    from faultlab.targets.keras import load_keras_model

    with pytest.raises(ModelLoadError, match="no such file"):
        load_keras_model(tmp_path / "nope.keras")
    bad = tmp_path / "bad.keras"
    bad.write_text("not a zip")
    with pytest.raises(ModelLoadError, match="not a .keras zip"):
        load_keras_model(bad)
