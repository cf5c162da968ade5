"""Run ``faultlab rnn ...`` through the real entry point in-process (shared by tests/rnn and tests/rnn_repair)."""
from __future__ import annotations

from faultlab.cli import main


def run(capsys, *args: object) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``faultlab rnn *args``."""
    try:
        main(["rnn", *map(str, args)])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def build_into(out, model, *args: object):
    """``faultlab rnn build --model MODEL *args --out OUT``, which must succeed; returns ``out`` (for fixtures)."""
    try:
        main(["rnn", "build", "--model", str(model), *map(str, args), "--out", str(out)])
    except SystemExit as e:
        assert e.code in (0, None)
    return out
