"""LSTM regressor on a synthetic price-like series: the Fault Injector's ``LSTM1`` shape, loss-based.

Every keyword argument of :func:`LSTM1` is a mutation operator. The series is a geometric
random walk with a little seasonality and 5 % missing ticks encoded as 0 (so ``masking``
matters); windows of ``WINDOW`` steps predict the next value. Data comes from a fixed
generator, so only the training seed varies between runs.

    faultlab mutate run --models-file examples/lstm_price.py --model LSTM1 \\
        --operator recurrent_activation --runs 5 --logs-dir runs/lstm
"""
from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")

WINDOW = 8
BATCH_SIZE = 32
EPOCHS = 1
N_TRAIN, N_VAL = 128, 64  # multiples of BATCH_SIZE, so stateful=True works


def price_series(n: int = N_TRAIN + N_VAL + WINDOW, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Windows (N, WINDOW, 1) of a scaled price path with missing ticks as 0, and the next value (N, 1)."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0005, 0.02, size=n + 1) + 0.01 * np.sin(np.arange(n + 1) / 9.0)
    price = 100 * np.exp(np.cumsum(steps))
    scaled = 0.1 + 0.9 * (price - price.min()) / (price.max() - price.min())
    observed = scaled.copy()
    observed[rng.random(n + 1) < 0.05] = 0.0  # missing ticks
    x = np.stack([observed[i : i + WINDOW] for i in range(n - WINDOW + 1)])[:, :, None].astype("float32")
    y = scaled[WINDOW : n + 1][:, None].astype("float32")
    k = min(len(x), len(y))
    return x[:k], y[:k]


def _stateful_lstm(keras, batch_size: int, **layer_kwargs):
    """An LSTM that carries its state from batch to batch (``stateful=True``).

    Keras' own ``stateful=True`` works on the TensorFlow and JAX backends; on the torch
    backend it updates the state in place inside the autograd graph and training fails, so
    there this layer feeds a copy of the previous batch's final state in as the initial state
    (truncated back-propagation through time, as TensorFlow does).
    """
    if keras.backend.backend() != "torch":
        return keras.layers.LSTM(stateful=True, **layer_kwargs)
    units = layer_kwargs["units"]

    class CarryStateLSTM(keras.layers.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = keras.layers.LSTM(return_state=True, **layer_kwargs)
            self.h = self.add_weight(shape=(batch_size, units), initializer="zeros", trainable=False, name="h")
            self.c = self.add_weight(shape=(batch_size, units), initializer="zeros", trainable=False, name="c")

        def call(self, x, training=None, mask=None):
            h0, c0 = keras.ops.copy(self.h.value), keras.ops.copy(self.c.value)
            out, h, c = self.lstm(x, initial_state=[h0, c0], training=training, mask=mask)
            self.h.assign(keras.ops.stop_gradient(h))
            self.c.assign(keras.ops.stop_gradient(c))
            return out

    return CarryStateLSTM()


def LSTM1(depth=5, bidirectional=False, backbone_activation="tanh", recurrent_activation="sigmoid",
          kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", recurrent_dropout=0., dropout=0.,
          go_backwards=False, stateful=False, unroll=False, num_units=50, masking=False, kernel_regularizer=None,
          recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None):
    """Train a stacked LSTM for ``EPOCHS`` epochs; returns ``(model, history)`` with ``loss`` and ``val_loss``."""
    import keras

    x, y = price_series()
    x_tr, y_tr = x[:N_TRAIN], y[:N_TRAIN]
    x_va, y_va = x[N_TRAIN : N_TRAIN + N_VAL], y[N_TRAIN : N_TRAIN + N_VAL]
    inp = keras.Input(batch_shape=(BATCH_SIZE, WINDOW, 1)) if stateful else keras.Input(shape=(WINDOW, 1))
    h = keras.layers.Masking(mask_value=0.0)(inp) if masking else inp
    if stateful and bidirectional and keras.backend.backend() == "torch":
        raise ValueError("stateful=True with bidirectional=True needs the tensorflow or jax Keras backend")
    for i in range(depth):
        layer_kwargs = dict(
            units=num_units, activation=backbone_activation, recurrent_activation=recurrent_activation,
            kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
            recurrent_dropout=recurrent_dropout, dropout=dropout, go_backwards=go_backwards, unroll=unroll, kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
            return_sequences=i < depth - 1,
        )
        layer = _stateful_lstm(keras, BATCH_SIZE, **layer_kwargs) if stateful else keras.layers.LSTM(**layer_kwargs)
        h = keras.layers.Bidirectional(layer)(h) if bidirectional else layer(h)
    model = keras.Model(inp, keras.layers.Dense(1)(h))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    history = model.fit(x_tr, y_tr, validation_data=(x_va, y_va), epochs=EPOCHS, batch_size=BATCH_SIZE,
                        shuffle=not stateful, verbose=0)
    return model, history


MODEL_TYPES = {"LSTM1": LSTM1}
