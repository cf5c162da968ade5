"""The RNN repair tests share the ``faultlab rnn`` runner of tests/rnn (rnn_cli_helpers)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "rnn"))
