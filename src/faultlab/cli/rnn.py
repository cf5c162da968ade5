"""``faultlab rnn``: model-based analysis of recurrent networks (issues #7, #9)."""
from __future__ import annotations

import typer

app = typer.Typer(help="RNN model-based analysis: abstraction, stability, features, localisation.", no_args_is_help=True)
