"""Every operator of the shipped LSTM1 actually changes the trained model (same seed, original vs mutant)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from faultlab.mutation import call_seeded, final_metrics, operators_for

from .conftest import EXAMPLES

# A smaller base than the signature's defaults keeps 18 trainings fast; every operator is still mutated from it.
BASE = {"depth": 2, "num_units": 8}
#: unroll=True computes the same function with an unrolled loop: the model's configuration changes, its numbers need not.
SAME_MATHS = {"unroll"}


def _load():
    spec = importlib.util.spec_from_file_location("lstm_price_t", EXAMPLES / "lstm_price.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.N_TRAIN, mod.N_VAL = 64, 32  # still multiples of BATCH_SIZE (stateful); halves the test's training time
    return mod


def _fingerprint(mod, result):
    model, history = result
    x, _ = mod.price_series()
    probe = x[: mod.BATCH_SIZE]
    return {
        "config": json.dumps(model.get_config(), sort_keys=True, default=str),
        "weights": [np.asarray(w) for w in model.get_weights()],
        "outputs": np.asarray(model.predict(probe, batch_size=mod.BATCH_SIZE, verbose=0)),
        "metrics": final_metrics(result),
    }


def _numbers_differ(a, b) -> bool:
    if len(a["weights"]) != len(b["weights"]) or any(x.shape != y.shape for x, y in zip(a["weights"], b["weights"])):
        return True
    return any(not np.array_equal(x, y) for x, y in zip(a["weights"], b["weights"])) or not np.array_equal(a["outputs"], b["outputs"])


@pytest.mark.slow
def test_every_lstm1_operator_changes_the_trained_model():
    mod = _load()
    cat = operators_for(mod.LSTM1, defaults=BASE)
    assert len(cat) == 17
    original = _fingerprint(mod, call_seeded(mod.LSTM1, BASE, seed=3))
    again = _fingerprint(mod, call_seeded(mod.LSTM1, BASE, seed=3))
    assert not _numbers_differ(original, again) and original["config"] == again["config"]  # seeding makes runs repeatable
    unchanged = []
    for op in cat:
        value = op.domain.sweep[0]
        mutant = _fingerprint(mod, call_seeded(mod.LSTM1, op.apply(BASE, value, np.random.default_rng(0)), seed=3))
        assert all(np.isfinite(v) for v in mutant["metrics"].values()) or op.name.endswith("activation"), op.name
        changed = _numbers_differ(original, mutant) if op.name not in SAME_MATHS else mutant["config"] != original["config"]
        if not changed:
            unchanged.append(f"{op.name}={value}")
    assert not unchanged, f"operators that left the trained model unchanged: {unchanged}"
