"""The analysed subjects: small LSTM/GRU classifiers (recurrent layer -> dense head).

Torch models are saved as a ``state_dict`` (``.pt``, loaded with ``weights_only=True``)
plus a small JSON sidecar naming the architecture, so loading never unpickles code.
Keras models are saved as ``.keras`` and loaded in safe mode unless the user trusts the file;
``trust`` also allows a whole pickled torch module (``torch.save(module)``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from ..datasets import Dataset
from ..errors import DataError, FaultlabError, ModelLoadError
from ..targets.keras_loading import import_keras

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


def one_line(text: object, limit: int = 300) -> str:
    """``text`` with its whitespace collapsed and cut to ``limit`` characters, for one-line errors."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _check_sequences(data: Dataset) -> None:
    if data.x.ndim != 3:
        raise DataError(f"{data.name}: recurrent subjects need sequences (N, T, F), got shape {data.x.shape}; use digits-seq or mnist-seq")
    if data.n_classes < 2:
        raise DataError(f"{data.name}: needs integer class labels with at least 2 classes")


def check_labels(data: Dataset, *, n_classes: int, source: str, why: str = "") -> None:
    """Refuse labels outside ``0..n_classes-1``: training or scoring on them reports nonsense.

    ``source`` names the file or option in the message (e.g. ``"--data train.npz"``).
    """
    y = np.asarray(data.y)
    if y.size == 0:
        return
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{source}: labels y must be integer class ids 0..{n_classes - 1}, got non-integer values; store y as integers")
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        first = y[bad][0]
        raise DataError(f"{source}: labels must be 0..{n_classes - 1}{f' ({why})' if why else ''}, got {first:g} "
                        f"({int(bad.sum())} of {y.size} labels out of range); renumber the classes 0..{n_classes - 1}")


def training_classes(train: Dataset, *, source: str) -> int:
    """Number of classes K of training data: its distinct labels, which must be exactly 0..K-1."""
    y = np.asarray(train.y)
    if y.dtype.kind not in "iuf":
        raise DataError(f"{source}: labels y must be integer class ids, got dtype {y.dtype}")
    k = len(np.unique(y))
    if k < 2:
        raise DataError(f"{source}: needs at least 2 classes, but every label is {y.flat[0]:g}; check the labels y")
    check_labels(train, n_classes=k, source=source, why=f"the {k} distinct labels found")
    return k


def check_train_options(*, arch: str, framework: str, hidden_size: int, epochs: int, batch_size: int,
                        learning_rate: float) -> None:
    """Refuse bad training options before any data is touched (the CLI calls this before its progress bar)."""
    if arch not in ARCHS:
        raise FaultlabError(f"--arch {arch!r}: expected one of {', '.join(ARCHS)}")
    if framework not in FRAMEWORKS:
        raise FaultlabError(f"--framework {framework!r}: expected one of {', '.join(FRAMEWORKS)}")
    for name, value in (("--hidden", hidden_size), ("--epochs", epochs), ("--batch-size", batch_size)):
        if value < 1:
            raise FaultlabError(f"{name} {value}: must be >= 1")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise FaultlabError(f"--lr {learning_rate}: the learning rate must be a positive number, e.g. 0.005")


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
    check_train_options(arch=arch, framework=framework, hidden_size=hidden_size, epochs=epochs, batch_size=batch_size,
                        learning_rate=learning_rate)
    _check_sequences(data)
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
    keras = import_keras()
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
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FaultlabError(f"--out {p}: cannot create the folder {p.parent} ({e.strerror}); choose another --out") from e
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


def _resolve(path: Path, option: str = "--model") -> Path:
    if path.is_file():
        return path
    for suffix in (".pt", ".keras"):
        cand = path.with_name(path.name + suffix)
        if cand.is_file():
            return cand
    if path.exists():
        raise ModelLoadError(f"{option} {path}: is a directory, not a model file; pass the .pt or .keras file")
    raise ModelLoadError(f"{option} {path}: no such file (also tried {path.name}.pt and {path.name}.keras); train one with `faultlab rnn train -o {path}`")


def model_file(path: str | Path, option: str = "--model") -> Path:
    """The file :func:`load_model` would read for ``path`` (adds ``.pt``/``.keras`` when missing)."""
    p = _resolve(Path(path), option)
    return p.with_suffix(".pt") if p.suffix == ".json" else p


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _torch_file(p: Path, *, trust: bool, option: str) -> Any:
    """The object in a torch file: loaded with ``weights_only=True``, or fully unpickled when ``trust`` is set."""
    import torch

    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        if "unsupported global" not in str(e).lower():  # not a pickle of objects: garbage or a damaged file
            detail = type(e).__name__ if "weights only load failed" in str(e).lower() else f"{type(e).__name__}: {one_line(e, 120)}"
            raise ModelLoadError(f"{option} {p}: not a readable torch file ({detail}); "
                                 "save the weights with faultlab.rnn.save_model") from e
        if not trust:
            raise ModelLoadError(f"{option} {p}: is a pickled torch module (torch.save(model)), not a state_dict; nothing is "
                                 "unpickled unless you pass --trust (it runs code from the file: only for files you trust)") from e
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ModelLoadError(f"{option} {p}: could not unpickle the torch module ({type(e).__name__}: {one_line(e, 160)}); "
                             "its classes must be importable here") from e


def _load_state(model: Any, state: Any, p: Path, sidecar: Path, option: str) -> None:
    """Load ``state`` into ``model``, with a one-line message naming the keys or shapes that differ."""
    expected = model.state_dict()
    hint = f"the .pt must be the state_dict saved with {sidecar.name} by faultlab.rnn.save_model"
    if not isinstance(state, dict):
        raise ModelLoadError(f"{option} {p}: holds a {type(state).__name__}, not a state_dict; {hint}")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {_few(missing)}"] if missing else []) + ([f"unexpected {_few(unexpected)}"] if unexpected else [])
        raise ModelLoadError(f"{option} {p}: its weights do not match {sidecar.name} ({'; '.join(parts)}); {hint}")
    shapes = [f"{k} is {tuple(getattr(v, 'shape', ()))}, expected {tuple(expected[k].shape)}"
              for k, v in state.items() if tuple(getattr(v, "shape", ())) != tuple(expected[k].shape)]
    if shapes:
        raise ModelLoadError(f"{option} {p}: weight shapes do not match {sidecar.name} ({_few(shapes, 2)}); {hint}")
    try:
        model.load_state_dict(state)
    except Exception as e:
        raise ModelLoadError(f"{option} {p}: could not load the weights ({type(e).__name__}: {one_line(e, 160)}); {hint}") from e


def load_model(path: str | Path, *, trust: bool = False, option: str = "--model") -> Any:
    """Load a subject saved by :func:`save_model` (``.pt`` + ``.json``, or ``.keras``).

    Torch weights load with ``weights_only=True``; Keras models load in safe mode.
    ``trust`` allows running code from the file: Keras Lambda layers, or a whole torch
    module saved with ``torch.save(model)`` (which then needs no ``.json``).
    ``option`` names the command-line option in error messages.
    """
    p = _resolve(Path(path), option)
    if p.suffix == ".json":
        p = p.with_suffix(".pt")
        if not p.is_file():
            raise ModelLoadError(f"{option} {path}: is the architecture file; pass its weights {p.name}, which does not exist")
    if p.suffix == ".pt":
        import torch

        obj = _torch_file(p, trust=trust, option=option)
        if isinstance(obj, torch.nn.Module):
            obj.eval()
            return obj
        sidecar = p.with_suffix(".json")
        if not sidecar.exists():
            raise ModelLoadError(f"{option} {p}: missing the architecture file {sidecar.name}; save models with `faultlab rnn train` or faultlab.rnn.save_model")
        try:
            config = json.loads(sidecar.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"{sidecar}: not valid JSON ({one_line(e, 120)}); re-save the model with faultlab.rnn.save_model") from e
        if not isinstance(config, dict) or config.get("format") != _FORMAT:
            raise ModelLoadError(f"{sidecar}: field 'format' must be {_FORMAT!r}; re-save the model with faultlab.rnn.save_model")
        try:
            model = _new_torch_classifier(arch=config["arch"], input_size=config["input_size"], hidden_size=config["hidden_size"],
                                          n_classes=config["n_classes"], num_layers=config.get("num_layers", 1))
        except KeyError as e:
            raise ModelLoadError(f"{sidecar}: missing field {e.args[0]!r}; expected arch, input_size, hidden_size, n_classes") from e
        except FaultlabError as e:
            raise ModelLoadError(f"{sidecar}: {e}") from e
        except (TypeError, ValueError, RuntimeError) as e:
            raise ModelLoadError(f"{sidecar}: bad architecture fields ({one_line(e, 120)}); re-save the model with faultlab.rnn.save_model") from e
        _load_state(model, obj, p, sidecar, option)
        model.eval()
        return model
    if p.suffix == ".keras":
        keras = import_keras()
        try:
            return keras.saving.load_model(p, safe_mode=not trust)
        except Exception as e:
            hint = "; if the file is yours and uses Lambda layers, pass --trust" if "safe_mode" in str(e) else ""
            raise ModelLoadError(f"{option} {p}: could not load the Keras model ({type(e).__name__}: {one_line(e, 150)}){hint}") from e
    raise ModelLoadError(f"{option} {p}: unknown model format {p.suffix!r}; expected .pt (with a .json sidecar) or .keras")


def model_io(model: Any) -> tuple[int | None, int | None]:
    """``(features per step, classes)`` the model expects, where they can be read without running it (else None)."""
    config = getattr(model, "config", None)
    if isinstance(config, dict) and "input_size" in config:
        return int(config["input_size"]), int(config["n_classes"])
    if is_torch_model(model):
        import torch.nn as nn

        children = list(model.children())
        rnns = [c for c in children if isinstance(c, nn.RNNBase)]
        linears = [c for c in model.modules() if isinstance(c, nn.Linear)]
        first = children[0] if children else None
        feats = int(first.input_size) if isinstance(first, nn.RNNBase) else None
        return feats, (int(linears[-1].out_features) if rnns and linears else None)
    try:
        shape_in, shape_out = model.input_shape, model.output_shape
        return (int(shape_in[-1]) if shape_in[-1] else None), (int(shape_out[-1]) if shape_out[-1] else None)
    except Exception:  # noqa: BLE001 - a model without static shapes
        return None, None


def accuracy(model: Any, data: Dataset) -> float:
    """Fraction of ``data`` that ``model`` classifies correctly (last-step prediction)."""
    from .profile import profile_model

    prof = profile_model(model, data.x)
    return float(np.mean(prof.pred == data.y))


__all__ = ["train_subject", "save_model", "load_model", "accuracy", "check_labels", "check_train_options", "training_classes",
           "model_io", "model_file", "one_line", "ARCHS", "FRAMEWORKS"]
