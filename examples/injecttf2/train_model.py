"""The InjectTF2 example model: a small CNN trained on faultlab's offline MNIST, saved as model.keras.

Layer names are exactly InjectTF2's (conv2d, max_pooling2d, flatten, dense, dropout, dense_1,
softmax), so its YAML configs run unchanged. Trains in well under a minute on a laptop CPU.

Example: python examples/injecttf2/train_model.py --out examples/injecttf2/model.keras
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")


def build_model():
    """conv2d -> max_pooling2d -> flatten -> dense -> dropout -> dense_1 -> softmax."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(8, 3, activation="relu", name="conv2d"),
            layers.MaxPooling2D(2, name="max_pooling2d"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", name="dense"),
            layers.Dropout(0.2, name="dropout"),
            layers.Dense(10, name="dense_1"),
            layers.Softmax(name="softmax"),
        ],
        name="injecttf2_mnist",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("model.keras"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import keras

    from faultlab.datasets import load_dataset

    keras.utils.set_random_seed(args.seed)
    train = load_dataset("mnist", "train").channels_last()
    test = load_dataset("mnist", "test").channels_last()
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train.x, train.y, epochs=args.epochs, batch_size=128, verbose=0)
    _, acc = model.evaluate(test.x, test.y, verbose=0)
    model.save(args.out)
    print(f"test accuracy {100 * acc:.2f}% on {len(test)} {test.name} digits; saved {args.out}")


if __name__ == "__main__":
    main()
