"""Executors on this machine: in the calling process, or a pool of worker processes."""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Iterable, Iterator

from ._base import Executor, TaskOutcome, WorkerFactory

_WORKER: Any = None


def _exit_with_parent(parent: int) -> None:
    """End this worker once its parent is gone (killed with -9, say): orphans would hold memory and cores."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="faultlab-parent-watch", daemon=True).start()


def _init_worker(factory: WorkerFactory, torch_threads: int | None, parent: int | None = None) -> None:
    global _WORKER
    if parent is not None:
        _exit_with_parent(parent)
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    _WORKER = factory()


def _call_worker(task: Any) -> Any:
    return _WORKER(task)


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}\n" + "".join(traceback.format_exception(e)[-3:])


class InProcessExecutor(Executor):
    """Runs every task in this process with one worker; the default, and the one tests compare against."""

    def run(self, worker_factory: WorkerFactory, tasks: Iterable[Any]) -> Iterator[TaskOutcome]:
        worker = worker_factory()
        for task in tasks:
            try:
                yield TaskOutcome(task, worker(task))
            except Exception as e:  # a failing task is reported, not fatal
                yield TaskOutcome(task, error=_describe(e))


class ProcessExecutor(Executor):
    """Runs tasks on ``workers`` spawned processes, each building its worker once.

    At most ``2 * workers`` tasks are in flight, so memory does not grow with the
    number of tasks and results stream back as they finish.
    """

    def __init__(self, *, workers: int = 2, torch_threads: int | None = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.torch_threads = torch_threads
        self._pool: ProcessPoolExecutor | None = None

    def run(self, worker_factory: WorkerFactory, tasks: Iterable[Any]) -> Iterator[TaskOutcome]:
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(worker_factory, self.torch_threads, os.getpid()),
        )
        pending: dict[Future, Any] = {}
        it = iter(tasks)
        try:
            while True:
                while len(pending) < 2 * self.workers:
                    try:
                        task = next(it)
                    except StopIteration:
                        break
                    pending[self._pool.submit(_call_worker, task)] = task
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = pending.pop(fut)
                    exc = fut.exception()
                    if exc is None:
                        yield TaskOutcome(task, fut.result())
                    else:
                        yield TaskOutcome(task, error=_describe(exc))
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def make_local_executor(workers: int = 1) -> Executor:
    """In-process for ``workers <= 1``, else a process pool of that size."""
    return InProcessExecutor() if workers <= 1 else ProcessExecutor(workers=workers)



__all__ = ["InProcessExecutor", "ProcessExecutor", "make_local_executor"]
