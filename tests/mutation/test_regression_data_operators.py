"""DeepCrime's regression variants of the data operators, against a numpy rewrite of DeepCrime's rule.

DeepCrime (``operators/training_data_operators.py``, ``model_type == 'regression'``): ``change_label``
adds Gaussian noise with SD = p % of the labels' SD to every label; the other operators treat the SD
buckets of the labels (below -SD, within, above +SD; nine buckets from the first two outputs) as the
classes. faultlab centres the buckets on the labels' mean (DeepCrime on 0, which is the same for
zero-mean labels) and never deletes a bucket's last sample.
"""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from faultlab.mutation import ModelRef, MutationStore, MutationSweep
from faultlab.mutation.operators import DATA_OPERATORS, mutate_data, operators_for
from faultlab.mutation.statistics import GLMTest
from faultlab.mutation.sweeps import run_sweep


# ---------------------------------------------------------------- DeepCrime's rule, written out
def dc_buckets_1d(y: np.ndarray, center: float) -> np.ndarray:
    """get_label_buckets_1dim, element by element: y < c - SD, c - SD <= y <= c + SD, y > c + SD."""
    sd = np.std(y)
    out = []
    for v in y:
        if v < center - sd:
            out.append(0)
        elif v <= center + sd:
            out.append(1)
        else:
            out.append(2)
    return np.asarray(out)


def dc_buckets_2d(y: np.ndarray, center: np.ndarray) -> np.ndarray:
    """get_label_buckets_2dims: 3 x 3 buckets of the first two outputs, intervals [c - SD, c + SD) per output."""
    sd = np.std(y, axis=0)

    def third(v, j):
        return 0 if v < center[j] - sd[j] else (1 if v < center[j] + sd[j] else 2)

    return np.asarray([3 * third(row[0], 0) + third(row[1], 1) for row in y])


def dc_label_noise(y: np.ndarray, percent: float, seed: int) -> np.ndarray:
    """operator_add_noise_to_labels: every label gets N(0, |SD(y) * p / 100|) noise (drawn here from the seed)."""
    sigma = abs(np.std(y.astype(np.float64)) * percent / 100)
    return (y + np.random.default_rng(seed).normal(0, sigma, y.shape)).astype(y.dtype)


def _labels(seed: int, n: int = 400, loc: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (loc + rng.gamma(2.0, 1.5, size=n)).astype(np.float32)  # skewed: the three buckets differ in size
    x = np.arange(n, dtype=np.float32).reshape(n, 1)  # each input's id
    return x, y


def test_change_label_adds_noise_to_every_label():
    x, y = _labels(0)
    for seed, p in ((3, 30.0), (4, 100.0), (5, 5.0)):
        x2, y2 = mutate_data("change_label", x, y, p, np.random.default_rng(seed))
        assert x2 is x and y2.dtype == y.dtype and y2.shape == y.shape
        np.testing.assert_allclose(y2, dc_label_noise(y, p, seed), rtol=0, atol=1e-6)
        assert (y2 != y).all()  # every label, not a share of them
        assert np.std(y2 - y) == pytest.approx(p / 100 * np.std(y), rel=0.12)
    yc = y.reshape(-1, 1)  # one output as a column
    _, yc2 = mutate_data("change_label", x, yc, 30.0, np.random.default_rng(3))
    np.testing.assert_allclose(yc2, dc_label_noise(yc, 30.0, 3), atol=1e-6)


def test_sd_buckets_are_deepcrimes_for_zero_mean_labels():
    """DeepCrime compares with +-SD around 0; for centred labels faultlab's buckets are the same."""
    _, y = _labels(1)
    yc = y - y.mean()  # mean ~1e-7: nothing lies that close to a bucket edge
    x = np.arange(len(y), dtype=np.float32).reshape(-1, 1)
    counts = np.bincount(dc_buckets_1d(yc, 0.0), minlength=3)
    _, y2 = mutate_data("delete_training_data", x, yc, 50.0, np.random.default_rng(0))
    kept_counts = np.bincount(dc_buckets_1d(yc, 0.0)[np.isin(yc, y2)], minlength=3)
    assert kept_counts.tolist() == [c - min(c // 2, c - 1) for c in counts]


@pytest.mark.parametrize("percent", [25.0, 50.0, 100.0])
def test_delete_and_unbalance_work_per_sd_bucket(percent):
    x, y = _labels(2)
    ref = dc_buckets_1d(y, float(np.mean(y)))
    counts = np.bincount(ref, minlength=3)
    assert counts.min() > 0 and len(set(counts.tolist())) == 3
    for seed in range(3):
        x2, y2 = mutate_data("delete_training_data", x, y, percent, np.random.default_rng(seed))
        ids = x2[:, 0].astype(int)
        np.testing.assert_array_equal(y2, y[ids])  # inputs and labels stay paired
        expect = [c - min(int(c * percent / 100), c - 1) for c in counts]  # p % of every bucket, one left
        assert np.bincount(ref[ids], minlength=3).tolist() == expect
        _, y3 = mutate_data("unbalance_train_data", x, y, percent, np.random.default_rng(seed))
        mean = counts.mean()  # over the three buckets, as DeepCrime's np.mean(unique_counts)
        expect = [c - min(int(c * percent / 100), c - 1) if c < mean else c for c in counts]
        assert np.bincount(dc_buckets_1d(y, float(np.mean(y)))[np.isin(y, y3)], minlength=3).tolist() == expect


def test_overlap_copies_the_biggest_bucket_with_the_second_buckets_labels():
    x, y = _labels(3)
    ref = dc_buckets_1d(y, float(np.mean(y)))
    counts = np.bincount(ref, minlength=3)
    a = int(np.argmax(counts))
    rest = counts.copy()
    rest[a] = -1
    b = int(np.argmax(rest))
    for p in (15.0, 60.0):
        x2, y2 = mutate_data("make_output_classes_overlap", x, y, p, np.random.default_rng(7))
        k = int(counts[a] * p / 100)
        assert len(x2) == len(y2) == len(y) + k
        np.testing.assert_array_equal(x2[: len(y)], x)
        np.testing.assert_array_equal(y2[: len(y)], y)
        copied = x2[len(y):, 0].astype(int)
        assert len(set(copied.tolist())) == k and (ref[copied] == a).all()
        # DeepCrime: the sorted distinct labels of bucket b, repeated in order, cut to k
        distinct = np.unique(y[ref == b])
        np.testing.assert_array_equal(y2[len(y):], np.resize(distinct, k))
        assert y2.dtype == y.dtype


def test_two_outputs_use_nine_buckets_of_the_first_two():
    rng = np.random.default_rng(4)
    y = np.column_stack([rng.normal(size=600), rng.exponential(size=600), rng.normal(size=600)]).astype(np.float32)
    x = np.arange(600, dtype=np.float32).reshape(-1, 1)
    ref = dc_buckets_2d(y[:, :2], y[:, :2].mean(axis=0))
    counts = np.bincount(ref, minlength=9)
    x2, _ = mutate_data("delete_training_data", x, y, 50.0, np.random.default_rng(0))
    expect = [c - min(c // 2, c - 1) if c else 0 for c in counts]
    assert np.bincount(ref[x2[:, 0].astype(int)], minlength=9).tolist() == expect
    _, y3 = mutate_data("change_label", x, y, 20.0, np.random.default_rng(1))
    np.testing.assert_allclose(y3, dc_label_noise(y, 20.0, 1), atol=1e-6)


def test_constant_labels_have_no_second_bucket_to_overlap_with():
    """All labels equal: one bucket; DeepCrime divides by zero there, faultlab leaves the data alone."""
    x = np.arange(20, dtype=np.float32).reshape(-1, 1)
    y = np.full(20, 2.5, np.float32)
    x2, y2 = mutate_data("make_output_classes_overlap", x, y, 50.0, np.random.default_rng(0))
    assert len(x2) == len(y2) == 20


def _regression_catalogue_fn(x_train, y_train, epochs=2):
    return {"loss": 0.0}


def test_regression_functions_get_every_data_operator():
    cat = operators_for(_regression_catalogue_fn, has_training_data=True, classification=False)
    assert [n for n in DATA_OPERATORS if n in cat.operators] == list(DATA_OPERATORS)


REGRESSION_MODULE = textwrap.dedent('''
    """A tiny torch regression: 4 features, one float target."""
    import numpy as np
    import torch


    def load_training_data():
        rng = np.random.default_rng(0)
        x = rng.normal(size=(120, 4)).astype(np.float32)
        y = (x @ np.array([1.0, -2.0, 0.5, 0.0], np.float32) + 3.0 + 0.1 * rng.normal(size=120)).astype(np.float32)
        return x, y


    def REG(x_train, y_train, epochs=3, lr=0.05):
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train).reshape(-1, 1)
        losses = []
        for _ in range(epochs):
            for _ in range(20):
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model(xt), yt)
                loss.backward()
                opt.step()
            losses.append(loss.item())
        return model, {"loss": losses, "n": [len(y_train)] * epochs,
                       "y_sum": [float(np.sum(y_train, dtype=np.float64))] * epochs}


    MODEL_TYPES = {"REG": REG}
''')


def test_regression_example_end_to_end(tmp_path):
    """A torch regression function gets all five data operators, each doing DeepCrime's regression variant."""
    path = tmp_path / "reg_model.py"
    path.write_text(REGRESSION_MODULE)
    rng = np.random.default_rng(0)  # the module's data, rebuilt
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], np.float32) + 3.0 + 0.1 * rng.normal(size=120)).astype(np.float32)
    counts = np.bincount(dc_buckets_1d(y, float(np.mean(y))), minlength=3)
    with MutationStore(path=tmp_path / "logs") as store:
        sweep = MutationSweep(model=ModelRef(name="REG", models_file=str(path)), store=store, runs=3)
        assert all(n in sweep.catalogue.operators for n in DATA_OPERATORS)
        configs = [("change_label", 100.0), ("delete_training_data", 50.0), ("unbalance_train_data", 50.0),
                   ("make_output_classes_overlap", 50.0)]
        run_sweep(sweep, configs)

        def runs(op, v):
            rs = store.runs(sweep.mutant(op, v))
            assert [r.status for r in rs] == ["ok"] * 3, [r.error for r in rs]
            return rs

        for r in runs("change_label", 100.0):  # run i's data are drawn from seed i
            assert r.metrics["n"] == 120
            assert r.metrics["y_sum"] == pytest.approx(float(np.sum(dc_label_noise(y, 100.0, r.seed), dtype=np.float64)), rel=1e-9)
        assert [r.metrics["n"] for r in runs("delete_training_data", 50.0)] == [sum(c - c // 2 for c in counts)] * 3
        unbalanced = sum(c - c // 2 if c < counts.mean() else c for c in counts)
        assert [r.metrics["n"] for r in runs("unbalance_train_data", 50.0)] == [unbalanced] * 3
        assert [r.metrics["n"] for r in runs("make_output_classes_overlap", 50.0)] == [120 + counts.max() // 2] * 3
        # label noise at the labels' own SD: the training loss cannot fall below the noise, the mutant is killed
        c = sweep.compare("change_label", 100.0, metric="loss", test=GLMTest(), direction="lower")
        assert c.killed is True and c.mean_mutant > 10 * c.mean_original


@pytest.mark.parametrize("shape", [(300,), (300, 1)])
def test_float_binary_targets_are_classes_not_regression(shape):
    """0/1 float labels (a sigmoid output's binary cross-entropy targets) get the class operators, not label noise."""
    from faultlab.mutation.operators import is_class_labels

    y = np.repeat(np.array([0.0, 1.0], np.float32), [200, 100]).reshape(shape)
    x = np.arange(300, dtype=np.float32).reshape(-1, 1)
    assert is_class_labels(y)
    assert not is_class_labels(np.array([0.0, 1.0, 0.5], np.float32)) and not is_class_labels(np.array([0.0, 2.0]))
    _, y2 = mutate_data("change_label", x, y, 30.0, np.random.default_rng(0))
    assert set(np.unique(y2).tolist()) == {0.0, 1.0} and y2.shape == y.shape
    flipped = (y2 != y).reshape(-1)
    assert flipped.sum() == 60 and (y.reshape(-1)[flipped] == 0).all()  # 30 % of the bigger class, to the other
    _, y3 = mutate_data("delete_training_data", x, y, 50.0, np.random.default_rng(0))
    assert np.bincount(y3.reshape(-1).astype(int)).tolist() == [100, 50]  # half of every class
