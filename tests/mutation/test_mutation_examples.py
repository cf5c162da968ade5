"""The shipped Keras examples train, report the default metric and give per-input outcomes."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from faultlab.mutation import call_seeded, final_metrics, operators_for
from faultlab.mutation.runner import per_input_outcomes
from faultlab.mutation.search import unpack_outcomes

from .conftest import EXAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("file,name", [("gru_digits.py", "GRU1"), ("keras_cnn_digits.py", "CNN1")])
def test_keras_examples_train_and_record_per_input_outcomes(file, name):
    spec = importlib.util.spec_from_file_location(f"ex_{name}", EXAMPLES / file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn = mod.MODEL_TYPES[name]
    assert len(operators_for(fn)) >= 10
    result = call_seeded(fn, {"epochs": 1, "batch_size": 256}, seed=0)
    metrics = final_metrics(result)
    assert {"accuracy", "val_accuracy", "loss", "val_loss"} <= set(metrics)
    x, y = mod.evaluation_data()
    correct = unpack_outcomes(per_input_outcomes(fn, result[0]), len(y))
    scores = result[0].predict(x, verbose=0)
    assert np.array_equal(correct, scores.argmax(1) == y)
    assert correct.mean() == pytest.approx(metrics["val_accuracy"], abs=1e-6)
