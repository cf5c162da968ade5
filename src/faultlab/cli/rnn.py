"""``faultlab rnn``: model-based analysis of recurrent networks (issues #7, #9)."""
from __future__ import annotations

import typer

app = typer.Typer(help="RNN model-based analysis: abstraction, stability, features, localisation, influence, repair.", no_args_is_help=True)

from . import rnn_repair as _rnn_repair  # noqa: E402,F401  (registers #9's commands on this app)
