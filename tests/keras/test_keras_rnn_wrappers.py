"""Recurrent Keras layers and their wrappers (Bidirectional, TimeDistributed; LSTM, GRU, SimpleRNN), torch backend.

Every check is against a computation written without faultlab: weight faults against a struct bit flip written
with ``set_weights``, activation faults against the model's output built layer by layer by hand with the fault
written into one layer's output, outcome classes against a plain classification loop.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from faultlab.engine import EvalSet
from faultlab.engine.exact import ExactEngine
from faultlab.engine.fast import FastEngine
from faultlab.faults import Fault


def _np(t) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(t))


def _flip(values: np.ndarray, index: tuple, bit: int) -> np.ndarray:
    """``values`` with one bit of one float32 element flipped, through struct."""
    out = np.array(values, dtype=np.float32, copy=True)
    raw = struct.unpack("<I", struct.pack("<f", float(out[index])))[0] ^ (1 << bit)
    out[index] = struct.unpack("<f", struct.pack("<I", raw))[0]
    return out


def _classes(golden: np.ndarray, faulty: np.ndarray, k: int = 5) -> np.ndarray:
    """masked 0, non-critical 1, SDC-1 2, SDC-5 3, DUE 4 for each row, by the rules the README states."""
    out = []
    for g, f in zip(golden.reshape(len(golden), -1), faulty.reshape(len(faulty), -1)):
        if g.tobytes() == f.tobytes():
            out.append(0)
        elif not np.isfinite(f).all():
            out.append(4)
        elif int(np.argmax(f)) == int(np.argmax(g)):
            out.append(1)
        else:
            top = int(np.argmax(g))
            ahead = sum(1 for c in range(len(f)) if f[c] > f[top] or (f[c] == f[top] and c < top))
            out.append(3 if ahead >= min(k, len(f)) else 2)
    return np.array(out, dtype=np.uint8)


def _by_hand(model, x, fault: Fault | None = None, mask=None) -> np.ndarray:
    """A chain model's output computed layer by layer (``mask`` passed explicitly to recurrent layers), with an
    activation ``fault`` flipped into one layer's output for every input."""
    import keras
    import torch

    h = keras.ops.convert_to_tensor(x)
    with torch.no_grad():
        for layer in model.layers:
            if type(layer).__name__ == "InputLayer":
                continue
            kw = {"training": False} if "training" in getattr(layer, "_call_context_args", ()) else {}
            if mask is not None and type(layer).__name__ in ("LSTM", "GRU", "SimpleRNN", "Bidirectional"):
                kw["mask"] = keras.ops.convert_to_tensor(mask)
            h = layer(h, **kw)
            if fault is not None and layer.name == fault.layer:
                a = _np(h)
                for r in range(len(a)):
                    a[r] = _flip(a[r], fault.index, fault.bits[0])
                h = keras.ops.convert_to_tensor(a)
    return _np(h).reshape(len(x), -1)


def _rnn_model():
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8))
    x = layers.Bidirectional(layers.LSTM(5, return_sequences=True), name="bi")(inp)
    x = layers.TimeDistributed(layers.Dense(4), name="td")(x)
    x = layers.GRU(6, return_sequences=True, name="gru")(x)
    x = layers.SimpleRNN(3, return_sequences=True, name="srnn")(x)
    x = layers.Bidirectional(layers.GRU(4), name="bigru")(x)
    out = layers.Dense(10, name="out")(x)
    return keras.Model(inp, out, name="rnn_wrappers")


@pytest.fixture(scope="module")
def rnn():
    """The model trained briefly on digit rows, its target and 40 test inputs."""
    import keras

    from faultlab.datasets import load_dataset
    from faultlab.targets.keras import KerasTarget

    train, test = load_dataset("digits-seq", "train"), load_dataset("digits-seq", "test")
    model = _rnn_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train.x, train.y, epochs=3, batch_size=128, verbose=0)
    x, y = test.x[:40], test.y[:40]
    t = KerasTarget(model)
    t.trace(x[:1])
    return model, t, x, y


#: every weight site, in the order of the layer's get_weights(), with its shape
WEIGHTS = {
    "bi": [("bi.forward_lstm/lstm_cell/kernel", (8, 20)), ("bi.forward_lstm/lstm_cell/recurrent_kernel", (5, 20)), ("bi.forward_lstm/lstm_cell/bias", (20,)),
           ("bi.backward_lstm/lstm_cell/kernel", (8, 20)), ("bi.backward_lstm/lstm_cell/recurrent_kernel", (5, 20)), ("bi.backward_lstm/lstm_cell/bias", (20,))],
    "td": [("td", (10, 4)), ("td.bias", (4,))],
    "gru": [("gru", (4, 18)), ("gru.recurrent_kernel", (6, 18)), ("gru.bias", (2, 18))],
    "srnn": [("srnn", (6, 3)), ("srnn.recurrent_kernel", (3, 3)), ("srnn.bias", (3,))],
    "bigru": [("bigru.forward_gru/gru_cell/kernel", (3, 12)), ("bigru.forward_gru/gru_cell/recurrent_kernel", (4, 12)), ("bigru.forward_gru/gru_cell/bias", (2, 12)),
              ("bigru.backward_gru/gru_cell/kernel", (3, 12)), ("bigru.backward_gru/gru_cell/recurrent_kernel", (4, 12)), ("bigru.backward_gru/gru_cell/bias", (2, 12))],
    "out": [("out", (8, 10)), ("out.bias", (10,))],
}
ACTIVATIONS = [("bi", (8, 10)), ("td", (8, 4)), ("gru", (8, 6)), ("srnn", (8, 3)), ("bigru", (8,)), ("out", (10,))]


def test_sites_name_each_sub_layer_variable_unambiguously(rnn):
    """A Bidirectional layer has two kernels: neither is listed under the bare layer name, which stays an alias."""
    model, t, _, _ = rnn
    weights = [(s.name, s.shape) for s in t.sites() if s.kind == "weight"]
    assert weights == [w for ws in WEIGHTS.values() for w in ws]
    for layer, ws in WEIGHTS.items():  # the listing follows get_weights()
        assert [shape for _, shape in ws] == [w.shape for w in model.get_layer(layer).get_weights()]
    assert [(s.name, s.shape) for s in t.sites() if s.kind == "activation"] == ACTIVATIONS
    # every variable by its Keras path; the old bare names still reach the forward kernel
    for layer, ws in WEIGHTS.items():
        for v, (name, _) in zip(model.get_layer(layer).weights, ws):
            assert t.site(v.path, "weight").name == name
    assert t.site("bi", "weight").name == "bi.forward_lstm/lstm_cell/kernel"
    assert t.site("bi.kernel", "weight").name == "bi.forward_lstm/lstm_cell/kernel"
    assert t.site("gru/recurrent_kernel", "weight").name == "gru.recurrent_kernel"


def test_weight_fault_hits_exactly_that_variable_element(rnn):
    model, t, x, _ = rnn
    before = [np.array(v.numpy(), copy=True) for v in model.weights]
    rng = np.random.default_rng(1)
    for layer_name, ws in WEIGHTS.items():
        layer = model.get_layer(layer_name)
        for k, (name, shape) in enumerate(ws):
            idx = tuple(int(rng.integers(n)) for n in shape)
            bit = int(rng.integers(20, 32))
            with t.inject([(Fault(0, name, idx, (bit,)), None)]):
                got = t.forward(x).numpy()
            orig = layer.get_weights()
            changed = list(orig)
            changed[k] = _flip(orig[k], idx, bit)
            layer.set_weights(changed)
            want = _np(model(x, training=False))
            layer.set_weights(orig)
            np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32), err_msg=f"{name} {idx} bit {bit}")
    for v, b in zip(model.weights, before):
        assert np.array_equal(v.numpy().view(np.int32), b.view(np.int32))


def _faults(t, kind: str, per_site: int, seed: int) -> list[Fault]:
    rng = np.random.default_rng(seed)
    out = []
    for s in [s for s in t.sites() if s.kind == kind]:
        for _ in range(per_site):
            idx = tuple(int(rng.integers(n)) for n in s.shape)
            out.append(Fault(len(out), s.name, idx, (int(rng.integers(32)),), kind))
    return out


@pytest.mark.parametrize("kind", ["weight", "activation"])
def test_exact_and_fast_classes_equal_a_copy_flip_predict_loop(rnn, kind):
    model, t, x, y = rnn
    faults = _faults(t, kind, 4, seed=2 if kind == "weight" else 3)
    data = EvalSet.build(t, x, y)
    golden = _np(model(x, training=False)).reshape(len(x), -1)
    assert _by_hand(model, x).tobytes() == golden.tobytes()  # the hand-built output is the model's
    want = []
    for f in faults:
        if kind == "weight":
            layer_name, k = next((ln, [n for n, _ in ws].index(f.layer)) for ln, ws in WEIGHTS.items() if f.layer in [n for n, _ in ws])
            layer = model.get_layer(layer_name)
            orig = layer.get_weights()
            changed = list(orig)
            changed[k] = _flip(orig[k], f.index, f.bits[0])
            layer.set_weights(changed)
            faulty = _np(model(x, training=False))
            layer.set_weights(orig)
        else:
            faulty = _by_hand(model, x, f)
        want.append(_classes(golden, faulty))
    exact = ExactEngine().run(t, data, faults)
    fast_engine = FastEngine()
    fast = fast_engine.run(t, data, faults)
    for f, w, e, q in zip(faults, want, exact, fast):
        np.testing.assert_array_equal(e.codes, w, err_msg=f"exact vs plain loop: {f.describe()}")
        np.testing.assert_array_equal(q.codes, e.codes, err_msg=f"fast vs exact: {f.describe()}")
    # the GRU's torch kernels may compute the block's last rows apart from the same rows placed elsewhere (seen on
    # 2 CPU threads: rows 38 and 39 of 40); the fast engine must then leave the model to the exact engine
    h = _np(model.get_layer("td")(model.get_layer("bi")(x)))
    gru = model.get_layer("gru")
    apart = _np(gru(h)).tobytes() != _np(gru(h[::-1].copy()))[::-1].tobytes()
    mode = "node" if kind == "weight" else "act"
    if apart:
        assert fast_engine.stats["exact"] == len(faults)
    else:
        assert fast_engine.stats[mode] > 0 and fast_engine.stats[mode] + fast_engine.stats["redone"] == len(faults)
    classes = np.concatenate(want)
    assert (classes == 0).any() and (classes == 1).any() and (classes >= 2).any()


def _masked_model(sequential: bool):
    import keras
    from keras import layers

    keras.utils.set_random_seed(4)
    stack = [layers.Embedding(20, 4, mask_zero=True, name="emb"), layers.LSTM(5, return_sequences=True, name="lstm"),
             layers.GRU(5, return_sequences=True, name="gru"), layers.SimpleRNN(6, name="srnn"), layers.Dense(6, name="out")]
    if sequential:
        return keras.Sequential([keras.Input((8,), dtype="int32")] + stack)
    x = inp = keras.Input((8,), dtype="int32")
    for layer in stack:
        x = layer(x)
    return keras.Model(inp, x)


@pytest.mark.parametrize("sequential", [True, False], ids=["sequential", "functional"])
def test_activation_faults_keep_the_padding_mask(sequential):
    """Embedding(mask_zero=True) feeding recurrent layers: a fault on a padded step must stay invisible, as in the
    model itself. In Sequential models the fault points used to drop the mask, so padded steps were computed."""
    from faultlab.targets.keras import KerasTarget

    model = _masked_model(sequential)
    rng = np.random.default_rng(5)
    x = rng.integers(1, 20, size=(24, 8)).astype(np.int32)
    x[:, 5:] = 0  # three padded steps
    x[::3, 4] = 0
    y = rng.integers(0, 6, size=24)
    t = KerasTarget(model)
    t.trace(x[:1])
    data = EvalSet.build(t, x, y)
    golden = _np(model(x, training=False)).reshape(len(x), -1)
    assert _by_hand(model, x, mask=x != 0).tobytes() == golden.tobytes()
    faults = []
    for layer, width in (("emb", 4), ("lstm", 5), ("gru", 5)):
        for step in (1, 4, 6, 7):
            faults.append(Fault(len(faults), layer, (step, int(rng.integers(width))), (30,), "activation"))
    want = [_classes(golden, _by_hand(model, x, f, mask=x != 0)) for f in faults]
    exact = ExactEngine().run(t, data, faults)
    fast_engine = FastEngine()
    fast = fast_engine.run(t, data, faults)
    for f, w, e, q in zip(faults, want, exact, fast):
        np.testing.assert_array_equal(e.codes, w, err_msg=f"exact vs plain loop: {f.describe()}")
        np.testing.assert_array_equal(q.codes, e.codes, err_msg=f"fast vs exact: {f.describe()}")
        if f.index[0] >= 5:  # a padded step for every input
            assert not w.any(), f.describe()
    # masked layers can round one input's row apart by batch size, unseen by the control rows: the fast engine runs
    # these models exact (its replay read a masked pair non-critical)
    assert fast_engine.stats["exact"] == len(faults)
    assert np.concatenate(want).any()


def test_fast_engine_replays_recurrent_layers_and_wrappers_as_exact(rnn):
    """Without a GRU (whose kernels may round rows by their place), the fast engine replays the recurrent layers
    and wrappers itself, pair for pair as the exact engine, on weight and activation faults."""
    import keras
    from keras import layers

    from faultlab.targets.keras import KerasTarget

    _, _, x, y = rnn
    keras.utils.set_random_seed(6)
    inp = keras.Input((8, 8))
    h = layers.Bidirectional(layers.LSTM(5, return_sequences=True), name="bi")(inp)
    h = layers.TimeDistributed(layers.Dense(4, activation="tanh"), name="td")(h)
    h = layers.SimpleRNN(6, return_sequences=True, name="srnn")(h)
    h = layers.LSTM(7, name="lstm")(h)
    model = keras.Model(inp, layers.Dense(10, name="out")(h))
    t = KerasTarget(model)
    t.trace(x[:1])
    data = EvalSet.build(t, x, y)
    for kind in ("weight", "activation"):
        faults = _faults(t, kind, 3, seed=7)
        fast_engine = FastEngine()
        fast = fast_engine.run(t, data, faults)
        exact = ExactEngine().run(t, data, faults)
        for f, e, q in zip(faults, exact, fast):
            np.testing.assert_array_equal(q.codes, e.codes, err_msg=f"fast vs exact: {f.describe()}")
        mode = "node" if kind == "weight" else "act"
        assert fast_engine.stats[mode] > 0 and fast_engine.stats[mode] + fast_engine.stats["redone"] == len(faults)
        classes = np.concatenate([e.codes for e in exact])
        assert (classes == 0).any() and (classes > 0).any()


def test_stateful_recurrent_layer_is_refused_in_one_line(tmp_path, capsys):
    """A stateful LSTM carries its state from one call to the next (two calls on the same inputs differ), so no
    faulty run could be compared with a golden one: refused up front, naming the layer and the fix."""
    import keras
    from keras import layers

    from faultlab.cli import main

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(batch_shape=(10, 8, 8)), layers.LSTM(5, stateful=True, name="lstm"), layers.Dense(10, name="out")])
    x = np.random.default_rng(0).normal(size=(10, 8, 8)).astype(np.float32)
    assert _np(model(x)).tobytes() != _np(model(x)).tobytes()  # the premise: outputs depend on earlier calls
    p = tmp_path / "stateful.keras"
    model.save(p)
    with pytest.raises(SystemExit) as e:
        main(["layers", "--model", str(p), "--data", "digits-seq"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "lstm" in err and "stateful" in err and "stateful=False" in err, err


def test_layers_with_several_outputs_fault_their_first(rnn):
    """Bidirectional(merge_mode=None) returns [forward, backward] and LSTM(return_state=True) [output, h, c]: the
    activation site is the first tensor, and faulting it equals the graph computed by hand with that tensor flipped."""
    import keras
    import torch
    from keras import layers

    from faultlab.targets.keras import KerasTarget

    _, _, x, y = rnn
    x, y = x[:30], y[:30]
    keras.utils.set_random_seed(2)
    lay = dict(bi=layers.Bidirectional(layers.LSTM(4, return_sequences=True), merge_mode=None, name="bi"), cat=layers.Concatenate(name="cat"),
               ls=layers.LSTM(5, return_state=True, name="ls"), add=layers.Add(name="add"), cat2=layers.Concatenate(name="cat2"), out=layers.Dense(10, name="out"))

    def graph(h, hook=lambda name, v: v):
        f, b = lay["bi"](h)
        c = hook("cat", lay["cat"]([hook("bi", f), b]))
        o, s, cc = lay["ls"](c)
        a = hook("add", lay["add"]([hook("ls", o), s]))
        return hook("out", lay["out"](hook("cat2", lay["cat2"]([a, cc]))))

    inp = keras.Input((8, 8))
    model = keras.Model(inp, graph(inp))
    t = KerasTarget(model)
    t.trace(x[:1])
    acts = [(s.name, s.shape) for s in t.sites() if s.kind == "activation"]
    assert acts == [("bi", (8, 4)), ("cat", (8, 8)), ("ls", (5,)), ("add", (5,)), ("cat2", (10,)), ("out", (10,))]
    rng = np.random.default_rng(0)
    faults = [Fault(4 * j + i, name, tuple(int(rng.integers(n)) for n in shape), (int(rng.integers(32)),), "activation")
              for j, (name, shape) in enumerate(acts) for i in range(4)]
    data = EvalSet.build(t, x, y)
    with torch.no_grad():
        golden = _np(graph(keras.ops.convert_to_tensor(x))).reshape(len(x), -1)
    assert golden.tobytes() == _np(model(x)).reshape(len(x), -1).tobytes()
    exact = ExactEngine().run(t, data, faults)
    fast = FastEngine().run(t, data, faults)
    for f, e, q in zip(faults, exact, fast):
        def hook(name, v, f=f):
            if name != f.layer:
                return v
            a = _np(v).copy()
            for r in range(len(a)):
                a[r] = _flip(a[r], f.index, f.bits[0])
            return keras.ops.convert_to_tensor(a)

        with torch.no_grad():
            want = _classes(golden, _np(graph(keras.ops.convert_to_tensor(x), hook)).reshape(len(x), -1))
        np.testing.assert_array_equal(e.codes, want, err_msg=f"exact vs by hand: {f.describe()}")
        np.testing.assert_array_equal(q.codes, e.codes, err_msg=f"fast vs exact: {f.describe()}")
    classes = np.concatenate([e.codes for e in exact])
    assert (classes == 0).any() and (classes > 0).any()
