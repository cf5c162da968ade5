"""tf_injector CSV and InjectTF2 YAML readers and writers."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faultlab.errors import FaultSpecError
from faultlab.faults import Fault, FaultList, InjectConfig, Site


def test_tf_injector_csv_runs_unchanged(tmp_path):
    p = tmp_path / "tf.csv"
    p.write_text('Injection,Layer,TensorIndex,Bit\n0,conv2d,"(2, 1, 0, 7)",31\n1,dense_1,"(3, 4)",0\n')
    fl = FaultList.from_csv(p)
    assert [f.index for f in fl] == [(2, 1, 0, 7), (3, 4)]
    assert all(f.site == "weight" and f.model == "flip" for f in fl)
    assert [f.bits for f in fl] == [(31,), (0,)]


def test_round_trip_with_extra_columns(tmp_path):
    faults = [
        Fault(0, "conv1", (1, 0, 2, 2), (31,)),
        Fault(1, "fc1", (5,), (3, 7), "activation", "stuck1"),
        Fault(2, "fc2", None, (), "activation", "zero", input=4),
        Fault(3, "fc2.bias", (1,), (), "weight", "random", value=0.125),
    ]
    p = FaultList.of(faults).to_csv(tmp_path / "x.csv")
    back = FaultList.from_csv(p)
    assert list(back) == faults
    header = p.read_text().splitlines()[0]
    assert header.startswith("Injection,Layer,TensorIndex,Bit,")


def test_plain_list_writes_only_tf_injector_columns(tmp_path):
    p = FaultList.of([Fault(0, "a", (1,), (2,))]).to_csv(tmp_path / "y.csv")
    assert p.read_text().splitlines()[0] == "Injection,Layer,TensorIndex,Bit"


def test_duplicate_ids_are_rejected(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('Injection,Layer,TensorIndex,Bit\n0,a,"(1,)",2\n0,a,"(2,)",2\n')
    with pytest.raises(FaultSpecError, match="row 3.*duplicate"):
        FaultList.from_csv(p)


_faults = st.builds(
    Fault,
    id=st.integers(-(2**40), 2**40),
    layer=st.sampled_from(["conv1", "fc1", "block.0.conv", "weight", "flip"]),  # names that are also site/model words
    index=st.none() | st.lists(st.integers(0, 2**40), min_size=0, max_size=5).map(tuple),
    bits=st.lists(st.integers(0, 63), min_size=1, max_size=3).map(lambda b: tuple(sorted(set(b)))),
    site=st.sampled_from(["weight", "activation"]),
    model=st.sampled_from(["flip", "stuck0", "stuck1"]),
    value=st.none() | st.floats(allow_nan=False),
    input=st.none() | st.integers(0, 2**40),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_faults, max_size=30, unique_by=lambda f: f.id))
def test_a_list_gives_back_the_faults_it_was_made_of(faults):
    """The column store returns equal records, in order, by iteration and by index (negative too)."""
    fl = FaultList.of(faults, "mem")
    assert len(fl) == len(faults) and list(fl) == faults
    assert [fl[i] for i in range(-len(faults), 0)] == faults
    assert fl.layers() == list(dict.fromkeys(f.layer for f in faults))
    assert fl.ids.tolist() == [f.id for f in faults]
    with pytest.raises(IndexError):
        fl[len(faults)]


def test_a_list_fingerprint_is_the_record_hash_it_always_was():
    """Stores made before the column store keep resuming: the fingerprint hashes the same record reprs."""
    import hashlib

    faults = [Fault(0, "conv1", (1, 0, 2, 2), (31,)), Fault(7, "fc2", None, (), "activation", "zero", input=4)]
    h = hashlib.sha256()
    for f in faults:
        h.update(repr((f.id, f.layer, f.index, f.bits, f.site, f.model, f.value, f.input)).encode())
    assert FaultList.of(faults).fingerprint() == h.hexdigest()[:16]


def test_duplicate_ids_name_both_rows(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('Injection,Layer,TensorIndex,Bit\n5,a,"(1,)",2\n6,a,"(1,)",2\n5,a,"(2,)",2\n')
    with pytest.raises(FaultSpecError, match=r"row 4 \(Injection 5\): duplicate Injection id 5 \(also on row 2\)"):
        FaultList.from_csv(p)
    with pytest.raises(FaultSpecError, match="duplicate Injection id 1"):
        FaultList.of([Fault(1, "a", (0,), (1,)), Fault(1, "b", (0,), (1,))])


SITE = Site("dense_1", "activation", "dense_1", "Dense", (10,), "float32")


def test_injecttf2_specific_bit_every_input():
    cfg = InjectConfig.from_dict({"inject_layer": {"layer_name": "dense_1", "fault_type": "BitFlip", "bit_flip_type": "SpecificBit", "bit_number": 31, "probability": 1.0}})
    fl = cfg.expand(SITE, 50, seed=0)
    assert len(fl) == 50 and sorted(f.input for f in fl) == list(range(50))
    assert all(f.bits == (31,) and f.site == "activation" and 0 <= f.index[0] < 10 for f in fl)


def test_injecttf2_probability_and_seed():
    cfg = InjectConfig.from_dict({"inject_layer": {"layer_name": "dense_1", "fault_type": "BitFlip", "bit_flip_type": "RandomBit", "probability": 0.3}})
    a, b = cfg.expand(SITE, 2000, seed=1), cfg.expand(SITE, 2000, seed=1)
    assert list(a) == list(b)
    assert list(cfg.expand(SITE, 2000, seed=2)) != list(a)  # the seed is used
    assert all(f.site == "activation" and f.layer == "dense_1" and 0 <= f.index[0] < 10 and 0 <= f.input < 2000 for f in a)
    assert len({f.input for f in a}) == len(a)  # at most one fault per input
    assert abs(len(a) / 2000 - 0.3) < 0.04
    bits = np.array([f.bits[0] for f in a])
    assert bits.min() >= 0 and bits.max() <= 31 and len(set(bits)) > 20


def test_injecttf2_aliases_and_later_fields():
    c = InjectConfig.from_dict({"inject_layer": {"inject_layer_number": 3, "fault_type": "Zero", "elements": "all", "probability": 1.0}})
    assert c.layer_number == 3 and c.fault_type == "zero" and c.all_elements
    fl = c.expand(SITE, 3)
    assert all(f.index is None and f.model == "zero" for f in fl)
    alias = InjectConfig.from_dict({"inject_layer": {"layer_name": "x", "bit_flip_type": "SpecificBit", "bit_position": 7}})
    assert alias.bit == 7
    r = InjectConfig.from_dict({"inject_layer": {"layer_name": "x", "fault_type": "Random"}}).expand(SITE, 5, seed=2)
    assert all(f.model == "random" and 0 <= f.value < 1 for f in r)


def test_injecttf2_yaml_file(tmp_path):
    p = tmp_path / "c.yml"
    p.write_text("inject_layer:\n  layer_name: dense_1\n  fault_type: BitFlip\n  bit_flip_type: SpecificBit\n  bit_number: 31 # Max value is 31, min value is 0\n  probability: 1.0\n")
    assert InjectConfig.from_yaml(p).bit == 31


def test_numbers_too_large_to_store_name_their_row(tmp_path):
    p = tmp_path / "big.csv"
    p.write_text('Injection,Layer,TensorIndex,Bit\n0,a,"(1,)",2\n1,a,"(1,)",99999999999\n')
    with pytest.raises(FaultSpecError, match=r"big.csv row 3: a number in this row is out of range"):
        FaultList.from_csv(p)
    p.write_text('Injection,Layer,TensorIndex,Bit\n0,a,"(99999999999999999999,)",2\n')
    with pytest.raises(FaultSpecError, match=r"big.csv row 2: .*out of range"):
        FaultList.from_csv(p)


@pytest.mark.parametrize("text, want", [("(2, 1, 0, 7)", (2, 1, 0, 7)), ("[2,1]", (2, 1)), ("2 1", (2, 1)), ("(3 17)", (3, 17)), ("(3,)", (3,)), ("7", (7,)), ("all", None)])
def test_tensor_index_spellings(tmp_path, text, want):
    p = tmp_path / "f.csv"
    p.write_text(f'Injection,Layer,TensorIndex,Bit\n0,fc1,"{text}",30\n')
    assert list(FaultList.from_csv(p))[0].index == want


@pytest.mark.parametrize("text", ["(3, 17", "3, 17]]", "((3, 17))", "(3, 17]", "(3; 17)", "(3, x)"])
def test_tensor_index_with_unbalanced_brackets_or_other_text_names_its_row(tmp_path, text):
    p = tmp_path / "f.csv"
    p.write_text(f'Injection,Layer,TensorIndex,Bit\n0,fc1,"(1, 2)",30\n1,fc1,"{text}",30\n')
    with pytest.raises(FaultSpecError, match=r"row 3.*TensorIndex"):
        list(FaultList.from_csv(p))
