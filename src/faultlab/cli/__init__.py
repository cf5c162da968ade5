"""The ``faultlab`` command line: thin wrappers that parse, call the library and print.

Bad input raises :class:`faultlab.errors.FaultlabError`; :func:`main` prints it as one
line and exits with status 2, never with a traceback.
"""
from __future__ import annotations

import sys

import typer

from ..errors import FaultlabError
from ._common import fail

app = typer.Typer(
    name="faultlab",
    help="Inject faults into neural networks and measure how they fail.\n\nExample: faultlab demo",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from . import hardware as _hardware  # noqa: E402,F401  (registers the hardware-fault commands)
from . import report as _report  # noqa: E402,F401  (plan, report, compare)
from . import show as _show  # noqa: E402,F401  (show-activations)
from .mutate import app as _mutate_app  # noqa: E402
from .rnn import app as _rnn_app  # noqa: E402

app.add_typer(_mutate_app, name="mutate")
app.add_typer(_rnn_app, name="rnn")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the Typer app, turning user errors into one line and exit status 2."""
    try:  # typer 0.2x carries its own copy of click
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc

    try:
        rc = app(args=argv, standalone_mode=False)
    except click_exc.NoArgsIsHelpError as e:  # a bare group: its help, as click prints it
        e.show()
        raise SystemExit(e.exit_code) from None
    except click_exc.UsageError as e:  # a bad option value: one line, not typer's boxed panel
        where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        fail(" ".join(e.format_message().split()) + where)
    except FaultlabError as e:
        fail(str(e))
    except FileNotFoundError as e:
        fail(f"{e.filename or e}: no such file")
    except KeyboardInterrupt:
        fail("interrupted; rerun the same command to resume", code=130)
    raise SystemExit(rc if isinstance(rc, int) else 0)  # as click's standalone mode: main() always exits


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
