"""A pool worker must not outlive its parent: after ``kill -9`` of a campaign, its workers exit by themselves."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from faultlab.executors.local import ProcessExecutor

    class Pid:
        def __call__(self, task):
            return os.getpid()

    def factory():
        return Pid()

    if __name__ == "__main__":
        outcomes = ProcessExecutor(workers=2).run(factory, range(8))
        pids = {next(outcomes).result for _ in range(4)}
        print(" ".join(map(str, sorted(pids))), flush=True)
        time.sleep(120)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent (init here) has not reaped it yet


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_parent_is_killed(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        pids = [int(v) for v in line.split()]
        assert pids and all(_alive(p) for p in pids), line
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p for p in pids if _alive(p)]
        for p in left:  # do not leave them running if the test fails
            os.kill(p, signal.SIGKILL)
        assert not left, f"workers {left} outlived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
