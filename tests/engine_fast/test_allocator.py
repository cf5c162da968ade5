"""tune_allocator: freed memory stays in the process for reuse (glibc); the fast engine turns it on unless told not to."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")

# allocate and touch 64 MiB, free it, and print the resident memory (kB) before, while held and after the free
_PROBE = """
import ctypes, sys
{tune}
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = rss()
p = libc.malloc(64 << 20)
ctypes.memset(p, 1, 64 << 20)
held = rss()
libc.free(p)
print(before, held, rss())
"""


def _probe(tune: bool) -> tuple[int, int, int]:
    code = _PROBE.format(tune="from faultlab.engine.allocator import tune_allocator; assert tune_allocator()" if tune else "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def test_freed_memory_is_kept_only_when_tuned():
    before, held, after = _probe(tune=False)
    assert held - before > 60_000  # the 64 MiB were touched
    assert after - before < 10_000  # glibc's default: a big block goes back to the kernel on free
    before, held, after = _probe(tune=True)
    assert held - before > 60_000
    assert after - before > 60_000  # tuned: the block stays in the heap for the next allocation


def test_fast_engine_tunes_unless_told_not_to(monkeypatch, digits):
    from faultlab.engine import fast
    from faultlab.models import DigitsCNN
    from faultlab.targets.torch import TorchTarget
    from faultlab.faults import Fault
    from faultlab.engine import EvalSet

    calls = []
    monkeypatch.setattr(fast, "tune_allocator", lambda: calls.append(1) or True)
    x, y = digits
    target = TorchTarget(DigitsCNN().eval(), example_input=x[:1])
    data = EvalSet.build(target, x, y)
    faults = [Fault(0, "fc1", (0, 0), (30,))]
    fast.FastEngine(tune_allocator=False).run(target, data, faults)
    assert calls == []
    fast.FastEngine().run(target, data, faults)
    assert calls == [1]
