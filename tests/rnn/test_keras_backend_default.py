"""Keras RNN subjects run on the torch backend when the user has chosen none (tensorflow is an optional extra).

The test suite itself sets ``KERAS_BACKEND=torch``; these run in fresh processes without it, with a home
directory that has no ``~/.keras/keras.json``, as a new user's shell would.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras")

SCRIPT = """
import sys
import numpy as np
from faultlab.datasets import Dataset
from faultlab.rnn import load_model, profile_model, save_model
from faultlab.rnn.subjects import train_subject
rng = np.random.default_rng(0)
data = Dataset(rng.standard_normal((32, 5, 3)).astype("float32"), rng.integers(0, 2, 32), "toy")
path = sys.argv[1]
if sys.argv[2] == "train":
    model = train_subject(data, arch="gru", framework="keras", hidden_size=4, epochs=1, batch_size=16)
    save_model(model, path)
else:
    profile_model(load_model(path), data.x)
import keras
print("backend", keras.backend.backend())
"""


def _run(tmp_path: Path, path: Path, step: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["HOME"] = str(tmp_path / "home")  # no keras.json
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(path), step], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
def test_keras_subject_trains_saves_loads_and_profiles_on_torch_without_a_chosen_backend(tmp_path):
    path = tmp_path / "gru.keras"
    assert "backend torch" in _run(tmp_path, path, "train")
    assert "backend torch" in _run(tmp_path, path, "load")
