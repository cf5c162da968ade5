"""Targets: the one interface between faultlab and a framework (PyTorch, Keras 3)."""
from .base import Assignment, Target
from .loading import TargetSpec, load_model, load_target, make_target

__all__ = ["Target", "Assignment", "TargetSpec", "load_model", "load_target", "make_target", "TorchTarget", "KerasTarget"]


def __getattr__(name: str):
    if name == "TorchTarget":
        from .torch import TorchTarget

        return TorchTarget
    if name == "KerasTarget":
        from .keras import KerasTarget  # type: ignore[import-not-found]

        return KerasTarget
    raise AttributeError(name)
