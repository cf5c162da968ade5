"""One analysis session: a model, its train/test data, their profiles and one abstraction.

This is what every ``faultlab rnn`` analysis command starts from; library users can
build the pieces themselves or call :func:`build_analysis`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..datasets import Dataset, load_dataset
from ..errors import DataError
from .abstraction import Abstraction
from .profile import Profile, profile_model

log = logging.getLogger("faultlab")


def abstraction_file(build_dir: str | Path, components: int) -> Path:
    """Where ``faultlab rnn build`` stores the abstraction with ``components`` GMM components."""
    return Path(build_dir) / f"abstraction_m{components:03d}.npz"


def load_split_data(data: str, test_data: str | None = None, *, limit: int | None = None) -> tuple[Dataset, Dataset]:
    """Training and test sequences: the bundled splits of ``data``, or two ``.npz`` files."""
    if test_data is None and str(data).endswith(".npz"):
        raise DataError(f"--data {data}: an .npz file has no train/test split; also pass --test-data TEST.npz")
    train = load_dataset(data, "train").head(limit)
    test = load_dataset(test_data if test_data is not None else data, "test").head(limit)
    for ds in (train, test):
        if ds.x.ndim != 3:
            raise DataError(f"{ds.name}: recurrent analysis needs sequences (N, T, F), got shape {ds.x.shape}; use a -seq dataset")
    return train, test


@dataclass
class Analysis:
    """A profiled model with its abstraction; traces are computed on first use."""

    model: Any
    train: Dataset
    test: Dataset
    train_profile: Profile
    test_profile: Profile
    abstraction: Abstraction
    n_classes: int = field(default=0)

    def __post_init__(self) -> None:
        if not self.n_classes:
            self.n_classes = max(self.train_profile.n_classes, self.train.n_classes, self.test.n_classes)

    @cached_property
    def train_traces(self) -> np.ndarray:
        return self.abstraction.traces(self.train_profile.hidden)

    @cached_property
    def test_traces(self) -> np.ndarray:
        return self.abstraction.traces(self.test_profile.hidden)

    @property
    def n_states(self) -> int:
        return self.abstraction.n_states


def build_analysis(
    *,
    model: Any,
    train: Dataset,
    test: Dataset,
    pca_dims: int | None = None,
    components: int,
    seed: int = 0,
    build_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Analysis:
    """Profile ``model`` on both splits and fit (or load from ``build_dir``) the abstraction.

    With ``build_dir``, the abstraction stored there by ``faultlab rnn build`` for
    ``components`` is reused when it exists (its PCA size wins); otherwise one is fit
    on the training profile with ``pca_dims`` (default 10, capped at the hidden size).
    """
    total = 3
    train_profile = profile_model(model, train.x)
    if progress:
        progress(1, total)
    test_profile = profile_model(model, test.x)
    if progress:
        progress(2, total)
    stored = abstraction_file(build_dir, components) if build_dir is not None else None
    if stored is not None and stored.exists():
        abstraction = Abstraction.load(stored)
        if pca_dims is not None and pca_dims != abstraction.pca_dims:
            log.warning("%s has %d PCA dimensions; ignoring --pca %d", stored, abstraction.pca_dims, pca_dims)
    else:
        if stored is not None:
            log.warning("%s not found; fitting a new abstraction", stored)
        k = pca_dims if pca_dims is not None else min(10, train_profile.hidden.shape[2])
        abstraction = Abstraction(pca_dims=k, components=components, seed=seed).fit(train_profile.hidden)
    if progress:
        progress(3, total)
    return Analysis(model=model, train=train, test=test, train_profile=train_profile,
                    test_profile=test_profile, abstraction=abstraction)


__all__ = ["Analysis", "build_analysis", "abstraction_file", "load_split_data"]
