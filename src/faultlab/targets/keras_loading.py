"""Load Keras model files safely: ``.keras`` in safe mode, legacy ``.h5`` including Keras 2 files.

Keras 2 (tf.keras) wrote recurrent-layer configs with arguments Keras 3 rejects (``time_major``
in LSTM/GRU/SimpleRNN). Such keys are dropped from a patched copy of the file's config in a
temporary directory -- the user's file is only ever read -- and a warning names them.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..errors import ModelLoadError

log = logging.getLogger("faultlab")

#: Recurrent layers (and their cells) whose Keras 2 configs may carry keys Keras 3 rejects.
RNN_CLASSES = ("LSTM", "GRU", "SimpleRNN", "LSTMCell", "GRUCell", "SimpleRNNCell")
#: Layer-level keys Keras 3 still understands when reading legacy configs.
_LEGACY_LAYER_KEYS = {"input_dim", "input_shape", "batch_input_shape", "batch_shape", "batch_size"}


def import_keras() -> Any:
    """Import Keras, defaulting to the torch backend (installed with faultlab) when none is chosen."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


def _accepted_keys(cls: type) -> set[str]:
    """Constructor arguments a Keras 3 layer class accepts, across its class hierarchy."""
    keys: set[str] = set(_LEGACY_LAYER_KEYS)
    for c in cls.__mro__:
        init = c.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        keys.update(p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self")
    return keys


def _layer_configs(node: Any) -> Iterator[dict]:
    """Every ``{"class_name": ..., "config": {...}}`` mapping nested anywhere in a model config."""
    if isinstance(node, dict):
        if isinstance(node.get("class_name"), str) and isinstance(node.get("config"), dict):
            yield node
        for v in node.values():
            yield from _layer_configs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _layer_configs(v)


def lambda_layers(config: Any) -> list[str]:
    """Names of the Lambda layers in a model config (they hold code that runs when loaded)."""
    return [str(c["config"].get("name", "?")) for c in _layer_configs(config) if c["class_name"] == "Lambda"]


def drop_rejected_rnn_keys(config: Any) -> dict[str, list[str]]:
    """Remove, in place, config keys Keras 3's recurrent layers reject; returns {layer name: dropped keys}."""
    keras = import_keras()
    dropped: dict[str, list[str]] = {}
    for c in _layer_configs(config):
        if c["class_name"] not in RNN_CLASSES:
            continue
        cls = getattr(keras.layers, c["class_name"], None)
        if cls is None:
            continue
        cfg = c["config"]
        bad = sorted(k for k in cfg if k not in _accepted_keys(cls))
        for k in bad:
            cfg.pop(k)
        if bad:
            dropped[str(cfg.get("name", c["class_name"]))] = bad
    return dropped


def _read_h5_config(path: Path) -> tuple[dict | None, str | bytes | None]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as e:
        raise ModelLoadError(f"--model {path}: not a readable HDF5 file ({e})") from None
    if raw is None:
        return None, None
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    try:
        return json.loads(text), raw
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"--model {path}: model_config is not valid JSON ({e.msg})") from None


def _refuse_lambdas(path: Path, names: list[str]) -> None:
    raise ModelLoadError(
        f"--model {path}: Lambda layer(s) {', '.join(names)} hold Python code that runs when loaded; Keras safe mode refuses them. Pass --unsafe if you trust this file"
    )


def load_h5(path: Path, *, unsafe: bool) -> Any:
    """A legacy ``.h5`` model (Keras 3 or Keras 2), rejected RNN keys dropped from a temporary copy."""
    keras = import_keras()
    config, _ = _read_h5_config(path)
    if config is None:
        raise ModelLoadError(f"--model {path}: the HDF5 file has no model_config; it holds weights only (load them into a model built in Python: file.py:factory)")
    lambdas = lambda_layers(config)
    if lambdas and not unsafe:
        _refuse_lambdas(path, lambdas)
    dropped = drop_rejected_rnn_keys(config)
    if dropped:
        what = "; ".join(f"{layer}: {', '.join(keys)}" for layer, keys in dropped.items())
        log.warning("%s: dropped Keras 2 argument(s) Keras 3 does not accept (%s); the file itself is unchanged", path, what)
    try:
        if not dropped:
            return keras.saving.load_model(str(path), compile=False, safe_mode=not unsafe)
        import h5py

        with tempfile.TemporaryDirectory(prefix="faultlab-h5-") as tmp:
            copy = Path(tmp) / "model.h5"
            shutil.copyfile(path, copy)
            with h5py.File(copy, "r+") as f:
                f.attrs["model_config"] = json.dumps(config)
            return keras.saving.load_model(str(copy), compile=False, safe_mode=not unsafe)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"--model {path}: Keras cannot load this .h5 file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def load_keras_file(path: Path, *, unsafe: bool) -> Any:
    """A Keras 3 ``.keras`` zip, in safe mode unless ``unsafe``."""
    import zipfile

    keras = import_keras()
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"--model {path}: not a .keras zip archive; save the model with model.save('model.keras')")
    with zipfile.ZipFile(path) as z:
        try:
            config = json.loads(z.read("config.json"))
        except (KeyError, json.JSONDecodeError):
            config = None
    lambdas = lambda_layers(config) if config is not None else []
    if lambdas and not unsafe:
        _refuse_lambdas(path, lambdas)
    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=not unsafe)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else ""
        if "safe_mode" in str(e):
            raise ModelLoadError(f"--model {path}: Keras safe mode refused to load this file ({msg}). Pass --unsafe if you trust it") from None
        raise ModelLoadError(f"--model {path}: Keras cannot load this file ({type(e).__name__}: {msg})") from None


def load_keras_model(path: str | Path, *, unsafe: bool = False) -> Any:
    """Load a ``.keras`` or legacy ``.h5``/``.hdf5`` model file without modifying it."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"--model {p}: no such file")
    if p.suffix.lower() in (".h5", ".hdf5"):
        return load_h5(p, unsafe=unsafe)
    return load_keras_file(p, unsafe=unsafe)


__all__ = ["import_keras", "load_keras_model", "load_h5", "load_keras_file", "drop_rejected_rnn_keys", "lambda_layers", "RNN_CLASSES"]
