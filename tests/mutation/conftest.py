"""Fixtures for mutation tests: the toy training functions and a per-test call log."""
from __future__ import annotations

from pathlib import Path

import pytest

TOY_FILE = str(Path(__file__).with_name("toy_models.py"))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def toy_env(tmp_path, monkeypatch):
    """Routes the toy functions' call log into ``tmp_path / calls.log`` and returns that path."""
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAULTLAB_TOY_LOG", str(log))
    return log
