"""Hardware-fault commands: demo, layers, faults, run, plan, report, compare, show-activations."""
from __future__ import annotations

from . import app  # noqa: F401
