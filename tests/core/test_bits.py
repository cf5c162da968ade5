"""Bit-level fault models against an independent struct-based computation."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from faultlab.bits import apply_fault_model, bit_width, check_bits, flip_bits, stuck_at
from faultlab.errors import FaultSpecError

_STRUCT = {np.float32: ("<f", "<I", 32), np.float64: ("<d", "<Q", 64), np.float16: ("<e", "<H", 16)}


def struct_flip(raw: bytes, bit: int, dtype) -> bytes:
    """Flip one bit of a value's little-endian storage through struct's integer view.

    Works on raw bytes end to end: going through a Python float would quieten NaN payloads.
    """
    _, ifmt, _ = _STRUCT[dtype]
    (i,) = struct.unpack(ifmt, raw)
    return struct.pack(ifmt, i ^ (1 << bit))


def same_bits(a, b) -> bool:
    return np.asarray(a).tobytes() == np.asarray(b).tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_flip_matches_struct(dtype, data):
    width = _STRUCT[dtype][2]
    v = data.draw(st.floats(allow_nan=False, width=width))
    bit = data.draw(st.integers(0, width - 1))
    arr = np.array([v], dtype=dtype)
    got = flip_bits(arr, [bit])
    want = np.frombuffer(struct_flip(arr.astype(arr.dtype.newbyteorder("<")).tobytes(), bit, dtype), dtype=np.dtype(dtype).newbyteorder("<"))
    assert same_bits(got, want)
    # torch storage gives the same bits
    t = flip_bits(torch.from_numpy(arr.copy()), [bit])
    assert same_bits(t.numpy(), want)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=8), st.lists(st.integers(0, 31), min_size=1, max_size=4))
def test_double_flip_restores_exact_bits(values, bits):
    arr = np.array(values, dtype=np.float32)
    assert same_bits(flip_bits(flip_bits(arr, bits), bits), arr)
    t = torch.tensor(values, dtype=torch.bfloat16)
    b16 = [b % 16 for b in bits]
    assert same_bits(flip_bits(flip_bits(t, b16), b16).view(torch.int16).numpy(), t.view(torch.int16).numpy())


@settings(max_examples=100, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=True, width=32))
def test_sign_bit_negates(v):
    arr = np.array([v], dtype=np.float32)
    out = flip_bits(arr, [31])
    assert same_bits(out, -arr)


def test_input_not_modified():
    arr = np.array([1.0, 2.0], dtype=np.float32)
    before = arr.copy()
    flip_bits(arr, [3])
    stuck_at(arr, [30], 1)
    assert same_bits(arr, before)
    t = torch.tensor([1.0, 2.0])
    flip_bits(t, [3])
    assert torch.equal(t, torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize(
    "dtype,width,sign",
    [(np.int8, 8, -128), (np.int32, 32, -(2**31))],
)
def test_integer_flip_twos_complement(dtype, width, sign):
    arr = np.array([5, -3, 0], dtype=dtype)
    out = flip_bits(arr, [width - 1])
    assert list(out.astype(np.int64)) == [5 + sign, -3 - sign, sign]


def test_uint8_and_stuck_at():
    arr = np.array([0b1010_0000, 0b0000_0001], dtype=np.uint8)
    assert list(flip_bits(arr, [7])) == [0b0010_0000, 0b1000_0001]
    assert list(stuck_at(arr, [0], 1)) == [0b1010_0001, 0b0000_0001]
    assert list(stuck_at(arr, [5, 7], 0)) == [0, 1]


def test_stuck_at_on_floats_matches_struct():
    v = np.array([1.5], dtype=np.float32)
    (i,) = struct.unpack("<I", struct.pack("<f", 1.5))
    want1 = np.frombuffer(struct.pack("<I", i | (1 << 30)), dtype="<f4")  # 0x7fc00000: a NaN
    want0 = np.frombuffer(struct.pack("<I", i & ~(1 << 23)), dtype="<f4")
    assert same_bits(stuck_at(v, [30], 1), want1)
    assert same_bits(stuck_at(v, [23], 0), want0)


def test_multi_bit_flip_equals_sequential_flips():
    arr = np.linspace(-3, 3, 7, dtype=np.float32)
    assert same_bits(flip_bits(arr, [2, 9, 30]), flip_bits(flip_bits(flip_bits(arr, [2]), [9]), [30]))


def test_widths_and_bfloat16_sign():
    assert bit_width(np.float32) == 32 and bit_width(torch.bfloat16) == 16 and bit_width(np.int8) == 8
    t = torch.tensor([2.5], dtype=torch.bfloat16)
    assert flip_bits(t, [15]).item() == -2.5


def test_value_models():
    arr = np.array([1.0, -2.0], dtype=np.float32)
    assert same_bits(apply_fault_model(arr, "zero"), np.zeros(2, np.float32))
    assert list(apply_fault_model(arr, "random", value=0.25)) == [0.25, 0.25]
    t = torch.tensor([3.0])
    assert apply_fault_model(t, "zero").item() == 0.0


@pytest.mark.parametrize("bits,dtype", [([32], np.float32), ([16], torch.float16), ([8], np.int8), ([-1], np.float32)])
def test_bit_beyond_dtype_is_rejected(bits, dtype):
    with pytest.raises(FaultSpecError, match="beyond"):
        check_bits(bits, dtype)


@pytest.mark.parametrize("value", [1e10, -1e10, 65504.0, 65520.0, 2.5, 1e-30])
def test_random_values_round_into_narrow_floats_as_numpy_does(value):
    """A value beyond float16's range is +-inf (numpy's conversion), not a torch overflow error."""
    import torch

    from faultlab.bits import apply_fault_model

    with np.errstate(over="ignore"):
        want = np.float16(value)  # independent: numpy's IEEE conversion from the Python float
    got_t = apply_fault_model(torch.zeros(3, dtype=torch.float16), "random", value=value)
    got_n = apply_fault_model(np.zeros(3, np.float16), "random", value=value)
    assert got_t.dtype == torch.float16 and got_n.dtype == np.float16
    assert (got_t.numpy().view(np.uint16) == np.array(want).view(np.uint16)).all()
    assert (got_n.view(np.uint16) == np.array(want).view(np.uint16)).all()


def test_random_values_that_do_not_fit_an_integer_tensor_are_refused():
    import torch

    from faultlab.bits import apply_fault_model
    from faultlab.errors import FaultSpecError
    from faultlab.faults import Fault, Site
    from faultlab.targets.base import Target

    assert apply_fault_model(torch.zeros(2, dtype=torch.int64), "random", value=7.0).tolist() == [7, 7]
    for bad in (-1e38, 2.5):
        with pytest.raises(FaultSpecError, match="does not fit"):
            apply_fault_model(torch.zeros(2, dtype=torch.int64), "random", value=bad)
        with pytest.raises(FaultSpecError, match="does not fit"):
            apply_fault_model(np.zeros(2, np.int8), "random", value=bad)
    site = Site("norm.count", "weight", "norm", "Normalization", (), "int64")
    with pytest.raises(FaultSpecError, match="Value -1e\\+38 does not fit norm.count's int64"):
        Target._check_on_site(Fault(0, "norm.count", None, (), "weight", "random", value=-1e38), site, "")
