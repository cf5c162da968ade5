"""``faultlab mutate``: mutation testing of training functions (issue #6)."""
from __future__ import annotations

import typer

app = typer.Typer(help="Mutation testing of training (DeepCrime-style).", no_args_is_help=True)
