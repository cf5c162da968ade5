"""Small Keras models and independent helpers for the Keras target tests (8x8 digits-sized inputs)."""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np


def sequential_cnn(seed: int = 0):
    """InjectTF2-style sequential CNN on (8, 8, 1) inputs."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(4, 3, activation="relu", name="conv2d"),
            layers.MaxPooling2D(2, name="max_pooling2d"),
            layers.Flatten(name="flatten"),
            layers.Dense(16, activation="relu", name="dense"),
            layers.Dropout(0.2, name="dropout"),
            layers.Dense(10, name="dense_1"),
            layers.Softmax(name="softmax"),
        ]
    )


def branching_cnn(seed: int = 0):
    """Functional model with a residual add, a concatenation and an inverted-residual block."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="stem")(inp)
    r = layers.Conv2D(6, 3, padding="same", activation="relu", name="res_conv")(x)
    x = layers.Add(name="res_add")([x, r])
    a = layers.Conv2D(3, 1, activation="relu", name="branch_a")(x)
    b = layers.Conv2D(3, 3, padding="same", activation="relu", name="branch_b")(x)
    x = layers.Concatenate(name="concat")([a, b])
    e = layers.Conv2D(12, 1, activation="relu", name="expand")(x)
    d = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="depthwise")(e)
    p = layers.Conv2D(6, 1, name="project")(d)
    x = layers.Add(name="ir_add")([x, p])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="branchy")


def fit_briefly(model, x: np.ndarray, y: np.ndarray, epochs: int = 4):
    """A few epochs so outputs depend on the input (fault outcomes are then not all alike)."""
    import keras

    loss = "sparse_categorical_crossentropy" if type(model.layers[-1]).__name__ == "Softmax" else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss=loss)
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=0)
    return model


def replaced(values: np.ndarray, index: tuple, bits: tuple[int, ...]) -> np.ndarray:
    """``values`` with the given bits of one element flipped, by Python integer arithmetic on its bytes."""
    out = np.array(values, dtype=np.float32, copy=True)
    raw = int.from_bytes(out[index].tobytes(), "little")
    for b in bits:
        raw ^= 1 << b
    out[index] = np.frombuffer(raw.to_bytes(4, "little"), dtype=np.float32)[0]
    return out


def model_with_replacement(model, layer_name: str, index: tuple, value: float):
    """An independent clone (sharing layers) whose ``layer_name`` output has ``index`` replaced by ``value``.

    Uses ``keras.ops.where`` with a constant mask, not faultlab's fault points.
    """
    import keras

    class Replace(keras.layers.Layer):
        def call(self, t):
            shape = tuple(t.shape[1:])
            mask = np.zeros((1,) + shape, dtype=bool)
            mask[(0,) + tuple(index)] = True
            const = np.zeros((1,) + shape, dtype=np.float32)
            const[(0,) + tuple(index)] = value
            return keras.ops.where(keras.ops.convert_to_tensor(mask), keras.ops.convert_to_tensor(const), t)

    def call_function(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        return Replace()(out) if layer.name == layer_name else out

    if isinstance(model, keras.Sequential):
        x = inputs = keras.Input(tuple(model.inputs[0].shape[1:]))
        for layer in model.layers:
            x = call_function(layer, x)
        return keras.Model(inputs, x)
    return keras.models.clone_model(model, clone_function=lambda l: l, call_function=call_function)


def layer_output(model, layer_name: str, x: np.ndarray) -> np.ndarray:
    """One layer's output for ``x``, through a probe model on the original graph."""
    import keras

    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, model.get_layer(layer_name).output)
    return np.asarray(keras.ops.convert_to_numpy(probe(x, training=False)))


def predict(model, x: np.ndarray) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
