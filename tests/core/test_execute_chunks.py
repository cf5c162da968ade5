"""Campaign chunks grow while faults run fast, stay small while they run slowly, and cover every fault once."""
from __future__ import annotations

import time

import numpy as np

from faultlab.engine import campaign as campaign_mod
from faultlab.engine.campaign import execute
from faultlab.executors import InProcessExecutor
from faultlab.faults import Fault, FaultList
from faultlab.outcomes import FaultResult
from faultlab.store import CampaignStore


def _run(tmp_path, n: int, chunk_size: int, seconds_per_fault: float) -> tuple[list[int], list[int], int]:
    faults = FaultList.of([Fault(i, "fc1", (i % 7, 1), (i % 32,)) for i in range(n)])
    sizes: list[int] = []
    seen: list[int] = []

    def worker():
        def work(chunk):
            sizes.append(len(chunk))
            seen.extend(f.id for f in chunk)
            time.sleep(seconds_per_fault * len(chunk))
            return [FaultResult(f.id, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, codes=np.zeros(1, np.uint8)) for f in chunk]

        return work

    with CampaignStore(tmp_path) as store:
        store.init_campaign({"model": "m"}, {}, faults)
        new = execute(store, list(faults), worker, InProcessExecutor(), chunk_size=chunk_size)
        assert store.n_results() == n
    return sizes, seen, new


def test_fast_chunks_grow_to_the_cap(tmp_path):
    sizes, seen, new = _run(tmp_path, 2000, 8, 0.0)
    assert seen == list(range(2000)) and new == 2000  # every fault once, in order
    assert sizes[0] == 8 and max(sizes) == 8 * campaign_mod.MAX_CHUNK_GROWTH
    assert len(sizes) < 2000 // 8 / 2  # far fewer chunks than at a fixed size


def test_slow_chunks_keep_the_campaign_chunk_size(tmp_path, monkeypatch):
    monkeypatch.setattr(campaign_mod, "CHUNK_SECONDS", 0.01)  # 2 ms a fault: 5 faults take 0.01 s
    sizes, seen, new = _run(tmp_path, 60, 4, 0.002)
    assert seen == list(range(60)) and new == 60
    assert max(sizes) <= 5 and sizes[0] == 4
