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
    assert (y2 != y).sum() == 15 and set(y[y2 != y]) == {0}  # 30 % of the most frequent class (ties: the first)
    assert (y2[y2 != y] != y[y2 != y]).all() and set(y2) <= set(y)  # relabelled to another existing class
    x3, y3 = mutate_data("delete_training_data", x, y, 25, np.random.default_rng(1))
    assert len(x3) == len(y3) == 152  # int(50 * 25 / 100) = 12 of each of the 4 classes
    # what is left is a subset of the original (input, label) pairs, each once: rows are dropped, not altered
    original = {tuple(r): int(c) for r, c in zip(x, y)}  # the random inputs are all distinct
    assert len(original) == 200
    assert all(original.get(tuple(r)) == int(c) for r, c in zip(x3, y3))
    assert len({tuple(r) for r in x3}) == 152
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


# ---- DeepCrime's definitions (operators/training_data_operators.py), checked independently with NumPy
def _unbalanced(rng):
    y = np.concatenate([np.zeros(100, int), np.ones(60, int), np.full(40, 2)])  # class 0 most, class 1 second
    return rng.normal(5.0, 2.0, size=(200, 4)).astype(np.float32), y


def test_change_label_relabels_a_share_of_the_most_frequent_class(rng):
    x, y = _unbalanced(rng)
    changed_from = np.zeros(3, int)
    new_labels = []
    for seed in range(20):
        x2, y2 = mutate_data("change_label", x, y, 30, np.random.default_rng(seed))
        ch = y2 != y
        assert ch.sum() == 30 and x2 is x  # int(100 * 30 / 100) labels of class 0; inputs untouched
        changed_from += np.bincount(y[ch], minlength=3)
        new_labels += y2[ch].tolist()
    assert changed_from.tolist() == [600, 0, 0]
    share_1 = np.mean(np.asarray(new_labels) == 1)
    assert set(new_labels) == {1, 2} and 0.4 < share_1 < 0.6  # the other classes, uniformly (not by frequency)
    # one-hot labels: rows are the labels, as np.unique(axis=0) in DeepCrime
    onehot = np.eye(3, dtype=np.float32)[y]
    _, o2 = mutate_data("change_label", x, onehot, 50, np.random.default_rng(0))
    moved = (o2 != onehot).any(axis=1)
    assert moved.sum() == 50 and (onehot[moved].argmax(1) == 0).all() and (o2.sum(1) == 1).all()


def test_delete_and_unbalance_work_per_class(rng):
    x, y = _unbalanced(rng)
    _, y3 = mutate_data("delete_training_data", x, y, 25, np.random.default_rng(1))
    assert np.bincount(y3).tolist() == [75, 45, 30]  # 25 % of every class, rounded down
    _, y4 = mutate_data("delete_training_data", x, y, 33, np.random.default_rng(1))
    assert np.bincount(y4).tolist() == [100 - 33, 60 - 19, 40 - 13]
    yr = rng.normal(size=200)  # regression labels: 25 % of every SD bucket (test_regression_data_operators.py)
    x5, y5 = mutate_data("delete_training_data", x, yr, 25, np.random.default_rng(1))
    assert len(x5) == len(y5) and 150 <= len(y5) <= 152 and set(y5.tolist()) <= set(yr.tolist())
    # unbalance: only classes with fewer samples than the mean count lose data
    y70 = np.concatenate([np.zeros(70, int), np.ones(70, int), np.full(60, 2)])  # mean 66.7, median 70
    _, y6 = mutate_data("unbalance_train_data", x, y70, 50, np.random.default_rng(1))
    assert np.bincount(y6).tolist() == [70, 70, 30]
    balanced = np.repeat(np.arange(4), 50)  # nothing is below the mean: DeepCrime changes nothing
    _, y7 = mutate_data("unbalance_train_data", x, balanced, 50, np.random.default_rng(1))
    assert np.bincount(y7).tolist() == [50, 50, 50, 50]


def test_add_noise_scales_each_inputs_sd_by_the_percentage(rng):
    scale = rng.uniform(0.5, 20.0, size=(60, 1))
    x = (rng.normal(size=(60, 800)) * scale + 3.0).astype(np.float32)
    y = np.arange(60) % 3
    x2, y2 = mutate_data("add_noise", x, y, 40, np.random.default_rng(2))
    noisy = np.flatnonzero(np.abs(x2 - x).sum(axis=1) > 0)
    assert len(noisy) == 24 and y2 is y  # int(60 * 40 / 100) inputs
    ratio = (x2 - x)[noisy].std(axis=1) / x[noisy].std(axis=1)
    np.testing.assert_allclose(ratio, 0.40, rtol=0.12)  # SD of the noise = 40 % of that input's SD
    assert abs(float((x2 - x)[noisy].mean())) < 0.05 * float(x.std())  # zero-mean
    x3, _ = mutate_data("add_noise", x, y, 5, np.random.default_rng(2))
    ratio = (x3 - x)[np.abs(x3 - x).sum(axis=1) > 0].std(axis=1) / x[np.abs(x3 - x).sum(axis=1) > 0].std(axis=1)
    np.testing.assert_allclose(ratio, 0.05, rtol=0.12)


def test_overlap_copies_a_share_of_the_top_class_as_the_second(rng):
    x, y = _unbalanced(rng)
    x2, y2 = mutate_data("make_output_classes_overlap", x, y, 15, np.random.default_rng(1))
    assert len(y2) == 215 and (y2[200:] == 1).all()  # int(100 * 15 / 100) copies of class 0, labelled class 1
    src = {tuple(r): int(c) for r, c in zip(x, y)}
    assert all(src[tuple(r)] == 0 for r in x2[200:])
    _, y3 = mutate_data("make_output_classes_overlap", x[:200], np.repeat(np.arange(4), 50), 15, np.random.default_rng(1))
    assert len(y3) == 207  # int(7.5): DeepCrime rounds down


def test_search_directions_follow_deepcrime():
    from faultlab.mutation import domain_for

    # DeepCrime searches the learning rate from the original down (e.g. 1.0 -> 0.001), epochs down to 1,
    # patience down to 1, data percentages up to 100
    assert domain_for("learning_rate", 0.01).search_to == pytest.approx(1e-5)
    assert domain_for("epochs", 12).search_to == 1
    assert domain_for("patience", 10).search_to == 1 and domain_for("patience", 1).search_to == 0


def test_one_hot_float_labels_count_as_classification():
    """Keras' to_categorical gives float one-hot rows: they get DeepCrime's class operators, deleted per class."""
    from faultlab.mutation.operators import class_ids, is_class_labels

    y = np.repeat(np.arange(3), [40, 30, 30])
    onehot = np.eye(3, dtype=np.float32)[y]
    assert is_class_labels(onehot) and is_class_labels(y)
    assert not is_class_labels(np.linspace(0, 1, 100).astype(np.float32))  # regression targets
    assert not is_class_labels(np.full((10, 2), 0.5, np.float32))  # soft labels are not one-hot
    np.testing.assert_array_equal(class_ids(onehot), y)
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    _, kept = mutate_data("delete_training_data", x, onehot, 50, np.random.default_rng(0))
    assert np.bincount(kept.argmax(1)).tolist() == [20, 15, 15]  # half of every class, as for integer labels
