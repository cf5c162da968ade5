"""faultlab: inject faults into neural networks and measure how they fail.

Public names are imported lazily so ``import faultlab`` stays fast; frameworks
(keras, tensorflow, ray) load only when a target or executor needs them.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "FaultlabError": "faultlab.errors",
    # data
    "Dataset": "faultlab.datasets",
    "load_dataset": "faultlab.datasets",
    # executors
    "Executor": "faultlab.executors",
    "InProcessExecutor": "faultlab.executors",
    "ProcessExecutor": "faultlab.executors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'faultlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
