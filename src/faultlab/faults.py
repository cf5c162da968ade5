"""Faults and fault lists: the frozen ``Fault`` record, tf_injector CSV and InjectTF2 YAML.

A fault names a *site* (a layer's weight tensor or a layer's output), an element index
(or every element), a fault model (bit flip, stuck-at, random value, zero) and its bits.
Everything random is drawn when a list is planned, from a seed, so a stored list replays
exactly.
"""
from __future__ import annotations

import csv
import hashlib
import re
import sys
from array import array
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np

from .bits import BIT_MODELS, FAULT_MODELS, FaultModel
from .errors import FaultSpecError

SiteKind = Literal["weight", "activation"]
SITE_KINDS: tuple[str, ...] = ("weight", "activation")

_DTYPE_WIDTH = {
    "float64": 64, "float32": 32, "float16": 16, "bfloat16": 16,
    "int64": 64, "int32": 32, "int16": 16, "int8": 8, "uint8": 8,
}

CSV_COLUMNS = ("Injection", "Layer", "TensorIndex", "Bit")
CSV_EXTRA_COLUMNS = ("Site", "Model", "Bits", "Input", "Value")


@dataclass(frozen=True)
class Site:
    """A tensor that faults can hit: a parameter (``weight``) or a layer's output (``activation``).

    ``shape`` excludes the batch dimension for activation sites. ``name`` is what a fault
    list's ``Layer`` column uses: the layer name for activations and for a layer's main
    weight; ``layer.bias`` style paths for other parameters.
    """

    name: str
    kind: SiteKind
    layer: str
    layer_type: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def bit_width(self) -> int:
        try:
            return _DTYPE_WIDTH[self.dtype]
        except KeyError:
            raise FaultSpecError(f"site {self.name}: dtype {self.dtype} is not supported for bit faults") from None


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: where (site, element), what (model, bits or value) and, optionally, for which input.

    Slotted (no per-instance ``__dict__``): campaigns hold every fault of their list in memory.

    ``index`` None means every element of the site; ``input`` None means the fault applies to
    every evaluated input (a fault campaign), an integer restricts it to that input (InjectTF2's
    per-sample faults).
    """

    id: int
    layer: str
    index: tuple[int, ...] | None
    bits: tuple[int, ...] = ()
    site: SiteKind = "weight"
    model: FaultModel = "flip"
    value: float | None = None
    input: int | None = None

    def __post_init__(self) -> None:
        if self.site not in SITE_KINDS:
            raise FaultSpecError(f"fault {self.id}: site {self.site!r} must be one of {', '.join(SITE_KINDS)}")
        if self.model not in FAULT_MODELS:
            raise FaultSpecError(f"fault {self.id}: model {self.model!r} must be one of {', '.join(FAULT_MODELS)}")
        if self.model in BIT_MODELS and not self.bits:
            raise FaultSpecError(f"fault {self.id}: model {self.model!r} needs at least one bit")
        if self.model == "random" and self.value is None:
            raise FaultSpecError(f"fault {self.id}: model 'random' needs a Value")

    @property
    def bit(self) -> int:
        """The first (lowest) bit, tf_injector's ``Bit`` column; -1 for value faults."""
        return self.bits[0] if self.bits else -1

    def describe(self) -> str:
        idx = "all" if self.index is None else str(self.index)
        what = f"{self.model} bit{'s' if len(self.bits) > 1 else ''} {','.join(map(str, self.bits))}" if self.bits else self.model
        on = "" if self.input is None else f" on input {self.input}"
        return f"{self.site} {self.layer}{idx} {what}{on}"


def format_index(index: tuple[int, ...] | None) -> str:
    if index is None:
        return "all"
    return "(" + ", ".join(str(i) for i in index) + (",)" if len(index) == 1 else ")")


_INT_RE = re.compile(r"-?\d+")


def parse_index(text: str, *, where: str) -> tuple[int, ...] | None:
    """``"(2, 1, 0, 7)"``, ``"[2,1]"``, ``"2 1"`` or ``"all"`` (every element)."""
    t = text.strip()
    if t.lower() in ("all", "*"):
        return None
    body = t[1:-1] if len(t) >= 2 and (t[0], t[-1]) in (("(", ")"), ("[", "]")) else t  # one enclosing pair, or none
    body = body.strip()
    if not body:
        return ()
    parts = [p for p in re.split(r"[,\s]+", body) if p]
    if any(c in body for c in "()[]") or not all(_INT_RE.fullmatch(p) for p in parts):
        raise FaultSpecError(f"{where}: TensorIndex {text!r} is not a tuple of integers like \"(2, 1, 0, 7)\" or 'all'")
    return tuple(int(p) for p in parts)


def _parse_bits(text: str, *, where: str) -> tuple[int, ...]:
    parts = [p for p in re.split(r"[,;\s()\[\]]+", text.strip()) if p]
    if not parts or not all(_INT_RE.fullmatch(p) for p in parts):
        raise FaultSpecError(f"{where}: bits {text!r} must be integers like 31 or \"3;7\"")
    return tuple(sorted({int(p) for p in parts}))


class _Columns:
    """Faults appended column by column into flat arrays: under a hundred bytes a fault instead of a few hundred as objects."""

    def __init__(self) -> None:
        self.strings: dict[str, int] = {}
        self.ids = array("q")
        self.codes = array("i")  # layer, site, model: three string codes per fault
        self.index_off = array("q", [0])
        self.index_vals = array("q")
        self.bits_off = array("q", [0])
        self.bits_vals = array("h")
        self.values = array("d")
        self.inputs = array("q")
        self.flags = array("b")  # 1: index is None (every element), 2: has a value, 4: has an input
        self.lines = array("i")

    def code(self, text: str) -> int:
        c = self.strings.get(text)
        if c is None:
            c = self.strings[text] = len(self.strings)
        return c

    def add(self, f: Fault, line: int = 0) -> None:
        self.ids.append(f.id)
        self.codes.extend((self.code(f.layer), self.code(f.site), self.code(f.model)))
        if f.index is not None:
            self.index_vals.extend(f.index)
        self.index_off.append(len(self.index_vals))
        self.bits_vals.extend(f.bits)
        self.bits_off.append(len(self.bits_vals))
        self.values.append(0.0 if f.value is None else f.value)
        self.inputs.append(-1 if f.input is None else f.input)
        self.flags.append((f.index is None) | (f.value is not None) << 1 | (f.input is not None) << 2)
        self.lines.append(line)


class FaultList:
    """An ordered list of faults with unique ids, plus where it came from (for error messages).

    Stored column by column (numpy arrays and one table of layer, site and model names), so a
    campaign of a million faults holds tens of megabytes, not gigabytes; :class:`Fault` records
    are made as the list is iterated or indexed.
    """

    def __init__(self, faults: Iterable[Fault] = (), source: str = "<memory>", rows: dict[int, int] | None = None) -> None:
        cols = faults if isinstance(faults, _Columns) else _Columns()
        if not isinstance(faults, _Columns):
            for f in faults:
                cols.add(f, (rows or {}).get(f.id, 0))
        self.source = source
        self._names = list(cols.strings)
        self._ids = np.frombuffer(cols.ids, dtype=np.int64) if len(cols.ids) else np.zeros(0, np.int64)
        self._codes = np.frombuffer(cols.codes, dtype=np.int32).reshape(-1, 3) if len(cols.codes) else np.zeros((0, 3), np.int32)
        self._index_off = np.frombuffer(cols.index_off, dtype=np.int64)
        self._index_vals = np.frombuffer(cols.index_vals, dtype=np.int64) if len(cols.index_vals) else np.zeros(0, np.int64)
        self._bits_off = np.frombuffer(cols.bits_off, dtype=np.int64)
        self._bits_vals = np.frombuffer(cols.bits_vals, dtype=np.int16) if len(cols.bits_vals) else np.zeros(0, np.int16)
        self._values = np.frombuffer(cols.values, dtype=np.float64) if len(cols.values) else np.zeros(0)
        self._inputs = np.frombuffer(cols.inputs, dtype=np.int64) if len(cols.inputs) else np.zeros(0, np.int64)
        self._flags = np.frombuffer(cols.flags, dtype=np.int8) if len(cols.flags) else np.zeros(0, np.int8)
        self._lines = np.frombuffer(cols.lines, dtype=np.int32) if len(cols.lines) else np.zeros(0, np.int32)
        self._ids.flags.writeable = False  # shared with callers through .ids
        self._fingerprint: str | None = None
        if len(self._ids) > 1:
            order = np.argsort(self._ids, kind="stable")
            dup = np.flatnonzero(self._ids[order][1:] == self._ids[order][:-1])
            if len(dup):
                # the first repeat in list order, and where the id came first
                second = int(order[dup + 1].min())
                fid = int(self._ids[second])
                first = int(np.flatnonzero(self._ids == fid)[0])
                also = f" (also on row {int(self._lines[first])})" if self._lines[first] else ""
                raise FaultSpecError(f"{self._where_at(second)}: duplicate Injection id {fid}{also}; every Injection id must be unique")

    @classmethod
    def of(cls, faults: Iterable[Fault], source: str = "<memory>") -> "FaultList":
        return cls(faults, source)

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[Fault]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i: int) -> Fault:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"fault list index {i} out of range for {n} faults")
        i %= n
        flags = int(self._flags[i])
        layer, site, model = (self._names[c] for c in self._codes[i].tolist())
        index = None if flags & 1 else tuple(self._index_vals[self._index_off[i] : self._index_off[i + 1]].tolist())
        bits = tuple(self._bits_vals[self._bits_off[i] : self._bits_off[i + 1]].tolist())
        value = float(self._values[i]) if flags & 2 else None
        inp = int(self._inputs[i]) if flags & 4 else None
        return Fault(int(self._ids[i]), layer, index, bits, site, model, value, inp)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FaultList):
            return NotImplemented
        return self.source == other.source and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"FaultList({len(self)} faults from {self.source})"

    @property
    def faults(self) -> tuple[Fault, ...]:
        """Every fault as a record (materialises the list; iterate instead where it can be long)."""
        return tuple(self)

    @property
    def ids(self) -> np.ndarray:
        """The faults' ids, in list order (read-only)."""
        return self._ids

    def where(self, fault: Fault) -> str:
        """``faults.csv row 7 (Injection 5)``: a location for error messages."""
        at = np.flatnonzero(self._ids == fault.id)
        return self._where_at(int(at[0])) if len(at) else f"{self.source} (fault {fault.id})"

    def _where_at(self, i: int) -> str:
        row, fid = int(self._lines[i]), int(self._ids[i])
        return f"{self.source} row {row} (Injection {fid})" if row else f"{self.source} (fault {fid})"

    def fingerprint(self) -> str:
        """A hash of the list's content, to recognise the same campaign on resume (computed once: the list is immutable)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for f in self:
                h.update(repr((f.id, f.layer, f.index, f.bits, f.site, f.model, f.value, f.input)).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def layers(self) -> list[str]:
        return [self._names[c] for c in dict.fromkeys(self._codes[:, 0].tolist())]

    # ----- CSV (tf_injector layout) -----
    @classmethod
    def from_csv(cls, path: str | Path) -> "FaultList":
        """Read a tf_injector list (``Injection,Layer,TensorIndex,Bit``) with optional faultlab columns.

        Extra columns ``Site`` (weight|activation), ``Model`` (flip|stuck0|stuck1|random|zero),
        ``Bits`` (several bits, ``3;7``), ``Input`` and ``Value`` default to a single weight bit flip.
        """
        p = Path(path)
        if not p.exists():
            raise FaultSpecError(f"{p}: no such fault list; create one with 'faultlab faults generate' or 'faultlab plan'")
        if p.is_dir():
            raise FaultSpecError(f"{p}: is a directory; expected a fault list CSV file")
        try:
            with p.open(encoding="utf-8-sig", newline="") as fh:
                return cls._read_csv(fh, p)
        except UnicodeDecodeError as e:
            raise FaultSpecError(f"{p}: not a text CSV file ({e.reason})") from e
        except csv.Error as e:  # e.g. a field longer than the csv module's limit: not a fault list
            raise FaultSpecError(f"{p}: not a readable CSV fault list ({e})") from None

    @classmethod
    def _read_csv(cls, fh: Any, p: Path) -> "FaultList":
        """Rows streamed from the open file into columns: no copy of the text, no record per fault."""
        cols = _Columns()
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise FaultSpecError(
                f"{p}: missing column(s) {', '.join(missing)}; expected a header 'Injection,Layer,TensorIndex,Bit' (got {','.join(header) or 'nothing'})"
            )
        reader.fieldnames = header
        for line_no, row in enumerate(reader, start=2):
            where = f"{p} row {line_no}"
            if None in row or any(v is None for v in row.values()):
                raise FaultSpecError(f"{where}: expected {len(header)} fields as in the header, got a different number (quote TensorIndex tuples: \"(2, 1)\")")
            get = lambda k: (row.get(k) or "").strip()  # noqa: E731
            if not any(get(k) for k in header):
                continue
            try:
                fid = int(get("Injection"))
            except ValueError:
                raise FaultSpecError(f"{where}: Injection {get('Injection')!r} must be an integer id") from None
            layer = sys.intern(get("Layer"))
            if not layer:
                raise FaultSpecError(f"{where}: Layer is empty; expected a layer name such as conv1 or dense_1")
            index = parse_index(get("TensorIndex"), where=where)
            site = sys.intern(get("Site").lower() or "weight")
            model = sys.intern(get("Model").lower() or "flip")
            if site not in SITE_KINDS:
                raise FaultSpecError(f"{where}: Site {site!r} must be weight or activation")
            if model not in FAULT_MODELS:
                raise FaultSpecError(f"{where}: Model {model!r} must be one of {', '.join(FAULT_MODELS)}")
            bits: tuple[int, ...] = ()
            if get("Bits"):
                bits = _parse_bits(get("Bits"), where=where)
            elif get("Bit") and get("Bit") != "-1":
                bits = _parse_bits(get("Bit"), where=where)
            if model in BIT_MODELS and not bits:
                said = "empty" if not get("Bit") else f"{get('Bit')} (tf_injector's 'no bit')"
                raise FaultSpecError(f"{where}: Bit is {said}; a {model} fault needs a bit position (0 = LSB, 31 = float32 sign)")
            value = None
            if get("Value"):
                try:
                    value = float(get("Value"))
                except ValueError:
                    raise FaultSpecError(f"{where}: Value {get('Value')!r} must be a number") from None
            inp = None
            if get("Input"):
                try:
                    inp = int(get("Input"))
                except ValueError:
                    raise FaultSpecError(f"{where}: Input {get('Input')!r} must be an integer input index") from None
            try:
                fault = Fault(fid, layer, index, bits, site, model, value, inp)  # type: ignore[arg-type]
            except FaultSpecError as e:
                raise FaultSpecError(f"{where}: {e}") from None
            try:
                cols.add(fault, line_no)
            except OverflowError:
                raise FaultSpecError(f"{where}: a number in this row is out of range (Bit must be 0..63; Injection, TensorIndex and Input must fit in 64 bits)") from None
        if not len(cols.ids):
            raise FaultSpecError(f"{p}: the fault list has a header but no faults")
        return cls(cols, str(p))

    def to_csv(self, path: str | Path) -> Path:
        """Write tf_injector's four columns, plus faultlab's extra columns only where some fault needs them."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        extra = []
        sites = {self._names[c] for c in np.unique(self._codes[:, 1]).tolist()}
        models = {self._names[c] for c in np.unique(self._codes[:, 2]).tolist()}
        if sites - {"weight"}:
            extra.append("Site")
        if models - {"flip"}:
            extra.append("Model")
        if bool((np.diff(self._bits_off) > 1).any()):
            extra.append("Bits")
        if bool((self._flags & 4).any()):
            extra.append("Input")
        if bool((self._flags & 2).any()):
            extra.append("Value")
        with p.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(list(CSV_COLUMNS) + extra)
            for f in self:
                row: list[Any] = [f.id, f.layer, format_index(f.index), f.bit]
                for c in extra:
                    row.append(
                        {
                            "Site": f.site,
                            "Model": f.model,
                            "Bits": ";".join(map(str, f.bits)),
                            "Input": "" if f.input is None else f.input,
                            "Value": "" if f.value is None else repr(f.value),
                        }[c]
                    )
                w.writerow(row)
        return p


def renumber(faults: Sequence[Fault], start: int = 0) -> list[Fault]:
    """The same faults with consecutive ids from ``start``."""
    return [replace(f, id=start + i) for i, f in enumerate(faults)]


__all__ = ["Site", "SiteKind", "Fault", "FaultList", "parse_index", "format_index", "renumber", "CSV_COLUMNS"]


# ----- InjectTF2 YAML -----
_TF2_FAULT_TYPES = {"bitflip": "flip", "random": "random", "zero": "zero"}


def _unique_key_loader() -> Any:
    """A yaml SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


@dataclass(frozen=True)
class InjectConfig:
    """InjectTF2's ``inject_layer`` config: per input, with probability p, fault one output element.

    Read as InjectTF2 writes it: ``layer_name`` or ``inject_layer_number`` (0-based layer index),
    ``fault_type: BitFlip|Random|Zero``, ``bit_flip_type: RandomBit|SpecificBit``, ``bit_number``
    (alias ``bit_position``), ``probability``, ``elements: random|all``. :meth:`expand` turns it into
    a concrete, seeded :class:`FaultList` of activation faults, one per affected input.
    """

    layer_name: str | None
    layer_number: int | None
    fault_type: str  # flip | random | zero
    random_bit: bool
    bit: int | None
    probability: float
    all_elements: bool
    source: str = "<memory>"
    #: the field the bit came from (``bit_number``, or its alias ``bit_position``), for messages
    bit_key: str = "bit_number"

    @classmethod
    def from_yaml(cls, path: str | Path) -> "InjectConfig":
        import yaml

        p = Path(path)
        if not p.exists():
            raise FaultSpecError(f"{p}: no such config file; expected an InjectTF2 YAML with an inject_layer section")
        try:
            doc = yaml.load(p.read_text(), Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader subclass)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" line {mark.line + 1}" if mark is not None else ""
            raise FaultSpecError(f"{p}{at}: malformed YAML ({getattr(e, 'problem', None) or e})") from None
        return cls.from_dict(doc, source=str(p))

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = "<memory>") -> "InjectConfig":
        if not isinstance(doc, dict) or not isinstance(doc.get("inject_layer"), dict):
            raise FaultSpecError(f"{source}: expected a mapping with an 'inject_layer' section (layer_name, fault_type, bit_flip_type, probability)")
        c = doc["inject_layer"]
        known = {"layer_name", "inject_layer_number", "layer_number", "fault_type", "bit_flip_type", "bit_number", "bit_position", "probability", "elements"}
        unknown = sorted(set(c) - known)
        if unknown:
            raise FaultSpecError(f"{source}: inject_layer.{unknown[0]} is not a known field; expected {', '.join(sorted(known))}")
        name = c.get("layer_name")
        number = c.get("inject_layer_number", c.get("layer_number"))
        if name is None and number is None:
            raise FaultSpecError(f"{source}: inject_layer needs layer_name (e.g. dense_1) or inject_layer_number")
        if number is not None and (isinstance(number, bool) or not isinstance(number, int) or number < 0):
            raise FaultSpecError(f"{source}: inject_layer.inject_layer_number must be a layer index >= 0, got {number!r}")
        ftype_raw = str(c.get("fault_type", "BitFlip"))
        ftype = _TF2_FAULT_TYPES.get(ftype_raw.lower().replace("_", ""))
        if ftype is None:
            raise FaultSpecError(f"{source}: inject_layer.fault_type {ftype_raw!r} must be BitFlip, Random or Zero")
        bft = str(c.get("bit_flip_type", "RandomBit"))
        if bft not in ("RandomBit", "SpecificBit"):
            raise FaultSpecError(f"{source}: inject_layer.bit_flip_type {bft!r} must be RandomBit or SpecificBit")
        bit_key = "bit_number" if "bit_number" in c else "bit_position"  # errors name the field the user wrote
        bit = c.get(bit_key)
        if bft == "SpecificBit" and ftype == "flip" and bit is None:
            raise FaultSpecError(f"{source}: bit_flip_type SpecificBit needs bit_number (0..31; 31 is the float32 sign)")
        if bit is not None and (isinstance(bit, bool) or not isinstance(bit, int)):
            raise FaultSpecError(f"{source}: inject_layer.{bit_key} must be an integer 0..31, got {bit!r}")
        prob = c.get("probability", 1.0)
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 < float(prob) <= 1.0:
            raise FaultSpecError(f"{source}: inject_layer.probability must be a number in (0, 1] (0 would inject nothing), got {prob!r}")
        elements = str(c.get("elements", "random")).lower()
        if elements not in ("random", "all"):
            raise FaultSpecError(f"{source}: inject_layer.elements must be random or all, got {elements!r}")
        return cls(
            layer_name=None if name is None else str(name),
            layer_number=number,
            fault_type=ftype,
            random_bit=bft == "RandomBit",
            bit=None if bit is None else int(bit),
            bit_key=bit_key,
            probability=float(prob),
            all_elements=elements == "all",
            source=source,
        )

    def expand(self, site: Site, n_inputs: int, *, seed: int = 0) -> FaultList:
        """One activation fault per input hit (probability p), on ``site``; seeded and reproducible."""
        if self.bit is not None and not 0 <= self.bit < site.bit_width:  # checked with RandomBit too: never a meaningful bit
            raise FaultSpecError(
                f"{self.source}: inject_layer.{self.bit_key} {self.bit} is beyond {site.dtype}'s {site.bit_width} bits; expected 0..{site.bit_width - 1}"
            )
        rng = np.random.default_rng(seed)
        hit = rng.random(n_inputs) < self.probability
        faults: list[Fault] = []
        for i in np.flatnonzero(hit):
            index = None if self.all_elements else tuple(int(v) for v in np.unravel_index(int(rng.integers(site.numel)), site.shape))
            bits: tuple[int, ...] = ()
            value = None
            if self.fault_type == "flip":
                bits = (int(rng.integers(site.bit_width)),) if self.random_bit else (int(self.bit),)  # type: ignore[arg-type]
            elif self.fault_type == "random":
                value = float(rng.random())
            faults.append(Fault(len(faults), site.name, index, bits, "activation", self.fault_type, value, int(i)))  # type: ignore[arg-type]
        return FaultList(tuple(faults), self.source)


__all__ += ["InjectConfig"]
