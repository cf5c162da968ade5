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
    # bit-level fault models
    "flip_bits": "faultlab.bits",
    "stuck_at": "faultlab.bits",
    "apply_fault_model": "faultlab.bits",
    # faults and fault lists
    "Fault": "faultlab.faults",
    "FaultList": "faultlab.faults",
    "Site": "faultlab.faults",
    "InjectConfig": "faultlab.faults",
    # planning and statistics
    "RandomPlanner": "faultlab.planning",
    "ExhaustivePlanner": "faultlab.planning",
    "StatisticalPlanner": "faultlab.planning",
    "AdaptiveAllocator": "faultlab.planning",
    "leveugle_sample_size": "faultlab.stats",
    "wilson_interval": "faultlab.stats",
    "pair_rate_interval": "faultlab.stats",
    "mcnemar_test": "faultlab.stats",
    # outcomes
    "classify": "faultlab.outcomes",
    "FaultResult": "faultlab.outcomes",
    # targets
    "Target": "faultlab.targets",
    "TorchTarget": "faultlab.targets",
    "KerasTarget": "faultlab.targets",
    "make_target": "faultlab.targets",
    "load_target": "faultlab.targets",
    "TargetSpec": "faultlab.targets",
    # campaigns
    "Campaign": "faultlab.engine.campaign",
    "AdaptiveCampaign": "faultlab.engine.adaptive",
    "ExactEngine": "faultlab.engine",
    "FastEngine": "faultlab.engine.fast",
    "CampaignStore": "faultlab.store",
    # executors
    "Executor": "faultlab.executors",
    "InProcessExecutor": "faultlab.executors",
    "ProcessExecutor": "faultlab.executors",
    "make_executor": "faultlab.executors",
    # data
    "Dataset": "faultlab.datasets",
    "load_dataset": "faultlab.datasets",
    # reports
    "report_campaign": "faultlab.report.html",
    # mutation testing
    "MutationSweep": "faultlab.mutation",
    "MutationStore": "faultlab.mutation",
    "analyze_mutants": "faultlab.mutation",
}
_ALIASES = {"analyze_mutants": "analyze"}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'faultlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _ALIASES.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
