"""Fixtures for Ray tests: a real Ray head on loopback, and a small DigitsCNN campaign."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

RAY_BIN = Path(sys.executable).with_name("ray")


def ray_importable() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``ray start --head`` on loopback with 2 CPUs and no dashboard; yields HOST:PORT, stops it afterwards.

    The head runs with ``--block`` as our child process, so teardown stops exactly this head
    (SIGTERM makes it ``ray stop`` its own processes) and never another Ray on the machine.
    Token auth is off for this loopback-only head, so the driver joins with a plain address.
    """
    if not ray_importable():
        pytest.skip("ray is not installed")
    if not RAY_BIN.exists():
        pytest.skip(f"no ray executable next to {sys.executable}")
    port = free_port()
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    old_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the driver side must agree with the head
    cmd = [str(RAY_BIN), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
           "--include-dashboard=false", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 90
        while b"Ray runtime started" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not come up:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if old_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old_auth


@dataclass
class SmallCampaign:
    """What a campaign test needs: target, data, faults and the picklable target recipe."""

    target: object
    data: object
    faults: object
    spec: object

    def campaign(self, out: Path, executor=None, target_factory=None, chunk_size: int = 8):
        from faultlab.engine.campaign import Campaign

        return Campaign(
            target=self.target, data=self.data, faults=self.faults, out=out, batch_size=256,
            executor=executor, target_factory=target_factory or self.spec, chunk_size=chunk_size,
            model_id="faultlab.models:digits_cnn",
        )


@pytest.fixture(scope="module")
def small_campaign() -> SmallCampaign:
    """DigitsCNN (cached pretrained weights) on 120 test digits with 60 weight + 60 activation faults."""
    import numpy as np

    from faultlab.datasets import Dataset, load_dataset
    from faultlab.faults import FaultList, renumber
    from faultlab.models import pretrained_digits_cnn, pretrained_digits_path
    from faultlab.planning import RandomPlanner
    from faultlab.targets import TargetSpec, make_target

    model = pretrained_digits_cnn(seed=0)
    weights = pretrained_digits_path(0)
    data = load_dataset("digits", split="test").head(120)
    # Canonical C strides: the bundled digits come as (N,1,8,8) with a channel stride that torch
    # reads as channels_last, so convolutions sum in another order than for the same values
    # after pickling (to a worker) -- and "masked" (bit-identical scores) flips for a few faults.
    data = Dataset(np.array(data.x, order="C", copy=True), data.y, data.name)
    target = make_target(model)
    target.trace(data.x[:1])
    w = RandomPlanner(n=60, site_kind="weight").plan(target.sites(), seed=3).faults
    a = RandomPlanner(n=60, site_kind="activation").plan(target.sites(), seed=4).faults
    faults = FaultList.of(renumber(list(w) + list(a)), "ray-test")
    return SmallCampaign(target, data, faults, TargetSpec("faultlab.models:digits_cnn", str(weights)))
