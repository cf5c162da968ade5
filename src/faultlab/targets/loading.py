"""Turn a ``--model`` reference into a Target, without unpickling user files unless trusted.

Forms: ``pkg.module:factory`` or ``path/to/file.py:factory`` (called with no arguments,
weights from ``--weights`` loaded with ``weights_only=True``), a torch.export ``.pt2``
file, a whole pickled module ``.pt`` only with ``trust_pickle``, and Keras ``.keras`` /
``.h5`` files (safe mode unless ``unsafe``).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .base import Target


def _import_factory(spec: str) -> Any:
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise ModelLoadError(f"--model {spec!r}: expected 'pkg.module:factory', 'file.py:factory', a .pt2/.keras/.h5 file, or a .pt with --trust-pickle")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.exists():
                raise ModelLoadError(f"--model {spec!r}: no such file {path}")
            name = f"_faultlab_user_{abs(hash(str(path.resolve())))}"
            if name in sys.modules:
                module = sys.modules[name]
            else:
                s = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(s)  # type: ignore[arg-type]
                sys.modules[name] = module
                s.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(mod_name)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"--model {spec!r}: cannot import {mod_name} ({type(e).__name__}: {e})") from None
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise ModelLoadError(f"--model {spec!r}: {mod_name} has no attribute {attr!r}") from None
    try:
        return factory() if callable(factory) and not _is_model(factory) else factory
    except Exception as e:
        raise ModelLoadError(f"--model {spec!r}: calling {attr}() failed ({type(e).__name__}: {e})") from None


def _is_model(obj: Any) -> bool:
    try:
        import torch

        if isinstance(obj, torch.nn.Module):
            return True
    except ImportError:  # pragma: no cover
        pass
    return type(obj).__module__.startswith("keras")


def _load_torch_weights(model: Any, weights: str | Path, trust_pickle: bool) -> None:
    import torch

    p = Path(weights)
    if not p.exists():
        raise ModelLoadError(f"--weights {p}: no such file")
    try:
        state = torch.load(p, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:
        raise ModelLoadError(f"--weights {p}: not a loadable state_dict with weights_only=True ({type(e).__name__}); save model.state_dict(), or pass --trust-pickle if you trust this file") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"--weights {p}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ModelLoadError(f"--weights {p}: does not match the model ({' '.join(l.strip() for l in first[:2])})") from None


def make_target(model: Any, **kwargs: Any) -> Target:
    """A Target for an in-memory model: a ``torch.nn.Module`` or a Keras model."""
    import torch

    # Keras first: on the torch backend a Keras model is also a torch.nn.Module
    if type(model).__module__.startswith("keras") or hasattr(model, "get_layer"):
        from .keras import KerasTarget  # type: ignore[import-not-found]

        return KerasTarget(model, **kwargs)
    if isinstance(model, torch.nn.Module):
        from .torch import TorchTarget

        return TorchTarget(model, **kwargs)
    raise ModelLoadError(f"unsupported model type {type(model).__name__}; expected a torch.nn.Module or a Keras model")


def load_model(spec: str, *, weights: str | Path | None = None, trust_pickle: bool = False, unsafe: bool = False, device: str = "cpu") -> Any:
    """Load the model object a ``--model`` reference names (see module docstring)."""
    s = str(spec)
    low = s.lower()
    if low.endswith((".keras", ".h5", ".hdf5")):
        from .keras import load_keras_model  # type: ignore[import-not-found]

        return load_keras_model(s, unsafe=unsafe)
    import torch

    if low.endswith(".pt2"):
        p = Path(s)
        if not p.exists():
            raise ModelLoadError(f"--model {p}: no such file")
        try:
            model = torch.export.load(str(p)).module()
        except Exception as e:
            raise ModelLoadError(f"--model {p}: not a torch.export program ({type(e).__name__}: {e})") from None
    elif low.endswith((".pt", ".pth")) and ":" not in s:
        p = Path(s)
        if not p.exists():
            raise ModelLoadError(f"--model {p}: no such file")
        if not trust_pickle:
            raise ModelLoadError(
                f"--model {p}: a whole pickled module can run arbitrary code when loaded; pass --trust-pickle if you trust it, or use --model pkg.module:factory --weights state_dict.pt"
            )
        try:
            model = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ModelLoadError(f"--model {p}: cannot load ({type(e).__name__}: {e})") from None
    else:
        model = _import_factory(s)
    if isinstance(model, torch.nn.Module) and not type(model).__module__.startswith("keras"):
        if weights is not None:
            _load_torch_weights(model, weights, trust_pickle)
        model = model.to(device)
    elif weights is not None and hasattr(model, "load_weights"):
        model.load_weights(str(weights))
    if not _is_model(model):
        raise ModelLoadError(f"--model {s!r}: produced a {type(model).__name__}, expected a torch.nn.Module or a Keras model")
    return model


@dataclass(frozen=True)
class TargetSpec:
    """A picklable recipe for a target, so worker processes and Ray actors can load it once."""

    model: str
    weights: str | None = None
    trust_pickle: bool = False
    unsafe: bool = False
    device: str = "cpu"

    def __call__(self) -> Target:
        return make_target(load_model(self.model, weights=self.weights, trust_pickle=self.trust_pickle, unsafe=self.unsafe, device=self.device))


def load_target(spec: str, **kwargs: Any) -> Target:
    """Load a model reference and wrap it in its Target."""
    return TargetSpec(spec, **{k: (str(v) if k == "weights" and v is not None else v) for k, v in kwargs.items()})()


__all__ = ["load_model", "make_target", "load_target", "TargetSpec"]
