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
