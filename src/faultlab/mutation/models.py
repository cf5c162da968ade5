"""Training functions as models: resolve ``module:function`` or a ``MODEL_TYPES`` name, hash, seed and call.

A model is a Python function whose keyword arguments are the operators. It trains and
returns ``(model, history)`` -- a Keras ``History`` or a dict of per-epoch lists -- or a
dict of final metrics. :func:`final_metrics` turns any of those into one number per metric.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import logging
import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ModelLoadError

log = logging.getLogger("faultlab")


@dataclass(frozen=True)
class ModelRef:
    """Where a training function lives: ``name`` in ``MODEL_TYPES`` of ``models_file``, or ``module:function``."""

    name: str
    models_file: str | None = None

    def load(self) -> Callable[..., Any]:
        """Import the function; raises :class:`ModelLoadError` naming the reference and the fix."""
        return _load_cached(self.name, self.models_file)

    @property
    def label(self) -> str:
        """Short name for reports and the store (``LSTM1``, ``pkg.mod:train``)."""
        return self.name


_CACHE: dict[tuple[str, str | None], Callable[..., Any]] = {}


def _import_file(path: Path) -> Any:
    if not path.exists():
        raise ModelLoadError(f"--models-file {path}: no such file; pass a Python file defining MODEL_TYPES or the function")
    mod_name = "faultlab_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"--models-file {path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[mod_name]
        raise ModelLoadError(f"--models-file {path}: importing it raised {type(e).__name__}: {e}") from e
    return module


def _load_cached(name: str, models_file: str | None) -> Callable[..., Any]:
    key = (name, models_file)
    if key in _CACHE:
        return _CACHE[key]
    if models_file is not None:
        module = _import_file(Path(models_file))
        registry = getattr(module, "MODEL_TYPES", None)
        if isinstance(registry, dict) and name in registry:
            fn = registry[name]
        elif hasattr(module, name) and callable(getattr(module, name)):
            fn = getattr(module, name)
        else:
            known = sorted(registry) if isinstance(registry, dict) else []
            raise ModelLoadError(
                f"--model {name!r}: not in MODEL_TYPES of {models_file} (known: {', '.join(known) or 'none'}); "
                "pass one of those names or add it to MODEL_TYPES"
            )
    else:
        if ":" not in name:
            raise ModelLoadError(
                f"--model {name!r}: expected 'module:function' (e.g. examples.lstm_price:LSTM1) or a name with --models-file FILE"
            )
        mod_name, _, attr = name.partition(":")
        target = Path(mod_name)
        try:
            module = _import_file(target) if mod_name.endswith(".py") else importlib.import_module(mod_name)
        except ModelLoadError:
            raise
        except Exception as e:
            raise ModelLoadError(f"--model {name!r}: cannot import module {mod_name!r} ({type(e).__name__}: {e}); check the name and PYTHONPATH") from e
        registry = getattr(module, "MODEL_TYPES", {})
        fn = getattr(module, attr, None) or (registry.get(attr) if isinstance(registry, dict) else None)
        if fn is None:
            raise ModelLoadError(f"--model {name!r}: module {mod_name!r} has no function {attr!r}")
    if not callable(fn):
        raise ModelLoadError(f"--model {name!r}: {fn!r} is not callable; MODEL_TYPES values must be training functions")
    _CACHE[key] = fn
    return fn


def source_hash(fn: Callable[..., Any]) -> str:
    """SHA-256 (16 hex digits) of the function's name, its whole file and the local modules it imports.

    Editing the function, anything beside it in its file (a data loader, a helper, a constant it
    reads), or a module of the user's own that the file imports (one under the file's directory, not
    an installed package) starts fresh results instead of reusing runs of the old code.
    """
    name = getattr(fn, "__qualname__", repr(fn))
    try:
        path = inspect.getsourcefile(fn)
        src = Path(path).read_text(errors="replace") if path else inspect.getsource(fn)
    except (OSError, TypeError):
        path = None
        try:
            src = inspect.getsource(fn)
        except (OSError, TypeError):
            src = ""
    blob = f"{name}\n{src}"
    if path:
        own = Path(path).resolve()
        package = (getattr(fn, "__globals__", None) or {}).get("__package__") or ""
        for local in _local_imports(own, package):
            blob += f"\n--- {local.relative_to(own.parent).as_posix()}\n{local.read_text(errors='replace')}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _module_path(name: str) -> Path | None:
    """The ``.py`` file of module ``name`` (imported already, or found on ``sys.path``), else None."""
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None) if module is not None else None
    if file is None and name.rpartition(".")[0] not in sys.modules and "." in name:
        return None  # finding a submodule would import its package: not for an import the code has not run
    if file is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            spec = None
        file = spec.origin if spec is not None else None
    return Path(file).resolve() if file and file.endswith(".py") else None


def _imported_names(path: Path, package: str) -> list[str]:
    """Module names a file's import statements name: ``import a.b`` gives a and a.b; ``from a import b`` gives a and a.b."""
    try:
        tree = ast.parse(path.read_text(errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                names += [".".join(parts[: i + 1]) for i in range(len(parts))]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if package else ""
                if not anchor:
                    continue
                base = f"{anchor}.{base}" if base else anchor
            if base:
                names.append(base)
            names += [f"{base}.{alias.name}" if base else alias.name for alias in node.names if alias.name != "*"]
    return names


def _is_installed(path: Path, prefixes: set[Path]) -> bool:
    """True for the standard library and installed packages: their edits are not the user's code."""
    return bool({"site-packages", "dist-packages"} & set(path.parts)) or any(path.is_relative_to(p) for p in prefixes)


def _local_imports(own: Path, package: str) -> list[Path]:
    """The user's own Python files (under ``own``'s directory) that ``own`` imports, directly or through each other.

    Read from the import statements, so ``import mydata``, ``from mydata import load`` and
    ``from helpers import SCALE`` all count; the standard library and installed packages never do.
    """
    root = own.parent
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    seen: set[Path] = {own}
    found: list[Path] = []
    pending = [(own, package)]
    while pending:
        file, pkg = pending.pop()
        for name in _imported_names(file, pkg):
            target = _module_path(name)
            if target is None or target in seen or not target.is_relative_to(root) or _is_installed(target, prefixes):
                continue
            seen.add(target)
            found.append(target)
            pending.append((target, name if target.name == "__init__.py" else name.rpartition(".")[0]))
    return sorted(found)


def _keras_use(fn: Callable[..., Any]) -> str:
    """``"builds"`` if the function's file mentions Keras, ``"loaded"`` if Keras is merely imported, else ``""``."""
    try:
        path = inspect.getsourcefile(fn)
        if path is not None and "keras" in Path(path).read_text(errors="replace"):
            return "builds"
    except (OSError, TypeError):
        pass
    return "loaded" if "keras" in sys.modules else ""


def seed_everything(seed: int, *, keras: bool | str) -> None:
    """Seed Python, NumPy and torch, and Keras when the function uses it, so a run is repeatable.

    ``keras="builds"`` also clears the Keras session first (fresh layer names, no state from the
    previous run); that costs a garbage collection, so it is skipped for functions that do not
    build Keras models.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if keras:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras as _keras

        if keras == "builds":
            _keras.backend.clear_session()
        _keras.utils.set_random_seed(seed)


def accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes keyword ``name`` (or ``**kwargs``)."""
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def call_seeded(fn: Callable[..., Any], kwargs: dict[str, Any], seed: int) -> Any:
    """Seed everything, then call ``fn(**kwargs)`` (adding ``seed=`` when the function takes it)."""
    seed_everything(seed, keras=_keras_use(fn))
    call = dict(kwargs)
    if "seed" in inspect.signature(fn).parameters and "seed" not in call:
        call["seed"] = seed
    return fn(**call)


def final_metrics(result: Any) -> dict[str, float]:
    """Last-epoch value of every numeric metric in what a training function returned."""
    history: Any = result
    if isinstance(result, tuple) and len(result) == 2:
        history = result[1]
    if hasattr(history, "history") and isinstance(history.history, dict):  # keras History
        history = history.history
    if not isinstance(history, dict):
        raise TypeError(
            f"the training function returned {type(result).__name__}; expected (model, history) with a Keras History "
            "or a dict of per-epoch lists, or a dict of final metrics"
        )
    out: dict[str, float] = {}
    for key, value in history.items():
        if isinstance(value, (list, tuple, np.ndarray)):
            if len(value) == 0:
                continue
            value = value[-1]
        try:
            f = float(value)
        except (TypeError, ValueError):
            continue
        out[str(key)] = f if math.isfinite(f) else float("nan")
    return out


def trained_model(result: Any) -> Any:
    """The model from a ``(model, history)`` result, else None."""
    if isinstance(result, tuple) and len(result) == 2:
        return result[0]
    return None


__all__ = ["ModelRef", "source_hash", "seed_everything", "call_seeded", "final_metrics", "trained_model", "accepts"]
