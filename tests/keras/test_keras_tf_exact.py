"""The tensorflow backend pair by pair: exact-engine classes of weight and activation faults on a CNN, an LSTM model,
a padded (masked) Embedding-LSTM-GRU model and Bidirectional/TimeDistributed wrappers equal a plain set_weights / layer-by-layer loop (tf_exact_check.py,
run in a subprocess: a process has one Keras backend)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.tf
@pytest.mark.slow
def test_exact_classes_on_tensorflow_equal_a_plain_loop():
    pytest.importorskip("tensorflow")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(HERE / "tf_exact_check.py")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = {r["model"]: r for r in json.loads(proc.stdout.strip().splitlines()[-1])}
    assert set(res) == {"cnn", "lstm", "masked", "wrappers"}
    for name, r in res.items():
        assert r["backend"] == "tensorflow"
        assert r["hand_is_model"], name  # the loop's layer-by-layer output is the model's own
        assert r["kinds"] == ["activation", "weight"]
        assert r["n_mismatch"] == 0, (name, r["mismatches"])
        assert r["restored"] and r["fast_same"], name
        h = r["hist"]
        assert h[0] > 0 and h[1] > 0 and h[2] + h[3] > 0, (name, h)  # masked, non-critical and SDC pairs all compared
    assert res["cnn"]["hist"][4] > 0 and res["lstm"]["hist"][4] > 0  # and DUE
    # faults on padded steps are masked, as in the model itself
    assert res["masked"]["padded"] and all(c == 0 for codes in res["masked"]["padded"] for c in codes)
