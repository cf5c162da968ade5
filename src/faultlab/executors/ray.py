"""Ray executor: the same :class:`Executor` interface, run on long-lived Ray actors.

Each actor builds its worker once (loads the model and data, computes the golden
outputs) and then takes task after task; the driver keeps a few tasks in flight per
actor and yields results as they finish, so the caller streams them into SQLite exactly
as with the local executors. An actor that dies (process killed, node lost, out of
memory) is replaced and the tasks it held are queued again, so every task yields once.
Without ``address`` a private Ray instance starts on this machine; with one, the driver
joins that cluster. ``ray`` is imported only when an executor runs (the ``[ray]`` extra).
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import socket
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sized

from ..errors import FaultlabError
from ._base import Executor, TaskOutcome, WorkerFactory

log = logging.getLogger("faultlab")

INSTALL_HINT = "pip install 'faultlab[ray]'"
_FORWARDED_ENV_PREFIXES = ("FAULTLAB_", "KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`FaultlabError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FaultlabError(f"--executor ray: the ray package is not installed; install it with {INSTALL_HINT}") from None
    return ray


def check_reachable(address: str, *, timeout_s: float = 5.0) -> None:
    """Fail fast on a ``HOST:PORT`` nobody listens on (Ray itself retries for minutes)."""
    if "://" in address or address in ("auto", "local") or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as e:
        raise FaultlabError(
            f"--address {address}: no Ray head answers there ({type(e).__name__}: {e}); "
            "start one with 'ray start --head --port PORT' and pass HEAD_IP:PORT"
        ) from None


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}\n" + "".join(traceback.format_exception(e)[-3:])


class WorkerActor:
    """Runs inside a Ray actor: builds the worker once, then runs one task per call.

    Building happens in :meth:`setup` rather than the constructor, so a factory that
    raises (a bad model path on one node) is reported as an error, not as a dying actor.
    """

    def __init__(self, factory: WorkerFactory, env: dict[str, str], torch_threads: int | None, cwd: str | None = None) -> None:
        os.environ.update(env)
        if cwd and os.path.isdir(cwd):  # relative --model/--weights paths resolve as on the driver (shared filesystem)
            os.chdir(cwd)
        self._factory = factory
        self._torch_threads = torch_threads
        self._worker: Any = None

    def setup(self) -> str:
        if self._torch_threads:
            import torch

            torch.set_num_threads(self._torch_threads)
        self._worker = self._factory()
        return f"{os.uname().nodename}:{os.getpid()}"

    def run(self, task: Any) -> Any:
        return self._worker(task)


@dataclass(eq=False)
class _Slot:
    """One actor in the pool: its handle, whether its worker is built, tasks it holds."""

    index: int
    handle: Any
    ready: bool = False
    in_flight: int = 0


@dataclass(eq=False)
class _Call:
    """What a pending Ray object ref stands for: an actor's setup, or a task attempt."""

    slot: _Slot
    task: Any = None
    attempt: int = 0
    setup: bool = False


class RayExecutor(Executor):
    """Runs tasks on ``workers`` Ray actors, each building its worker once via ``worker_factory``.

    ``address`` joins a running cluster (``HOST:PORT``, ``auto`` or ``ray://...``); None
    starts a private local Ray with enough CPUs for the workers. Each actor reserves
    ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs (Ray sets CUDA_VISIBLE_DEVICES,
    so a target on ``cuda`` uses the actor's GPU). At most ``tasks_per_worker`` tasks wait
    on each actor, so memory stays bounded and the next task is ready when one finishes.
    A task whose actor died is retried on another actor up to ``max_attempts`` times;
    a task that raises is reported at once, like the local executors do.
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        workers: int = 2,
        gpus_per_worker: float = 0.0,
        cpus_per_worker: float = 1.0,
        tasks_per_worker: int = 2,
        max_attempts: int = 3,
        torch_threads: int | None = None,
        wait_warning_s: float = 60.0,
    ) -> None:
        if workers < 1:
            raise FaultlabError(f"--workers {workers}: expected at least 1 Ray worker")
        if gpus_per_worker < 0 or cpus_per_worker < 0:
            raise FaultlabError(f"--gpus-per-worker {gpus_per_worker}: expected a number >= 0 (fractions share a GPU)")
        if tasks_per_worker < 1 or max_attempts < 1:
            raise FaultlabError("tasks_per_worker and max_attempts must be >= 1")
        self.address = address
        self.workers = workers
        self.gpus_per_worker = float(gpus_per_worker)
        self.cpus_per_worker = float(cpus_per_worker)
        self.tasks_per_worker = tasks_per_worker
        self.max_attempts = max_attempts
        self.torch_threads = torch_threads if torch_threads is not None else max(1, int(cpus_per_worker))
        self.wait_warning_s = wait_warning_s
        self.replaced_workers = 0  # actors that died and were replaced, over this executor's life
        self._started_ray = False
        self._actor_cls: Any = None
        self._slots: dict[int, _Slot] = {}

    # ----- connection
    def connect(self) -> Any:
        """Join the cluster at ``address``, or start a local Ray; returns the ``ray`` module."""
        ray = import_ray()
        if ray.is_initialized():
            return ray
        common = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if self.address:
            check_reachable(self.address)
        try:
            if self.address:
                ray.init(address=self.address, **common)
            else:
                cpus = max(math.ceil(self.workers * self.cpus_per_worker), 1, os.cpu_count() or 1)
                ray.init(address="local", num_cpus=cpus, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"--address {self.address}" if self.address else "local Ray"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            hint = (
                "check that 'ray start --head --port PORT' runs there and that RAY_AUTH_MODE matches the head's (token or disabled)"
                if self.address else "check that ray can start on this machine"
            )
            raise FaultlabError(f"{where}: cannot start or join Ray ({first}); {hint}") from None
        self._started_ray = True
        log.info("Ray %s: %s", "joined" if self.address else "started locally", ray.cluster_resources())
        return ray

    def _actor_class(self, ray: Any) -> Any:
        if self._actor_cls is None:
            self._actor_cls = ray.remote(WorkerActor)
        return self._actor_cls.options(
            num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker, max_restarts=0, max_task_retries=0
        )

    def _forwarded_env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV_PREFIXES)}

    # ----- running
    def run(self, worker_factory: WorkerFactory, tasks: Iterable[Any]) -> Iterator[TaskOutcome]:
        n_tasks = len(tasks) if isinstance(tasks, Sized) else None
        source = iter(tasks)
        try:
            first = next(source)
        except StopIteration:
            return  # nothing to do (e.g. a resumed campaign that is complete): no Ray, no actors
        source = itertools.chain([first], source)
        ray = self.connect()
        from ray.exceptions import ActorUnschedulableError, RayError, RayTaskError

        actor_cls = self._actor_class(ray)
        factory_ref = ray.put(worker_factory)  # shipped once into the object store, not once per actor
        env = self._forwarded_env()
        pending: dict[Any, _Call] = {}
        retry: deque[tuple[Any, int]] = deque()
        exhausted = False
        setup_errors: list[str] = []
        max_replacements = max(3, self.max_attempts) * self.workers

        def start(index: int) -> None:
            slot = _Slot(index, actor_cls.remote(factory_ref, env, self.torch_threads, os.getcwd()))
            self._slots[index] = slot
            pending[slot.handle.setup.remote()] = _Call(slot, setup=True)

        def retire(slot: _Slot, *, replace: bool) -> None:
            if self._slots.get(slot.index) is not slot:
                return  # already retired after an earlier failed call
            del self._slots[slot.index]
            try:
                ray.kill(slot.handle, no_restart=True)
            except Exception:  # already gone
                pass
            if replace and self.replaced_workers < max_replacements:
                self.replaced_workers += 1
                log.warning("Ray worker %d died; starting a replacement and re-queueing its tasks", slot.index)
                start(slot.index)

        def next_task() -> tuple[Any, int] | None:
            nonlocal exhausted
            if retry:
                return retry.popleft()
            if exhausted:
                return None
            try:
                return next(source), 0
            except StopIteration:
                exhausted = True
                return None

        for i in range(self.workers if n_tasks is None else min(self.workers, n_tasks)):
            start(i)
        waited_since = time.monotonic()
        try:
            while True:
                for slot in list(self._slots.values()):
                    while slot.ready and slot.in_flight < self.tasks_per_worker:
                        item = next_task()
                        if item is None:
                            break
                        task, attempt = item
                        pending[slot.handle.run.remote(task)] = _Call(slot, task, attempt)
                        slot.in_flight += 1
                if not pending:
                    item = next_task()
                    if item is None:
                        return
                    # tasks remain but no worker is alive or starting: fail them all, loudly
                    why = setup_errors[-1] if setup_errors else "every Ray worker died"
                    log.error("no Ray worker left to run tasks: %s", why.splitlines()[0])
                    while item is not None:
                        yield TaskOutcome(item[0], error=f"no Ray worker could run this task: {why}")
                        item = next_task()
                    return
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.wait_warning_s)
                if not ready:
                    if not any(s.ready for s in self._slots.values()):
                        log.warning(
                            "waited %.0f s for Ray to start %d worker(s) needing %g CPU / %g GPU each; cluster has %s free",
                            time.monotonic() - waited_since, len(self._slots), self.cpus_per_worker, self.gpus_per_worker,
                            ray.available_resources(),
                        )
                    continue
                # also take whatever else is already finished, so a burst is handled in one pass
                more, _ = ray.wait([r for r in pending if r not in ready], num_returns=len(pending) - 1, timeout=0) if len(pending) > 1 else ([], None)
                for ref in list(ready) + list(more):
                    call = pending.pop(ref)
                    slot = call.slot
                    try:
                        value = ray.get(ref)
                    except RayTaskError as e:  # the worker code raised: report it, the actor lives on
                        cause = getattr(e, "cause", None) or e
                        if call.setup:
                            setup_errors.append(_describe(cause))
                            log.error("Ray worker %d could not build its worker: %s", slot.index, str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
                            retire(slot, replace=False)
                        else:
                            slot.in_flight -= 1
                            yield TaskOutcome(call.task, error=_describe(cause))
                        continue
                    except ActorUnschedulableError as e:
                        setup_errors.append(f"Ray cannot place a worker needing {self.cpus_per_worker:g} CPU / {self.gpus_per_worker:g} GPU: {e}")
                        retire(slot, replace=False)
                        if not call.setup:
                            retry.appendleft((call.task, call.attempt))
                        continue
                    except RayError as e:  # the actor (process or node) died: replace it, run its tasks elsewhere
                        if getattr(e, "actor_init_failed", False):  # its constructor failed (e.g. the factory
                            setup_errors.append(_describe(e))  # cannot be unpickled there): a new one would too
                            retire(slot, replace=False)
                            if not call.setup:
                                retry.appendleft((call.task, call.attempt))
                            continue
                        retire(slot, replace=True)
                        if call.setup:
                            setup_errors.append(_describe(e))
                        elif call.attempt + 1 >= self.max_attempts:
                            yield TaskOutcome(call.task, error=f"Ray worker died {self.max_attempts} times running this task: {_describe(e)}")
                        else:
                            retry.appendleft((call.task, call.attempt + 1))
                        continue
                    if call.setup:
                        slot.ready = True
                        log.debug("Ray worker %d ready on %s", slot.index, value)
                    else:
                        slot.in_flight -= 1
                        yield TaskOutcome(call.task, value)
        finally:
            self._kill_actors(ray)  # tasks still queued on them are dropped with them

    def _kill_actors(self, ray: Any) -> None:
        for slot in list(self._slots.values()):
            try:
                ray.kill(slot.handle, no_restart=True)
            except Exception:
                pass
        self._slots.clear()

    def close(self) -> None:
        """Kill this executor's actors and stop the local Ray it started (a joined cluster keeps running)."""
        if self._slots:
            self._kill_actors(import_ray())
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False


__all__ = ["RayExecutor", "WorkerActor", "check_reachable", "import_ray", "INSTALL_HINT"]
