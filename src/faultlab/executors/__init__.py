"""Executors: where campaign and mutation work runs (this process, a process pool, Ray)."""
from ._base import Executor, TaskOutcome, WorkerFactory
from .local import InProcessExecutor, ProcessExecutor, make_local_executor

__all__ = ["Executor", "TaskOutcome", "WorkerFactory", "InProcessExecutor", "ProcessExecutor", "make_local_executor"]
