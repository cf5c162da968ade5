"""GRU classifier on scikit-learn's digits read as sequences (8 steps x 8 pixels).

``evaluation_data()`` gives faultlab the held-out digits so it can record per-input
outcomes (for triviality); the same data is the validation set, so ``val_accuracy``
(the default metric) is test-set accuracy.

    faultlab mutate run --models-file examples/gru_digits.py --model GRU1 \\
        --operator num_units --operator recurrent_activation --runs 5 --logs-dir runs/gru
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")


def _data(split: str):
    from faultlab.datasets import load_dataset

    ds = load_dataset("digits-seq", split=split)
    return ds.x, ds.y


def evaluation_data():
    """The held-out digits (N, 8, 8) and labels."""
    return _data("test")


def GRU1(num_units=32, depth=1, activation="tanh", recurrent_activation="sigmoid", kernel_initializer="glorot_uniform",
         recurrent_initializer="orthogonal", dropout=0.0, recurrent_dropout=0.0, bidirectional=False, go_backwards=False,
         optimizer="adam", learning_rate=1e-2, batch_size=64, epochs=2, kernel_regularizer=None):
    """Train a GRU digit classifier; returns ``(model, history)`` with ``accuracy`` and ``val_accuracy``."""
    import keras

    x_tr, y_tr = _data("train")
    x_te, y_te = _data("test")
    inp = keras.Input(shape=x_tr.shape[1:])
    h = inp
    for i in range(depth):
        layer = keras.layers.GRU(num_units, activation=activation, recurrent_activation=recurrent_activation,
                                 kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                                 dropout=dropout, recurrent_dropout=recurrent_dropout, go_backwards=go_backwards,
                                 kernel_regularizer=kernel_regularizer, return_sequences=i < depth - 1)
        h = keras.layers.Bidirectional(layer)(h) if bidirectional else layer(h)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    opt = keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": learning_rate}})
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_tr, y_tr, validation_data=(x_te, y_te), epochs=epochs, batch_size=batch_size, verbose=0)
    return model, history


MODEL_TYPES = {"GRU1": GRU1}
