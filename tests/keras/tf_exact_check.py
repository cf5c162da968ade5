"""Exact-engine classes on the tensorflow backend against a plain loop written without faultlab; prints JSON (one line).

    KERAS_BACKEND=tensorflow python tf_exact_check.py

For a small CNN and an LSTM model (briefly trained on digits / digit rows), a padded Embedding-LSTM-GRU model and
Bidirectional(GRU) + TimeDistributed(Dense) + SimpleRNN (untrained): weight faults against a struct bit flip
written with ``set_weights`` and a prediction, activation faults against the output built layer by layer with the
flip written into one layer's output; every (fault, input) class from a classification loop of its own. Prints,
per model, the pairs compared, the mismatches (first few), the class histogram and whether the weights came back.
"""
from __future__ import annotations

import json
import struct

import numpy as np


def _flip(values: np.ndarray, index: tuple, bit: int) -> np.ndarray:
    out = np.array(values, dtype=np.float32, copy=True)
    raw = struct.unpack("<I", struct.pack("<f", float(out[index])))[0] ^ (1 << bit)
    out[index] = struct.unpack("<f", struct.pack("<I", raw))[0]
    return out


def _classes(golden: np.ndarray, faulty: np.ndarray, k: int = 5) -> list[int]:
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
    return out


def _models():
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    cnn = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu", name="conv"), layers.MaxPooling2D(2, name="pool"),
        layers.Flatten(name="flat"), layers.Dense(16, activation="relu", name="dense"), layers.Dropout(0.2, name="drop"),
        layers.Dense(10, name="logits"),
    ])
    lstm = keras.Sequential([
        keras.Input((8, 8)), layers.LSTM(8, return_sequences=True, name="lstm_seq"), layers.LSTM(6, name="lstm"),
        layers.Dense(10, name="logits"),
    ])
    masked = keras.Sequential([
        keras.Input((8,), dtype="int32"), layers.Embedding(20, 4, mask_zero=True, name="emb"), layers.LSTM(5, return_sequences=True, name="lstm_seq"),
        layers.GRU(6, name="gru"), layers.Dense(6, name="logits"),
    ])
    wrappers = keras.Sequential([
        keras.Input((8, 8)), layers.Bidirectional(layers.GRU(4, return_sequences=True), name="bi"),
        layers.TimeDistributed(layers.Dense(5, activation="tanh"), name="td"), layers.SimpleRNN(6, name="srnn"), layers.Dense(10, name="logits"),
    ])
    return {"cnn": (cnn, "digits"), "lstm": (lstm, "digits-seq"), "masked": (masked, "tokens"), "wrappers": (wrappers, "digits-seq-untrained")}


def _by_hand(model, x: np.ndarray, fault=None, mask=None) -> np.ndarray:
    """The model's output layer by layer (``mask`` passed explicitly to recurrent layers), ``fault`` flipped in."""
    import keras

    h = keras.ops.convert_to_tensor(x)
    for layer in model.layers:
        kw = {"training": False} if "training" in getattr(layer, "_call_context_args", ()) else {}
        if mask is not None and type(layer).__name__ in ("LSTM", "GRU", "SimpleRNN"):
            kw["mask"] = keras.ops.convert_to_tensor(mask)
        h = layer(h, **kw)
        if fault is not None and layer.name == fault.layer:
            a = np.array(keras.ops.convert_to_numpy(h))
            for r in range(len(a)):
                a[r] = _flip(a[r], fault.index, fault.bits[0])
            h = keras.ops.convert_to_tensor(a)
    return np.asarray(keras.ops.convert_to_numpy(h)).reshape(len(x), -1)


def check(name: str, model, data: str) -> dict:
    import keras

    from faultlab.datasets import load_dataset
    from faultlab.engine import EvalSet
    from faultlab.engine.exact import ExactEngine
    from faultlab.engine.fast import FastEngine
    from faultlab.faults import Fault
    from faultlab.targets.keras import KerasTarget

    if data == "tokens":  # padded token sequences (steps 5..7 are padding), untrained
        tok = np.random.default_rng(5).integers(1, 20, size=(30, 8)).astype(np.int32)
        tok[:, 5:] = 0
        x, y = tok, np.random.default_rng(6).integers(0, 6, size=30)
    elif data == "digits-seq-untrained":
        test = load_dataset("digits-seq", "test")
        x, y = test.x[:30], test.y[:30]
    else:
        train = load_dataset(data, "train")
        test = load_dataset(data, "test")
        xtr = train.channels_last().x if data == "digits" else train.x
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(xtr, train.y, epochs=2, batch_size=128, verbose=0)
        x = (test.channels_last().x if data == "digits" else test.x)[:30]
        y = test.y[:30]
    t = KerasTarget(model)
    t.trace(x[:1])
    before = [np.array(v.numpy(), copy=True) for v in model.weights]
    rng = np.random.default_rng(11)
    faults = []
    for s in t.sites():
        n_random = 3 if data in ("digits", "digits-seq") else 1  # fewer on the models with many small variables
        for bit in [int(rng.integers(32)) for _ in range(n_random)] + [30]:  # bit 30: Inf, NaN, DUE
            idx = tuple(int(rng.integers(n)) for n in s.shape)
            faults.append(Fault(len(faults), s.name, idx, (bit,), s.kind))
    if data == "tokens":  # faults on padded steps: masked in the model itself
        faults += [Fault(len(faults) + i, name, (step, 1), (30,), "activation") for i, (name, step) in enumerate([("emb", 5), ("emb", 7), ("lstm_seq", 6)])]
    data_set = EvalSet.build(t, x, y)
    results = ExactEngine().run(t, data_set, faults)
    fast = FastEngine().run(t, data_set, faults)  # runs exact on this backend
    fast_same = all(np.array_equal(a.codes, b.codes) for a, b in zip(fast, results))
    golden = np.asarray(keras.ops.convert_to_numpy(model(x, training=False))).reshape(len(x), -1)
    hand_is_model = _by_hand(model, x, mask=x != 0 if data == "tokens" else None).tobytes() == golden.tobytes()
    weight_sites = {}
    for layer in model.layers:
        names = [s.name for s in t.sites() if s.kind == "weight" and s.layer == layer.name]
        for k, n in enumerate(names):
            weight_sites[n] = (layer, k)
    mismatches, hist, pairs = [], [0] * 5, 0
    for f, r in zip(faults, results):
        if f.site == "weight":
            layer, k = weight_sites[f.layer]
            orig = layer.get_weights()
            changed = list(orig)
            changed[k] = _flip(orig[k], f.index, f.bits[0])
            layer.set_weights(changed)
            faulty = np.asarray(keras.ops.convert_to_numpy(model(x, training=False))).reshape(len(x), -1)
            layer.set_weights(orig)
        else:
            faulty = _by_hand(model, x, f, mask=x != 0 if data == "tokens" else None)
        want = _classes(golden, faulty)
        got = [int(c) for c in r.codes]
        pairs += len(want)
        for c in want:
            hist[c] += 1
        if got != want:
            mismatches.append({"fault": f.describe(), "exact": got, "loop": want})
    restored = all(np.array_equal(v.numpy().view(np.int32), b.view(np.int32)) for v, b in zip(model.weights, before))
    kinds = sorted({f.site for f in faults})
    padded = [[int(c) for c in r.codes] for r in results[-3:]] if data == "tokens" else []
    return {"model": name, "backend": keras.backend.backend(), "pairs": pairs, "mismatches": mismatches[:5], "n_mismatch": len(mismatches),
            "hist": hist, "restored": restored, "hand_is_model": hand_is_model, "kinds": kinds, "fast_same": fast_same, "padded": padded}


if __name__ == "__main__":
    print(json.dumps([check(name, m, d) for name, (m, d) in _models().items()]))
