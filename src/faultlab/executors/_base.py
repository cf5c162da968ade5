"""The executor interface: run independent tasks on long-lived workers, yield results as they finish.

A worker is built once per process (or Ray actor) by a picklable ``worker_factory``
-- it loads the model and data and computes golden outputs once -- and is then called
with task after task. Executors never touch the store: the driver streams what they
yield into SQLite, so resume behaves the same whichever executor ran the work.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

WorkerFactory = Callable[[], Callable[[Any], Any]]


@dataclass(frozen=True)
class TaskOutcome(Generic[T, R]):
    """What came back for one task: its result, or the exception (as text) that ended it."""

    task: T
    result: R | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Executor(ABC):
    """Runs ``worker(task)`` for every task on workers built by ``worker_factory``."""

    @abstractmethod
    def run(self, worker_factory: WorkerFactory, tasks: Iterable[T]) -> Iterator[TaskOutcome]:
        """Yield a :class:`TaskOutcome` per task, in completion order; a task that raises yields its error."""

    def close(self) -> None:
        """Release workers (processes, actors). Safe to call twice."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
