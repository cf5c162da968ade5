"""Shared CLI plumbing: the console, one-line errors, progress bars."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.text import Text
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)



def _piped_width() -> int | None:
    """Width for output that is not a terminal: rich's 80 columns would cut table cells to '...'."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return None
    return 240


console = Console(width=_piped_width())
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on one line to stderr and exit with ``code`` (2: bad input)."""
    # the message is plain text: rich markup would swallow anything in [brackets] (layer names, extras, indices)
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    raise SystemExit(code)


def check_output_file(path: Path, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse, before any work, an output file path that is a directory, sits below a file, or has a suffix we cannot write."""
    from ..errors import FaultlabError

    if path.is_dir():
        raise FaultlabError(f"{option} {path}: is a directory; give a file name (e.g. {path / ('out' + (suffixes[0] if suffixes else ''))})")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FaultlabError(f"{option} {path}: {parent} is a file, not a directory")
            break
    if suffixes and path.suffix.lower() not in suffixes:
        raise FaultlabError(f"{option} {path}: expected a file name ending in {' or '.join(suffixes)}")
    return path


def progress_bar(transient: bool = False) -> Progress:
    """A rich progress bar with count, elapsed time and ETA."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    )
