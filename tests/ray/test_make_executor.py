"""``make_executor``: names, option checks, the install hint without ray, and lazy ray imports."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from faultlab.errors import FaultlabError
from faultlab.executors import InProcessExecutor, ProcessExecutor, make_executor


def test_local_executor_by_worker_count():
    assert isinstance(make_executor("local"), InProcessExecutor)
    pool = make_executor("local", workers=3)
    assert isinstance(pool, ProcessExecutor) and pool.workers == 3


def test_ray_executor_keeps_its_options():
    pytest.importorskip("ray")
    from faultlab.executors.ray import RayExecutor

    ex = make_executor("ray", workers=4, address="10.0.0.1:6379", gpus_per_worker=0.5)
    assert isinstance(ex, RayExecutor)
    assert (ex.address, ex.workers, ex.gpus_per_worker) == ("10.0.0.1:6379", 4, 0.5)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(name="dask"), "--executor 'dask'"),
        (dict(name="local", address="h:1"), "--address h:1"),
        (dict(name="local", gpus_per_worker=1.0), "--gpus-per-worker"),
        (dict(name="ray", workers=0), "--workers 0"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, needle):
    with pytest.raises(FaultlabError) as e:
        make_executor(kwargs.pop("name"), **kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_ray_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes ``import ray`` fail like an uninstalled package
    with pytest.raises(FaultlabError, match=r"pip install 'faultlab\[ray\]'"):
        make_executor("ray", workers=2)
    from faultlab.executors.ray import RayExecutor

    with pytest.raises(FaultlabError, match=r"pip install 'faultlab\[ray\]'"):
        list(RayExecutor(workers=1).run(lambda: (lambda t: t), [1]))


def test_ray_is_imported_only_when_a_ray_executor_runs():
    code = (
        "import sys; import faultlab, faultlab.executors as e; from faultlab.executors import RayExecutor; "
        "e.make_executor('ray', workers=2) if 'ray' not in sys.modules else None; print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_nothing_to_run_starts_no_ray():
    """A resumed, complete campaign hands over no tasks: no connection attempt, no actors."""
    from faultlab.executors.ray import RayExecutor

    ex = RayExecutor(address="203.0.113.1:1", workers=2)  # unroutable: connecting would fail slowly
    assert list(ex.run(lambda: (lambda t: t), [])) == []
    assert not ex._started_ray


def test_unreachable_address_fails_fast_with_one_line():
    pytest.importorskip("ray")
    from faultlab.executors.ray import RayExecutor

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FaultlabError) as e:
        list(RayExecutor(address=f"127.0.0.1:{port}", workers=1).run(lambda: (lambda t: t), [1]))
    assert f"--address 127.0.0.1:{port}: no Ray head answers there" in str(e.value) and "\n" not in str(e.value)
