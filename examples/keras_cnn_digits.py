"""A small Keras CNN on scikit-learn's 8x8 digits (channels last).

    faultlab mutate run --models-file examples/keras_cnn_digits.py --model CNN1 \\
        --operator activation --runs 5 --logs-dir runs/cnn
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")


def _data(split: str):
    from faultlab.datasets import load_dataset

    ds = load_dataset("digits", split=split).channels_last()
    return ds.x, ds.y


def evaluation_data():
    """The held-out digits (N, 8, 8, 1) and labels."""
    return _data("test")


def CNN1(filters=8, kernel_size=3, activation="relu", kernel_initializer="he_uniform", use_bias=True, dropout=0.0,
         kernel_regularizer=None, optimizer="adam", learning_rate=1e-2, batch_size=64, epochs=3, patience=2):
    """Train conv-pool-dense on digits; returns ``(model, history)`` with ``accuracy`` and ``val_accuracy``."""
    import keras

    x_tr, y_tr = _data("train")
    x_te, y_te = _data("test")
    model = keras.Sequential([
        keras.Input(shape=x_tr.shape[1:]),
        keras.layers.Conv2D(filters, kernel_size, padding="same", activation=activation, use_bias=use_bias,
                            kernel_initializer=kernel_initializer, kernel_regularizer=kernel_regularizer),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dropout(dropout),
        keras.layers.Dense(10, activation="softmax", use_bias=use_bias, kernel_initializer=kernel_initializer),
    ])
    opt = keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": learning_rate}})
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=False)
    history = model.fit(x_tr, y_tr, validation_data=(x_te, y_te), epochs=epochs, batch_size=batch_size,
                        callbacks=[stop], verbose=0)
    return model, history


MODEL_TYPES = {"CNN1": CNN1}
