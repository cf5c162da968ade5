"""Fixtures for the Keras target tests: digits data in Keras layout and briefly trained models."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    from faultlab.datasets import load_dataset

    return load_dataset("digits", "train").channels_last(), load_dataset("digits", "test")


@pytest.fixture(scope="session")
def seq_model(digits):
    from kmodels import fit_briefly, sequential_cnn

    train, _ = digits
    return fit_briefly(sequential_cnn(), train.x, train.y)


@pytest.fixture(scope="session")
def branchy_model(digits):
    from kmodels import branching_cnn, fit_briefly

    train, _ = digits
    return fit_briefly(branching_cnn(), train.x, train.y)


@pytest.fixture(scope="session")
def model_files(tmp_path_factory, seq_model, branchy_model) -> dict[str, Path]:
    """Both trained models saved as .keras files (for loading and cross-backend tests)."""
    d = tmp_path_factory.mktemp("keras_models")
    paths = {"seq": d / "seq.keras", "branchy": d / "branchy.keras"}
    seq_model.save(paths["seq"])
    branchy_model.save(paths["branchy"])
    return paths


def _lstm_model():
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8)), layers.LSTM(6, name="lstm"), layers.Dense(10, name="dense")])


@pytest.fixture(scope="session")
def keras2_lstm_h5(tmp_path_factory):
    """A Keras-2-style .h5: a Keras 3 file whose LSTM config (in a copy) gains tf.keras' ``time_major``."""
    import json
    import shutil

    import h5py

    d = tmp_path_factory.mktemp("h5")
    model = _lstm_model()
    model.save(d / "keras3.h5")
    old = d / "keras2_lstm.h5"
    shutil.copyfile(d / "keras3.h5", old)
    with h5py.File(old, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        lstm = next(l for l in cfg["config"]["layers"] if l["class_name"] == "LSTM")
        lstm["config"]["time_major"] = False
        f.attrs["model_config"] = json.dumps(cfg)
    return old, model


