"""The analysed subjects: small LSTM/GRU classifiers (recurrent layer -> dense head).

Torch models are saved as a ``state_dict`` (``.pt``, loaded with ``weights_only=True``)
plus a small JSON sidecar naming the architecture, so loading never unpickles code.
Keras models are saved as ``.keras`` and loaded in safe mode unless the user trusts the file.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from ..datasets import Dataset
from ..errors import DataError, FaultlabError, ModelLoadError

log = logging.getLogger("faultlab")

Arch = Literal["lstm", "gru"]
Framework = Literal["torch", "keras"]
ARCHS = ("lstm", "gru")
FRAMEWORKS = ("torch", "keras")
_FORMAT = "faultlab-rnn"


def _new_torch_classifier(**kwargs: Any) -> Any:
    """Build a torch :class:`faultlab.rnn._torch_models.RecurrentClassifier` (keyword arguments only)."""
    from ._torch_models import RecurrentClassifier as cls

    return cls(**kwargs)


def _check_sequences(data: Dataset) -> None:
    if data.x.ndim != 3:
        raise DataError(f"{data.name}: recurrent subjects need sequences (N, T, F), got shape {data.x.shape}; use digits-seq or mnist-seq")
    if data.n_classes < 2:
        raise DataError(f"{data.name}: needs integer class labels with at least 2 classes")


def train_subject(
    data: Dataset,
    *,
    arch: str = "gru",
    framework: str = "torch",
    hidden_size: int = 32,
    epochs: int = 10,
    batch_size: int = 64,
    learning_rate: float = 5e-3,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """Train a recurrent classifier on ``data`` (sequences (N, T, F), integer labels) on the CPU.

    ``progress(done, total)`` is called after every epoch. Returns the trained model
    (a torch ``RecurrentClassifier`` or a ``keras.Model``).
    """
    _check_sequences(data)
    if arch not in ARCHS:
        raise FaultlabError(f"--arch {arch!r}: expected one of {', '.join(ARCHS)}")
    if framework not in FRAMEWORKS:
        raise FaultlabError(f"--framework {framework!r}: expected one of {', '.join(FRAMEWORKS)}")
    if epochs < 1 or hidden_size < 1 or batch_size < 1:
        raise FaultlabError(f"--epochs, --hidden and batch size must be >= 1, got {epochs}, {hidden_size}, {batch_size}")
    if framework == "torch":
        return _train_torch(data, arch=arch, hidden_size=hidden_size, epochs=epochs, batch_size=batch_size,
                            learning_rate=learning_rate, seed=seed, progress=progress)
    return _train_keras(data, arch=arch, hidden_size=hidden_size, epochs=epochs, batch_size=batch_size,
                        learning_rate=learning_rate, seed=seed, progress=progress)


def _train_torch(data: Dataset, *, arch: str, hidden_size: int, epochs: int, batch_size: int,
                 learning_rate: float, seed: int, progress: Callable[[int, int], None] | None) -> Any:
    import torch

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _new_torch_classifier(arch=arch, input_size=data.x.shape[2], hidden_size=hidden_size, n_classes=data.n_classes)
    x = torch.as_tensor(np.asarray(data.x, dtype=np.float32))
    y = torch.as_tensor(np.asarray(data.y, dtype=np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        log.info("epoch %d/%d loss %.4f", epoch + 1, epochs, total / len(x))
        if progress:
            progress(epoch + 1, epochs)
    model.eval()
    return model


def _train_keras(data: Dataset, *, arch: str, hidden_size: int, epochs: int, batch_size: int,
                 learning_rate: float, seed: int, progress: Callable[[int, int], None] | None) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    layer = keras.layers.LSTM if arch == "lstm" else keras.layers.GRU
    model = keras.Sequential([
        keras.Input(shape=data.x.shape[1:]),
        layer(hidden_size, name="rnn"),
        keras.layers.Dense(data.n_classes, name="head"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    class _Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            log.info("epoch %d/%d loss %.4f", epoch + 1, epochs, (logs or {}).get("loss", float("nan")))
            if progress:
                progress(epoch + 1, epochs)

    model.fit(np.asarray(data.x, np.float32), np.asarray(data.y), epochs=epochs, batch_size=batch_size,
              verbose=0, shuffle=True, callbacks=[_Progress()])
    return model


def is_torch_model(model: Any) -> bool:
    """True for a torch ``nn.Module`` (checked without importing torch when it is not loaded)."""
    return type(model).__module__.split(".")[0] != "keras" and hasattr(model, "state_dict") and hasattr(model, "named_parameters")


def save_model(model: Any, path: str | Path) -> Path:
    """Save ``model``; returns the file written (``.pt`` + ``.json`` sidecar for torch, ``.keras`` for Keras).

    A path without a suffix gets the framework's suffix.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if is_torch_model(model):
        import torch

        config = getattr(model, "config", None)
        if config is None:
            raise FaultlabError(f"{type(model).__name__}: only RecurrentClassifier torch models can be saved here; save other models yourself with torch.save(model.state_dict(), ...)")
        if p.suffix != ".pt":
            p = p.with_name(p.name + ".pt") if p.suffix == "" else p.with_suffix(".pt")
        tmp = p.with_name(p.name + ".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(p)
        p.with_suffix(".json").write_text(json.dumps({"format": _FORMAT, "framework": "torch", **config}, indent=2) + "\n")
        return p
    if p.suffix != ".keras":
        p = p.with_name(p.name + ".keras") if p.suffix == "" else p.with_suffix(".keras")
    model.save(p)
    return p


def _resolve(path: Path) -> Path:
    if path.exists():
        return path
    for suffix in (".pt", ".keras"):
        cand = path.with_name(path.name + suffix)
        if cand.exists():
            return cand
    raise ModelLoadError(f"--model {path}: no such file (also tried {path.name}.pt and {path.name}.keras); train one with `faultlab rnn train -o {path}`")


def load_model(path: str | Path, *, trust: bool = False) -> Any:
    """Load a subject saved by :func:`save_model` (``.pt`` + ``.json``, or ``.keras``).

    Torch weights load with ``weights_only=True``; Keras models load in safe mode
    unless ``trust`` is set (which allows Lambda layers, i.e. running code from the file).
    """
    p = _resolve(Path(path))
    if p.suffix == ".json":
        p = p.with_suffix(".pt")
    if p.suffix == ".pt":
        import torch

        sidecar = p.with_suffix(".json")
        if not sidecar.exists():
            raise ModelLoadError(f"--model {p}: missing the architecture file {sidecar.name}; save models with `faultlab rnn train` or faultlab.rnn.save_model")
        try:
            config = json.loads(sidecar.read_text())
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{sidecar}: not valid JSON ({e}); re-save the model with faultlab.rnn.save_model") from e
        if config.get("format") != _FORMAT:
            raise ModelLoadError(f"{sidecar}: field 'format' must be {_FORMAT!r}; re-save the model with faultlab.rnn.save_model")
        try:
            model = _new_torch_classifier(arch=config["arch"], input_size=config["input_size"], hidden_size=config["hidden_size"],
                                        n_classes=config["n_classes"], num_layers=config.get("num_layers", 1))
        except KeyError as e:
            raise ModelLoadError(f"{sidecar}: missing field {e.args[0]!r}; expected arch, input_size, hidden_size, n_classes") from e
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as e:
            raise ModelLoadError(f"--model {p}: could not load the weights ({type(e).__name__}: {e}); the .pt must be a state_dict matching {sidecar.name}") from e
        model.eval()
        return model
    if p.suffix == ".keras":
        import keras

        try:
            return keras.saving.load_model(p, safe_mode=not trust)
        except Exception as e:
            raise ModelLoadError(f"--model {p}: could not load the Keras model ({type(e).__name__}: {e})") from e
    raise ModelLoadError(f"--model {p}: unknown model format {p.suffix!r}; expected .pt (with a .json sidecar) or .keras")


def accuracy(model: Any, data: Dataset) -> float:
    """Fraction of ``data`` that ``model`` classifies correctly (last-step prediction)."""
    from .profile import profile_model

    prof = profile_model(model, data.x)
    return float(np.mean(prof.pred == data.y))


__all__ = ["train_subject", "save_model", "load_model", "accuracy", "ARCHS", "FRAMEWORKS"]
