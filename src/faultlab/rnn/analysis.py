"""One analysis session: a model, its train/test data, their profiles and one abstraction.

This is what every ``faultlab rnn`` analysis command starts from; library users can
build the pieces themselves or call :func:`build_analysis`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..datasets import BUNDLED, Dataset, load_dataset
from ..errors import DataError, FaultlabError
from .abstraction import Abstraction
from .profile import Profile, profile_model

log = logging.getLogger("faultlab")


def abstraction_file(build_dir: str | Path, components: int) -> Path:
    """Where ``faultlab rnn build`` stores the abstraction with ``components`` GMM components."""
    return Path(build_dir) / f"abstraction_m{components:03d}.npz"


def check_limit(limit: int | None) -> None:
    """``--limit`` must keep at least one input."""
    if limit is not None and limit < 1:
        raise DataError(f"--limit {limit}: must be >= 1 (the number of training and test inputs to use), or leave it out for all")


def load_sequences(spec: str, split: str, *, option: str = "--data") -> Dataset:
    """One split of ``spec`` as finite sequences (N, T, F); errors name ``option`` and the file."""
    s = str(spec)
    if s not in BUNDLED and not Path(s).is_file():
        what = "is a directory, not" if Path(s).is_dir() else "no such file; expected"
        raise DataError(f"{option} {s}: {what} an .npz with arrays x and y, or one of {', '.join(BUNDLED)}")
    ds = load_dataset(s, split)  # type: ignore[arg-type]
    if ds.x.ndim != 3:
        raise DataError(f"{option} {s}: recurrent analysis needs sequences (N, T, F), got shape {ds.x.shape}; use a -seq dataset")
    if ds.x.dtype.kind == "f" and not np.all(np.isfinite(ds.x)):
        bad = int((~np.isfinite(ds.x)).reshape(len(ds.x), -1).any(axis=1).sum())
        raise DataError(f"{option} {s}: x holds NaN or infinite values ({bad} of {len(ds.x)} sequences); clean or drop them")
    return ds


def load_split_data(data: str, test_data: str | None = None, *, limit: int | None = None) -> tuple[Dataset, Dataset]:
    """Training and test sequences: the bundled splits of ``data``, or two ``.npz`` files."""
    check_limit(limit)
    if test_data is None and str(data).endswith(".npz"):
        load_sequences(data, "train")  # a missing file says so first
        raise DataError(f"--data {data}: an .npz file has no train/test split; also pass --test-data TEST.npz")
    train = load_sequences(data, "train").head(limit)
    test = (load_sequences(test_data, "test", option="--test-data") if test_data is not None
            else load_sequences(data, "test")).head(limit)
    return train, test


def check_same_shape(train: Dataset, test: Dataset, *, source: str) -> None:
    """Test sequences must have the training sequences' features per step (``source`` names the test data)."""
    if train.x.shape[2] != test.x.shape[2]:
        raise DataError(f"{source}: has {test.x.shape[2]} features per step, the training data {train.x.shape[2]}; "
                        "pass test data of the same kind")


def check_fits(model: Any, data: Dataset, *, source: str) -> tuple[int, int]:
    """Check that ``model`` can run on ``data`` and that its labels are the model's classes.

    Profiles one sequence (cheap) so that a mismatch is one line naming ``source``
    (e.g. ``"--data mnist-seq"``) instead of a framework traceback; returns
    ``(hidden size, number of classes)``.
    """
    from .subjects import check_labels, model_io, one_line

    feats, _ = model_io(model)
    got = int(data.x.shape[2])
    try:
        prof = profile_model(model, data.x[:1])
    except FaultlabError:
        raise
    except Exception as e:  # framework errors: shapes, dtypes
        if feats is not None and feats != got:
            raise DataError(f"{source}: the data has {got} features per step, the model expects {feats}; "
                            "pass the data the model was trained on") from e
        raise DataError(f"{source}: the model cannot run on this data of shape {data.x.shape[1:]} per sequence "
                        f"({type(e).__name__}: {one_line(e, 160)}); pass the data the model was trained on") from e
    n_classes = prof.n_classes
    check_labels(data, n_classes=n_classes, source=source, why=f"the model has {n_classes} classes")
    return int(prof.hidden.shape[2]), n_classes


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file (a model's weights), to recognise it after a move."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_build_dir(build_dir: str | Path, *, model_path: str | Path) -> dict[str, Any]:
    """Refuse a ``--build`` directory that does not exist or was built from another model; returns its build.json."""
    d = Path(build_dir)
    meta_path = d / "build.json"
    if not d.is_dir():
        raise DataError(f"--build {d}: no such directory; pass a directory written by `faultlab rnn build`, or leave --build out")
    if not meta_path.is_file():
        raise DataError(f"--build {d}: has no build.json, so it was not written by `faultlab rnn build`; rerun the build or leave --build out")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"--build {d}: build.json is unreadable ({type(e).__name__}); rerun `faultlab rnn build` into a new directory") from e
    model_path = Path(model_path).resolve()
    recorded = meta.get("model") if isinstance(meta, dict) else None
    digest = meta.get("model_sha256") if isinstance(meta, dict) else None
    if digest is not None and model_path.is_file():
        same = file_digest(model_path) == digest
    else:
        same = recorded is None or Path(recorded) == model_path
    if not same:
        raise DataError(f"--build {d}: was built from the model {recorded}, not {model_path}; "
                        "pass that model, or build an abstraction of this one with `faultlab rnn build`")
    return meta


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
    if build_dir is not None and not Path(build_dir).is_dir():
        raise DataError(f"--build {build_dir}: no such directory; pass a directory written by `faultlab rnn build`")
    hidden = train_profile.hidden.shape[2]
    if stored is not None and stored.exists():
        abstraction = Abstraction.load(stored)
        if abstraction.hidden_size != hidden:
            raise DataError(f"--build {build_dir}: {stored.name} abstracts hidden states of size {abstraction.hidden_size}, "
                            f"the model has {hidden}; pass the model it was built from")
        if pca_dims is not None and pca_dims != abstraction.pca_dims:
            log.warning("%s has %d PCA dimensions; ignoring --pca %d", stored, abstraction.pca_dims, pca_dims)
    else:
        if stored is not None:
            log.warning("%s not found; fitting a new abstraction", stored)
        k = pca_dims if pca_dims is not None else min(10, hidden)
        abstraction = Abstraction(pca_dims=k, components=components, seed=seed).fit(train_profile.hidden)
    if progress:
        progress(3, total)
    return Analysis(model=model, train=train, test=test, train_profile=train_profile,
                    test_profile=test_profile, abstraction=abstraction)


__all__ = ["Analysis", "build_analysis", "abstraction_file", "load_split_data", "load_sequences", "check_fits", "check_same_shape", "check_limit",
           "check_build_dir", "file_digest"]
