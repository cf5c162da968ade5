"""Every command and command group of the CLI has ``--help`` with an example."""
from __future__ import annotations

import typer.main
from typer.testing import CliRunner


def _commands(cmd, path: tuple[str, ...] = ()):
    yield path, cmd
    if hasattr(cmd, "commands"):  # a group (typer may carry its own click)
        for name, sub in cmd.commands.items():
            yield from _commands(sub, path + (name,))


def test_every_command_and_group_help_shows_an_example():
    from faultlab.cli import app

    root = typer.main.get_command(app)
    paths = [p for p, _ in _commands(root)]
    assert ("mutate", "run") in paths and ("rnn", "build") in paths and ("faults", "generate") in paths
    missing = []
    for path in paths:
        res = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
        if res.exit_code != 0 or "Example" not in res.output:
            missing.append(" ".join(path) or "faultlab")
    assert not missing, missing
