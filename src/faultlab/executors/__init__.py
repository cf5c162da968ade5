"""Executors: where campaign and mutation work runs (this process, a process pool, Ray)."""
from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING

from ._base import Executor, TaskOutcome, WorkerFactory
from .local import InProcessExecutor, ProcessExecutor, make_local_executor

if TYPE_CHECKING:  # ray is imported only when a Ray executor is asked for
    from .ray import RayExecutor

EXECUTORS = ("local", "ray")


def _ray_installed() -> bool:
    """Whether ``import ray`` would work, without importing it (a None in sys.modules means blocked)."""
    if "ray" in sys.modules:
        return sys.modules["ray"] is not None
    try:
        return importlib.util.find_spec("ray") is not None
    except ValueError:
        return False


def make_executor(name: str, *, workers: int = 1, address: str | None = None, gpus_per_worker: float = 0.0) -> Executor:
    """The executor ``--executor NAME`` asks for: ``local`` (this process or a pool) or ``ray``.

    ``ray`` joins the cluster at ``address`` (``HOST:PORT``) or starts Ray on this machine;
    without the ray package it raises a :class:`FaultlabError` saying how to install it.
    """
    from ..errors import FaultlabError

    if workers < 1:
        raise FaultlabError(f"--workers {workers}: expected a number >= 1")
    if name == "local":
        if address is not None:
            raise FaultlabError(f"--address {address}: only used with --executor ray; add --executor ray or drop --address")
        if gpus_per_worker:
            raise FaultlabError(f"--gpus-per-worker {gpus_per_worker:g}: only used with --executor ray; use --device cuda for a local GPU")
        return make_local_executor(workers)
    if name == "ray":
        if not _ray_installed():
            raise FaultlabError("--executor ray: the ray package is not installed; install it with pip install 'faultlab[ray]'")
        from .ray import RayExecutor

        return RayExecutor(address=address, workers=workers, gpus_per_worker=gpus_per_worker)
    raise FaultlabError(f"--executor {name!r}: expected one of {', '.join(EXECUTORS)}")


def __getattr__(name: str):  # lazy: ``from faultlab.executors import RayExecutor`` without importing ray up front
    if name == "RayExecutor":
        from .ray import RayExecutor

        return RayExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Executor", "TaskOutcome", "WorkerFactory", "InProcessExecutor", "ProcessExecutor", "RayExecutor",
    "EXECUTORS", "make_executor", "make_local_executor",
]
