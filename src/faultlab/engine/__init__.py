"""Campaign execution: engines (exact reference, fast) and the campaign driver."""
from ._base import Engine, EvalSet
from .exact import ExactEngine

ENGINES: dict[str, type[Engine]] = {"exact": ExactEngine}


def make_engine(name: str, **kwargs) -> Engine:
    """An engine by name (``exact``; ``fast`` where available)."""
    from ..errors import FaultlabError

    if "fast" not in ENGINES:
        try:
            from .fast import FastEngine

            ENGINES["fast"] = FastEngine
        except ImportError:
            pass
    if name not in ENGINES:
        raise FaultlabError(f"--engine {name!r}: expected one of {', '.join(sorted(ENGINES))}")
    return ENGINES[name](**kwargs)


__all__ = ["Engine", "EvalSet", "ExactEngine", "ENGINES", "make_engine"]
