"""Bit-level fault models on numpy arrays and torch tensors, by reinterpreting storage as integers.

These are real IEEE-754 (and two's-complement) bit operations: a value's storage is
viewed as a signed integer of the same width, XOR-ed / AND-ed / OR-ed with a mask and
viewed back. Bit 0 is the least significant bit; bit 31 is the float32 sign bit
(InjectTF2's and tf_injector's convention). Every function returns new values and
never modifies its input, so callers decide where to write them.
"""
from __future__ import annotations

from typing import Any, Iterable, Literal, Sequence

import numpy as np

from .errors import FaultSpecError

FaultModel = Literal["flip", "stuck0", "stuck1", "random", "zero"]
FAULT_MODELS: tuple[str, ...] = ("flip", "stuck0", "stuck1", "random", "zero")
BIT_MODELS: tuple[str, ...] = ("flip", "stuck0", "stuck1")

_NP_INT_OF_WIDTH = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _torch_int_of_width(width: int):
    import torch

    return {8: torch.int8, 16: torch.int16, 32: torch.int32, 64: torch.int64}[width]


def bit_width(dtype: Any) -> int:
    """Storage width in bits of a numpy or torch dtype (float32 -> 32, bfloat16 -> 16, int8 -> 8)."""
    if type(dtype).__module__.startswith("torch"):
        import torch

        if dtype in (torch.complex64, torch.complex128, torch.bool):
            raise FaultSpecError(f"dtype {dtype} is not supported for bit faults; use a float or integer tensor")
        return dtype.itemsize * 8
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise FaultSpecError(f"unknown dtype {dtype!r} for bit faults") from e
    if dt.kind not in "fiu" and dt.name != "bfloat16" and "float" not in dt.name:
        raise FaultSpecError(f"dtype {dt} is not supported for bit faults; use a float or integer array")
    return dt.itemsize * 8


def dtype_name(dtype: Any) -> str:
    """A short dtype name for messages and reports (``float32``, ``bfloat16``)."""
    return str(dtype).replace("torch.", "")


def check_bits(bits: Iterable[int], dtype: Any, *, where: str = "bit") -> tuple[int, ...]:
    """Validate bit positions against a dtype's width; returns them as a sorted tuple without repeats."""
    width = bit_width(dtype)
    out: list[int] = []
    for b in bits:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            raise FaultSpecError(f"{where} {b!r} is not an integer bit position (0 = least significant bit)")
        if not 0 <= int(b) < width:
            raise FaultSpecError(
                f"{where} {int(b)} is beyond {dtype_name(dtype)}'s {width} bits; expected 0..{width - 1} (0 = LSB, {width - 1} = MSB/sign)"
            )
        out.append(int(b))
    if not out:
        raise FaultSpecError(f"{where}: at least one bit position is needed")
    return tuple(sorted(set(out)))


def bit_mask(bits: Iterable[int], width: int) -> int:
    """The mask with ``bits`` set, as a signed integer that fits a ``width``-bit two's-complement type."""
    m = 0
    for b in bits:
        m |= 1 << int(b)
    if m >= 1 << (width - 1):
        m -= 1 << width
    return m


def as_int_view(values: Any) -> Any:
    """The same storage viewed as signed integers of the same width (no copy)."""
    if _is_torch(values):
        return values.view(_torch_int_of_width(values.element_size() * 8))
    arr = np.asarray(values)
    return arr.view(_NP_INT_OF_WIDTH[arr.dtype.itemsize * 8])


def _from_int_view(ints: Any, like: Any) -> Any:
    if _is_torch(like):
        return ints.view(like.dtype)
    return ints.view(np.asarray(like).dtype)


def apply_masks(values: Any, masks: Any, model: FaultModel) -> Any:
    """Apply per-element bit masks: ``flip`` XORs, ``stuck1`` ORs, ``stuck0`` clears the masked bits.

    ``masks`` is an integer array/tensor broadcastable to ``values`` (the signed integer type
    of the same width, see :func:`bit_mask`); this is the vectorised form the engines use to give
    every batch row its own fault.
    """
    ints = as_int_view(values.clone() if _is_torch(values) else np.array(values, copy=True))
    if _is_torch(values):
        import torch

        masks = torch.as_tensor(masks, dtype=ints.dtype, device=ints.device)
        if model == "flip":
            res = torch.bitwise_xor(ints, masks)
        elif model == "stuck1":
            res = torch.bitwise_or(ints, masks)
        elif model == "stuck0":
            res = torch.bitwise_and(ints, torch.bitwise_not(masks))
        else:
            raise FaultSpecError(f"fault model {model!r} is not a bit model; expected one of {', '.join(BIT_MODELS)}")
    else:
        masks = np.asarray(masks, dtype=ints.dtype)
        if model == "flip":
            res = ints ^ masks
        elif model == "stuck1":
            res = ints | masks
        elif model == "stuck0":
            res = ints & ~masks
        else:
            raise FaultSpecError(f"fault model {model!r} is not a bit model; expected one of {', '.join(BIT_MODELS)}")
    return _from_int_view(res, values)


def flip_bits(values: Any, bits: Sequence[int]) -> Any:
    """Values with the given bit positions inverted (one or several bits per element)."""
    w = bit_width(values.dtype)
    return apply_masks(values, bit_mask(check_bits(bits, values.dtype), w), "flip")


def stuck_at(values: Any, bits: Sequence[int], level: int) -> Any:
    """Values with the given bits forced to ``level`` (0 or 1)."""
    if level not in (0, 1):
        raise FaultSpecError(f"stuck-at level must be 0 or 1, got {level!r}")
    w = bit_width(values.dtype)
    return apply_masks(values, bit_mask(check_bits(bits, values.dtype), w), "stuck1" if level else "stuck0")


def int_value(value: float, info: Any) -> int:
    """``value`` as an integer of a dtype with limits ``info`` (numpy or torch ``iinfo``), or a FaultSpecError."""
    if not (float(value).is_integer() and info.min <= value <= info.max):
        raise FaultSpecError(f"random value {value:g} does not fit an integer tensor; expected an integer in {info.min}..{info.max}")
    return int(value)


def apply_fault_model(values: Any, model: FaultModel, bits: Sequence[int] = (), *, value: float | None = None) -> Any:
    """Apply one fault model to every element of ``values``.

    ``flip``/``stuck0``/``stuck1`` use ``bits``; ``zero`` writes 0; ``random`` writes ``value``
    (drawn by the planner from a seeded generator, so campaigns are reproducible).
    """
    if model == "flip":
        return flip_bits(values, bits)
    if model == "stuck0":
        return stuck_at(values, bits, 0)
    if model == "stuck1":
        return stuck_at(values, bits, 1)
    if model == "zero":
        return values.new_zeros(values.shape) if _is_torch(values) else np.zeros_like(np.asarray(values))
    if model == "random":
        if value is None:
            raise FaultSpecError("fault model 'random' needs a value (the planner draws it from its seed)")
        # floats: rounded from float64 as IEEE conversion does, so a value beyond a narrow format's range is
        # +-inf (as numpy writes it) instead of an overflow error; integers must fit (Target.check_fault says so)
        if _is_torch(values):
            import torch

            if values.is_floating_point():
                return values.new_full(values.shape, float(value), dtype=torch.float64).to(values.dtype)
            return values.new_full(values.shape, int_value(value, torch.iinfo(values.dtype)))
        arr = np.asarray(values)
        if np.issubdtype(arr.dtype, np.floating):
            with np.errstate(over="ignore"):
                return np.full(arr.shape, float(value), dtype=np.float64).astype(arr.dtype)
        return np.full_like(arr, int_value(value, np.iinfo(arr.dtype)))
    raise FaultSpecError(f"unknown fault model {model!r}; expected one of {', '.join(FAULT_MODELS)}")


__all__ = [
    "FaultModel",
    "FAULT_MODELS",
    "BIT_MODELS",
    "bit_width",
    "check_bits",
    "bit_mask",
    "as_int_view",
    "apply_masks",
    "flip_bits",
    "stuck_at",
    "apply_fault_model",
    "int_value",
]
