"""Compare the abstract-model traffic of a clean model with the same model under a fault.

Both models' hidden states go through the clean model's abstraction, so the states mean
the same thing on both sides; the diff reports the state-visit and transition
distributions and names the states whose traffic changed most. A hardware fault is one
bit flip in one weight (``--fault "LAYER,INDEX,BIT"``), applied in place and undone on exit.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ..errors import FaultSpecError
from .markov import state_visits, transition_counts

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


@dataclass(frozen=True)
class WeightBitFlip:
    """Flip ``bits`` (usually one) of element ``index`` of the weight tensor named ``layer``."""

    layer: str
    index: tuple[int, ...]
    bits: tuple[int, ...]

    def __str__(self) -> str:
        index = ",".join(map(str, self.index)) + ("," if len(self.index) == 1 else "")
        bits = ";".join(map(str, self.bits))
        return f"{self.layer},({index}),{bits}"

    @classmethod
    def from_fault(cls, fault: Any) -> "WeightBitFlip":
        """A :class:`faultlab.faults.Fault` row (a weight bit flip at one element) as a ``WeightBitFlip``."""
        if fault.site != "weight" or fault.model != "flip" or fault.index is None or not fault.bits:
            raise FaultSpecError(f"fault {fault.id}: only weight bit flips at one element are supported here, got {fault.describe()}")
        return cls(layer=fault.layer, index=tuple(fault.index), bits=tuple(fault.bits))


def parse_fault(spec: str) -> WeightBitFlip:
    """Parse ``"LAYER,INDEX,BIT"``, e.g. ``"rnn.weight_hh_l0,(2,1),31"`` (the parentheses are optional)."""
    parts = [p.strip().strip("()[] ") for p in spec.split(",")]
    parts = [p for p in parts if p != ""]
    hint = "expected LAYER,INDEX,BIT such as 'rnn.weight_hh_l0,(2,1),31'"
    if len(parts) < 3:
        raise FaultSpecError(f"--fault {spec!r}: {hint}")
    try:
        index = tuple(int(p) for p in parts[1:-1])
        bit = int(parts[-1])
    except ValueError as e:
        raise FaultSpecError(f"--fault {spec!r}: INDEX and BIT must be integers; {hint}") from e
    if any(i < 0 for i in index):
        raise FaultSpecError(f"--fault {spec!r}: INDEX must be non-negative; {hint}")
    return WeightBitFlip(layer=parts[0], index=index, bits=(bit,))


def _flip_float32(values: Any, bits: tuple[int, ...]) -> Any:
    """``values`` (a float32 torch tensor or numpy array) with ``bits`` inverted in every element."""
    try:
        from ..bits import flip_bits
    except ImportError:  # pragma: no cover - faultlab.bits is a core module
        mask = np.int32(np.uint32(sum(1 << b for b in bits)).view(np.int32))
        if isinstance(values, np.ndarray):
            return (values.view(np.int32) ^ mask).view(np.float32)
        import torch

        ints = values.clone().view(torch.int32)
        ints ^= int(mask)
        return ints.view(torch.float32)
    return flip_bits(values, list(bits))


def _check_index(fault: WeightBitFlip, shape: tuple[int, ...], where: str) -> None:
    if len(fault.index) != len(shape) or any(not 0 <= i < n for i, n in zip(fault.index, shape)):
        raise FaultSpecError(f"--fault {fault}: index {fault.index} is outside {where} of shape {tuple(shape)}")
    if not fault.bits or not all(0 <= b < 32 for b in fault.bits):
        raise FaultSpecError(f"--fault {fault}: bits {fault.bits} must be between 0 and 31 for float32 weights")


def _torch_tensor(model: Any, name: str) -> Any:
    params = dict(model.named_parameters())
    if name in params:
        return params[name]
    modules = dict(model.named_modules())
    if name in modules and getattr(modules[name], "weight", None) is not None:
        return modules[name].weight
    names = ", ".join(list(params)[:8])
    raise FaultSpecError(f"--fault: no parameter or module {name!r}; parameters include {names}")


def _keras_variable(model: Any, name: str) -> Any:
    for var in model.weights:
        if name in (getattr(var, "path", None), var.name):
            return var
    for layer in model.layers:
        if layer.name == name and layer.weights:
            return layer.weights[0]
    names = ", ".join(getattr(v, "path", v.name) for v in model.weights[:8])
    raise FaultSpecError(f"--fault: no layer or weight {name!r}; weights include {names}")


@contextlib.contextmanager
def flipped_bit(model: Any, fault: WeightBitFlip) -> Iterator[tuple[float, float]]:
    """Apply ``fault`` to ``model``'s weights in place; yields ``(value_before, value_after)``; restores on exit."""
    from .subjects import is_torch_model

    if is_torch_model(model):
        import torch

        tensor = _torch_tensor(model, fault.layer)
        if tensor.dtype != torch.float32:
            raise FaultSpecError(f"--fault {fault}: {fault.layer} is {tensor.dtype}, only float32 weights are supported")
        _check_index(fault, tuple(tensor.shape), fault.layer)
        with torch.no_grad():
            original = tensor.data[fault.index].clone()
            tensor.data[fault.index] = _flip_float32(original.reshape(1), fault.bits)[0]
            try:
                yield float(original), float(tensor.data[fault.index])
            finally:
                tensor.data[fault.index] = original
        return
    var = _keras_variable(model, fault.layer)
    original = np.array(var.numpy(), copy=True)
    if original.dtype != np.float32:
        raise FaultSpecError(f"--fault {fault}: {fault.layer} is {original.dtype}, only float32 weights are supported")
    _check_index(fault, original.shape, fault.layer)
    faulty = original.copy()
    faulty[fault.index] = _flip_float32(original[fault.index].reshape(1), fault.bits)[0]
    var.assign(faulty)
    try:
        yield float(original[fault.index]), float(faulty[fault.index])
    finally:
        var.assign(original)


@dataclass(frozen=True)
class ModelDiff:
    """State-visit and transition traffic of a clean and a faulty model on the same inputs."""

    states: "pd.DataFrame"  #: state, clean_visits, faulty_visits, clean_share, faulty_share, change; biggest |change| first
    transitions: "pd.DataFrame"  #: source, target, clean, faulty, change; biggest |change| first
    state_distance: float  #: total variation distance between the two state-visit distributions
    transition_distance: float  #: total variation distance between the two transition distributions

    def top_states(self, n: int = 5) -> list[int]:
        """The ``n`` states whose visit counts changed most (changed ones only)."""
        changed = self.states[self.states["change"] != 0]
        return [int(s) for s in changed["state"].head(n)]


def _tv(a: np.ndarray, b: np.ndarray) -> float:
    pa = a / a.sum() if a.sum() else a.astype(float)
    pb = b / b.sum() if b.sum() else b.astype(float)
    return float(0.5 * np.abs(pa - pb).sum())


def diff_traces(clean: np.ndarray, faulty: np.ndarray, *, n_states: int) -> ModelDiff:
    """Compare traces (N, T+1) of the clean and faulty model (same abstraction, same inputs)."""
    import pandas as pd

    vc = state_visits(clean, n_states=n_states)
    vf = state_visits(faulty, n_states=n_states)
    states = pd.DataFrame({
        "state": np.arange(1, n_states),
        "clean_visits": vc[1:], "faulty_visits": vf[1:],
        "clean_share": vc[1:] / max(vc.sum(), 1), "faulty_share": vf[1:] / max(vf.sum(), 1),
        "change": vf[1:] - vc[1:],
    })
    states = states.iloc[np.argsort(-np.abs(states["change"].to_numpy()), kind="stable")].reset_index(drop=True)
    tc = transition_counts(clean, n_states=n_states)
    tf = transition_counts(faulty, n_states=n_states)
    src, dst = np.nonzero((tc > 0) | (tf > 0))
    transitions = pd.DataFrame({"source": src, "target": dst, "clean": tc[src, dst], "faulty": tf[src, dst],
                                "change": tf[src, dst] - tc[src, dst]})
    transitions = transitions.iloc[np.argsort(-np.abs(transitions["change"].to_numpy()), kind="stable")].reset_index(drop=True)
    return ModelDiff(states=states, transitions=transitions, state_distance=_tv(vc[1:], vf[1:]),
                     transition_distance=_tv(tc.ravel(), tf.ravel()))


__all__ = ["WeightBitFlip", "parse_fault", "flipped_bit", "ModelDiff", "diff_traces"]
