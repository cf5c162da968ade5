"""RayExecutor without an address: starts a private Ray on this machine and stops it on close."""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass

import pytest

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install 'faultlab[ray]')"),
]


@dataclass(frozen=True)
class Cube:
    """Builds once per actor (counts builds in a file per process), then cubes ints."""

    def __call__(self):
        pid = os.getpid()
        return lambda t: (t**3, pid)


def test_local_ray_runs_every_task_once_and_shuts_down():
    import ray
    import ray.cloudpickle

    from faultlab.executors.ray import RayExecutor

    if ray.is_initialized():
        pytest.skip("a Ray connection is already open in this process")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        ex = RayExecutor(workers=2)
        with ex:
            outcomes = list(ex.run(Cube(), range(40)))
            assert ray.is_initialized() and ray.cluster_resources().get("CPU", 0) >= 2
        assert not ray.is_initialized()  # close() stopped the Ray it started
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert sorted(o.task for o in outcomes) == list(range(40))
    assert all(o.ok and o.result[0] == o.task**3 for o in outcomes)
    assert os.getpid() not in {o.result[1] for o in outcomes}  # ran in actor processes, not here
