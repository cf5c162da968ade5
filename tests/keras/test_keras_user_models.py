"""Models as users bring them, checked pair by pair against a plain loop written without faultlab.

The loop builds the model's output from its layers' outputs by hand (one layer after the other), writes the
fault into one layer's output with numpy integer views of the stored bits, and classifies golden vs faulty
with its own code. The exact engine must give the same class for every (fault, input) pair, and the fast
engine the same as the exact one.
"""
from __future__ import annotations

import numpy as np
import pytest

from faultlab.engine import EvalSet
from faultlab.engine.exact import ExactEngine
from faultlab.engine.fast import FastEngine
from faultlab.faults import Fault

_UINT = {2: np.uint16, 4: np.uint32}


def _to_np(t) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(t))


def _from_np(a: np.ndarray, like):
    import torch

    if like.dtype == torch.bfloat16:  # numpy (ml_dtypes) bfloat16 -> torch through the 16-bit pattern
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _faulted(values: np.ndarray, index: tuple, model: str, bits: tuple[int, ...]) -> np.ndarray:
    out = np.array(values, copy=True)
    raw = out.view(_UINT[out.dtype.itemsize])
    mask = sum(1 << b for b in bits)
    if model == "flip":
        raw[index] ^= mask
    elif model == "stuck1":
        raw[index] |= mask
    else:
        raw[index] &= ~np.array(mask, dtype=raw.dtype)
    return out


def _classes(golden: np.ndarray, faulty: np.ndarray, k: int = 5) -> np.ndarray:
    out = []
    for g, f in zip(golden.reshape(len(golden), -1), faulty.reshape(len(faulty), -1)):
        assert g.dtype == f.dtype
        if g.tobytes() == f.tobytes():
            out.append(0)  # masked
            continue
        f64, g64 = f.astype(np.float64), g.astype(np.float64)
        if not np.isfinite(f64).all():
            out.append(4)  # DUE
            continue
        top = int(np.argmax(g64))
        if int(np.argmax(f64)) == top:
            out.append(1)  # non-critical
            continue
        ahead = sum(1 for c in range(len(f64)) if f64[c] > f64[top] or (f64[c] == f64[top] and c < top))
        out.append(3 if ahead >= min(k, len(f64)) else 2)
    return np.array(out, dtype=np.uint8)


def _by_hand(model, x, fault: Fault | None = None) -> np.ndarray:
    """A Sequential model's output computed layer by layer, with ``fault`` written into one layer's output."""
    import torch

    h = x
    with torch.no_grad():
        for layer in model.layers:
            h = layer(h, training=False) if "training" in getattr(layer, "_call_context_args", ()) else layer(h)
            if fault is not None and layer.name == fault.layer:
                a = _to_np(h)
                for r in range(len(a)):
                    a[r] = _faulted(a[r], fault.index, fault.model, fault.bits)
                h = _from_np(a, h)
    return _to_np(h)


def _half_model(policy: str):
    import keras
    from keras import layers

    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(3)
        return keras.Sequential(
            [keras.Input((8, 8, 1)), layers.Flatten(name="flat"), layers.Dense(16, activation="relu", name="dense"), layers.Dense(10, name="logits")]
        )
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("policy,dtype", [("bfloat16", "bfloat16"), ("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")])
def test_half_precision_activation_faults_hit_the_stored_bits(policy, dtype, digits):
    """A float16/bfloat16 layer output is faulted in its own 16 bits, and the faulty scores keep the model's dtype.

    Fault points used to autocast each output to float32: sites read float32 (bits 16-31 accepted), the fault hit a
    float32 copy, and the faulty scores came back float32 against float16/bfloat16 golden ones, so no pair was ever
    masked and the fast engine (which faults the real tensors) disagreed with the exact one.
    """
    from faultlab.targets.keras import KerasTarget

    model = _half_model(policy)
    x = digits[1].channels_last().x[:24]
    y = digits[1].y[:24]
    t = KerasTarget(model)
    t.trace(x[:1])
    acts = {s.name: s for s in t.sites() if s.kind == "activation"}
    assert {s.dtype for s in acts.values()} == {dtype}
    assert all(s.bit_width == 16 for s in acts.values())

    data = EvalSet.build(t, x, y)
    xs = data.x
    golden = _by_hand(model, xs)
    assert golden.tobytes() == _to_np(model(xs, training=False)).tobytes()  # the hand-built output is the model's

    rng = np.random.default_rng(0)
    faults = []
    for i in range(24):
        s = acts[("flat", "dense", "logits")[i % 3]]
        idx = tuple(int(v) for v in np.unravel_index(int(rng.integers(s.numel)), s.shape))
        model_ = ("flip", "flip", "stuck0", "stuck1")[i % 4]
        bits = (int(rng.integers(16)),) if i % 5 else (int(rng.integers(7)), int(rng.integers(7, 16)))
        faults.append(Fault(i, s.name, idx, tuple(sorted(set(bits))), "activation", model_))
    want = [_classes(golden, _by_hand(model, xs, f)) for f in faults]
    exact = ExactEngine().run(t, data, faults)
    fast = FastEngine().run(t, data, faults)
    for f, w, e, q in zip(faults, want, exact, fast):
        np.testing.assert_array_equal(e.codes, w, err_msg=f"exact vs plain loop: {f.describe()}")
        np.testing.assert_array_equal(q.codes, e.codes, err_msg=f"fast vs exact: {f.describe()}")
    classes = np.concatenate(want)
    assert (classes == 0).any() and (classes > 0).any()  # both masked and visible faults were compared

    # the faulty scores keep the model's own dtype
    with t.inject([(faults[0], None)]):
        assert str(t.forward(xs).dtype).replace("torch.", "") == str(model.outputs[0].dtype)


def test_fast_engine_leaves_half_precision_keras_models_to_the_exact_engine(digits):
    """A mixed_bfloat16 CNN: a faulty row near overflow came out DUE in the exact engine's 48-row batch and SDC-1 in the
    fast engine's 64-row pass (the bfloat16 Dense kernel changes with the row count; the clean control rows stayed
    bit-identical). Half-precision Keras models therefore run exact, and every pair matches the plain loop."""
    import keras
    import torch
    from keras import layers

    from faultlab.targets.keras import KerasTarget

    torch.set_num_threads(1)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(15)
        model = keras.Sequential(
            [keras.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu", name="conv"), layers.Flatten(name="flat"),
             layers.Dense(16, activation="relu", name="dense"), layers.Dense(10, name="logits", dtype="float32")]
        )
    finally:
        keras.config.set_dtype_policy("float32")
    train, test = digits
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train.x, train.y, epochs=3, batch_size=128, verbose=0)
    x, y = test.channels_last().x[:48], test.y[:48]
    t = KerasTarget(model)
    t.trace(x[:1])
    data = EvalSet.build(t, x, y)
    faults = [Fault(0, "conv", (0, 2, 2), (14,), "activation", "stuck1"), Fault(1, "flat", (59,), (14,), "activation", "flip"),
              Fault(2, "dense", (5,), (13,), "activation", "stuck1"), Fault(3, "conv", (3, 1, 2), (9,), "activation", "flip")]
    golden = _by_hand(model, data.x)
    want = [_classes(golden, _by_hand(model, data.x, f)) for f in faults]
    fast = FastEngine()
    got = fast.run(t, data, faults)
    exact = ExactEngine().run(t, data, faults)
    assert fast.stats["exact"] == len(faults)
    for f, w, e, q in zip(faults, want, exact, got):
        np.testing.assert_array_equal(e.codes, w, err_msg=f"exact vs plain loop: {f.describe()}")
        np.testing.assert_array_equal(q.codes, w, err_msg=f"fast vs plain loop: {f.describe()}")
