"""``faultlab rnn flip|influence|datagen|segment|backdoor`` (issue #9); commands register on ``rnn.app``."""
from __future__ import annotations

from .rnn import app  # noqa: F401
