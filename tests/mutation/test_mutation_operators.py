"""Operators and domains from signatures, YAML overrides, data operators, and bad operator input."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from faultlab.errors import FaultlabError
from faultlab.mutation import operators_for, parse_value
from faultlab.mutation.operators import ACTIVATIONS, REGULARIZERS, mutate_data

from .conftest import EXAMPLES


def _lstm1():
    import importlib.util

    spec = importlib.util.spec_from_file_location("lstm_price_ops", EXAMPLES / "lstm_price.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.LSTM1


def test_every_lstm1_keyword_is_an_operator_with_a_sensible_domain():
    fn = _lstm1()
    cat = operators_for(fn)
    assert list(cat.operators) == list(inspect.signature(fn).parameters)  # all 17, none skipped
    assert cat.get("stateful").domain.values == (True,)
    assert cat.get("bidirectional").domain.values == (True,)
    assert set(cat.get("recurrent_activation").domain.values) == set(ACTIVATIONS) - {"sigmoid"}
    assert None not in cat.get("kernel_regularizer").domain.values
    assert set(cat.get("kernel_regularizer").domain.values) == set(REGULARIZERS) - {None}
    for name in ("dropout", "recurrent_dropout"):
        d = cat.get(name).domain
        assert d.numeric and d.low == 0.0 and d.high < 1 and all(0 < v < 1 for v in d.sweep)
    units = cat.get("num_units").domain
    assert units.integer and 50 not in units.sweep and all(isinstance(v, int) for v in units.sweep)
    for op in cat:
        assert op.domain.sweep, op.name
        for v in op.domain.sweep:
            assert op.validate(v) == v


def test_bad_operator_input_is_one_line_error():
    cat = operators_for(_lstm1())
    with pytest.raises(FaultlabError, match="unknown operator") as e:
        cat.get("recurent_activation")
    assert "\n" not in str(e.value)
    with pytest.raises(FaultlabError, match="outside its domain"):
        cat.get("dropout").validate(1.5)
    with pytest.raises(FaultlabError, match="outside its domain"):
        cat.get("recurrent_activation").validate("nonsense")
    with pytest.raises(FaultlabError, match="equals the default"):
        cat.get("recurrent_activation").validate("sigmoid")
    with pytest.raises(FaultlabError, match="integer"):
        cat.get("num_units").validate(2.5)


def test_yaml_overrides_and_unknown_yaml_operator():
    fn = _lstm1()
    cat = operators_for(fn, {"num_units": {"low": 10, "high": 20, "sweep": [10, 20]}, "recurrent_activation": ["tanh", "relu"]})
    assert cat.get("num_units").domain.sweep == (10, 20)
    assert cat.get("recurrent_activation").domain.values == ("tanh", "relu")
    with pytest.raises(FaultlabError, match="unknown operator"):
        operators_for(fn, {"not_a_param": [1]})


def test_parse_value():
    assert parse_value("None") is None and parse_value("true") is True
    assert parse_value("0.25") == 0.25 and parse_value("12") == 12 and parse_value("tanh") == "tanh"


def test_training_level_operators_for_functions_taking_data():
    def train(x_train, y_train, epochs=5, batch_size=32, learning_rate=0.01, validation_split=0.1, patience=3,
              loss="categorical_crossentropy", optimizer="adam", use_bias=True, clipnorm=None):
        pass

    cat = operators_for(train, has_training_data=True)
    for name in ("change_label", "delete_training_data", "unbalance_train_data", "add_noise", "make_output_classes_overlap",
                 "disable_batching", "remove_validation_set", "epochs", "batch_size", "learning_rate", "patience",
                 "loss", "optimizer", "use_bias", "clipnorm"):
        assert name in cat.operators, name
    kwargs = {"x_train": np.zeros((50, 2)), "y_train": np.arange(50) % 5, "validation_split": 0.1}
    out = cat.get("disable_batching").apply(kwargs, True, np.random.default_rng(0))
    assert out["batch_size"] == 50 and "batch_size" not in kwargs
    assert cat.get("remove_validation_set").apply(kwargs, True, np.random.default_rng(0))["validation_split"] == 0.0


def test_data_operators_change_what_they_say(rng):
    x = rng.random((200, 3)).astype(np.float32)
    y = np.repeat(np.arange(4), 50)
    _, y2 = mutate_data("change_label", x, y, 30, np.random.default_rng(1))
    assert (y2 != y).sum() == 60
    assert (y2[y2 != y] != y[y2 != y]).all() and set(y2) <= set(y)  # relabelled to another existing class
    x3, y3 = mutate_data("delete_training_data", x, y, 25, np.random.default_rng(1))
    assert len(x3) == len(y3) == 150
    # what is left is a subset of the original (input, label) pairs, each once: rows are dropped, not altered
    original = {tuple(r): int(c) for r, c in zip(x, y)}  # the random inputs are all distinct
    assert len(original) == 200
    assert all(original.get(tuple(r)) == int(c) for r, c in zip(x3, y3))
    assert len({tuple(r) for r in x3}) == 150
    x4, y4 = mutate_data("make_output_classes_overlap", x, y, 20, np.random.default_rng(1))
    assert len(x4) == 210 and len({tuple(r) for r in x4}) == 200  # 10 duplicated inputs with another label
    np.testing.assert_array_equal(x4[:200], x)
    np.testing.assert_array_equal(y4[:200], y)  # the original data is kept as it was
    copies = [original[tuple(r)] for r in x4[200:]]  # each extra row copies an original input ...
    assert len(set(copies)) == 1 and len(set(y4[200:].tolist())) == 1
    assert int(y4[200]) != copies[0]  # ... of one class, relabelled as another class
    x5, _ = mutate_data("add_noise", x, y, 10, np.random.default_rng(1))
    assert int((np.abs(x5 - x).sum(axis=1) > 0).sum()) == 20
    y_unb = np.concatenate([np.zeros(100, int), np.ones(60, int), np.full(40, 2)])
    _, y6 = mutate_data("unbalance_train_data", x, y_unb, 50, np.random.default_rng(1))
    counts = np.bincount(y6, minlength=3)
    assert counts[0] == 100 and counts[2] == 20 and counts[1] == 30  # classes at or below the median lose 50 %


def test_learning_rate_domain_is_multiplicative_not_a_dropout_rate():
    from faultlab.mutation import domain_for

    d = domain_for("learning_rate", 0.01)
    assert d.sweep == (0.001, 0.1) and d.high == pytest.approx(10.0)
    assert domain_for("dropout_rate", 0.0).high < 1
