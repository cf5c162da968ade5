"""The fast engine's default memory budget is sized to the machine and the number of workers."""
from __future__ import annotations

import os

import pytest

from faultlab.cli.hardware import max_memory_option
from faultlab.engine.fast import AUTO_MAX_MEMORY_CAP, DEFAULT_MAX_MEMORY, FastEngine, default_max_memory

GiB = 1 << 30


def _fake_ram(monkeypatch: pytest.MonkeyPatch, ram: int) -> None:
    names = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": ram // 4096}
    monkeypatch.setattr(os, "sysconf", lambda name: names[name])


@pytest.mark.parametrize(
    ("ram_gib", "workers", "expected_gib"),
    [(24, 1, 4), (12, 1, 2), (3, 1, 1), (24, 2, 2), (24, 8, 1), (96, 1, 4), (96, 4, 4)],
)
def test_a_sixth_of_ram_per_worker_within_1_to_4_gib(monkeypatch, ram_gib, workers, expected_gib):
    _fake_ram(monkeypatch, ram_gib * GiB)
    assert default_max_memory(workers) == expected_gib * GiB
    assert max_memory_option(" AUTO ", workers) == expected_gib * GiB


def test_engine_default_uses_the_machine_sized_budget(monkeypatch):
    _fake_ram(monkeypatch, 12 * GiB)
    assert FastEngine(tune_allocator=False).max_memory == 2 * GiB
    assert FastEngine(max_memory=256 << 20, tune_allocator=False).max_memory == 256 << 20


def test_no_sysconf_falls_back_to_the_floor(monkeypatch):
    def missing(name):
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", missing)
    assert default_max_memory() == DEFAULT_MAX_MEMORY


def test_real_machine_value_is_within_bounds():
    assert DEFAULT_MAX_MEMORY <= default_max_memory() <= AUTO_MAX_MEMORY_CAP
    assert max_memory_option("4GiB", 8) == AUTO_MAX_MEMORY_CAP


@pytest.mark.parametrize(
    ("cache_mib", "expected_mib"),
    # of a 4 GiB budget: the cache's half is 2048 MiB; copies get what it leaves, within 512-1024 MiB
    [(0, 1024), (666, 1024), (1200, 848), (1536, 512), (1900, 512), (2048, 512), (3000, 512)],
)
def test_map_copies_get_what_the_cache_leaves_within_an_eighth_and_a_quarter(cache_mib, expected_mib):
    from faultlab.engine.fast import table_budget

    assert table_budget(4 * GiB, cache_mib << 20) == expected_mib << 20


@pytest.mark.parametrize("budget_mib", [8, 64])
def test_a_run_keeps_its_map_copies_within_that_budget(digits, budget_mib):
    from _helpers import random_faults
    from test_window import _target

    from faultlab.engine import EvalSet
    from faultlab.engine.fast import table_budget

    x, y = digits
    target = _target("resnet", x)
    data = EvalSet.build(target, x, y)
    eng = FastEngine(max_memory=budget_mib << 20)
    eng.run(target, data, random_faults(target, "activation", 20, seed=3))
    tm = eng._trace(target)
    tables = eng._windows(tm).tables
    block = eng._block  # kept: the 450 inputs are one block
    assert block is not None
    assert tables.budget == table_budget(eng.max_memory, (block.end - block.start) * tm.cache_row_bytes())
    assert 0 < tables.used <= tables.budget
