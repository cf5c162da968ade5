"""Fast stand-ins for training functions: a metric that depends on the arguments plus seeded NumPy noise.

They use the *global* NumPy generator on purpose, so the tests see whether faultlab seeds it.
``FAULTLAB_TOY_LOG`` (a path) gets one line per call, so tests can count trainings.
"""
from __future__ import annotations

import os
import time

import numpy as np


def _log(tag: str) -> None:
    path = os.environ.get("FAULTLAB_TOY_LOG")
    if path:
        with open(path, "a") as f:
            f.write(tag + "\n")


def toy(shift=0.0, noise=1.0, width=4, activation="relu", use_bias=True, crash=False, sleep=0.0):
    """'Accuracy' 0.9 - shift (+ a drop for odd activations) with N(0, 0.01 * noise) noise."""
    _log(f"toy shift={shift} activation={activation} use_bias={use_bias}")
    if crash:
        raise RuntimeError("boom: crash requested")
    if activation == "exponential":
        raise FloatingPointError("diverged with exponential activation")
    time.sleep(sleep)
    drop = {"relu": 0.0, "tanh": 0.001}.get(activation, 0.05)
    acc = 0.9 - shift - drop - (0.0 if use_bias else 0.02) + np.random.normal(0, 0.01 * noise)
    loss = 1 - acc + np.random.normal(0, 0.001)
    return None, {"accuracy": [0.5, acc + 0.01], "val_accuracy": [0.4, acc], "loss": [1.0, loss]}


def toy_seeded(rate=0.1, seed=None):
    """Returns the seed it was given, to check that faultlab passes ``seed=``."""
    return {"val_accuracy": 0.5 + rate, "seed_seen": -1 if seed is None else seed}


def flaky(shift=0.0):
    """Like ``toy``, but raises while the file named by ``FAULTLAB_TOY_FLAKY`` exists (a transient failure)."""
    marker = os.environ.get("FAULTLAB_TOY_FLAKY")
    if marker and os.path.exists(marker):
        _log("flaky failed")
        raise ConnectionError("transient: dataset server unreachable")
    return toy(shift=shift)


def toy_val(shift=0.0, validation_split=0.2):
    """Takes ``validation_split``, so it gets the ``remove_validation_set`` operator."""
    return {"val_accuracy": 0.9 - shift - (0.0 if validation_split else 0.05)}


def load_training_data():
    """Training data for ``toy_data``: 30 inputs of 2 features, three classes of 10."""
    x = np.arange(60, dtype=np.float32).reshape(30, 2)
    return x, np.repeat(np.arange(3), 10)


def toy_data(x_train, y_train, shift=0.0):
    """Edits its data in place (as ``x_train /= 255`` would) and reports what it was given."""
    given = float(np.sum(x_train))
    x_train += 1.0
    return {"val_accuracy": 0.9 - shift, "x_sum": given, "n": len(x_train), "y_sum": float(np.sum(y_train))}


def toy_nan(shift=0.0, activation="relu"):
    """Like ``toy``, but an exponential activation "trains" to NaN metrics instead of raising (a diverged run)."""
    if activation == "exponential":
        return {"val_accuracy": float("nan"), "loss": float("nan")}
    return toy(shift=shift, activation=activation)


def broken(width=3):
    raise ValueError("this training function always fails")


MODEL_TYPES = {"toy": toy, "toy_seeded": toy_seeded, "broken": broken, "flaky": flaky, "toy_val": toy_val, "toy_data": toy_data, "toy_nan": toy_nan}
