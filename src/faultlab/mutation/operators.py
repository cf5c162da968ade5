"""Mutation operators: every keyword argument of a training function, plus DeepCrime's training-level ones.

An operator's domain comes from the parameter's name, type and default -- booleans flip;
activations, initialisers, regularisers, optimisers and losses come from catalogues;
rates, sizes, depths and epochs from ranges -- and a YAML file can override any domain.
Functions that take ``x_train, y_train`` (fed from ``load_training_data()`` in their module)
also get DeepCrime's data operators; ``batch_size`` and validation arguments add
``disable_batching`` and ``remove_validation_set``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..errors import FaultSpecError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "hard_sigmoid", "softplus", "softsign", "elu", "selu", "exponential", "linear", "swish", "gelu")
INITIALIZERS = (
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
    "orthogonal", "zeros", "ones", "random_normal", "random_uniform", "truncated_normal",
)
TORCH_INITIALIZERS = ("kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal", "orthogonal", "zeros", "ones", "normal", "uniform")
REGULARIZERS = (None, "l1", "l2", "l1_l2")
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad", "adadelta", "adamax", "nadam")
REGRESSION_LOSSES = ("mean_squared_error", "mean_absolute_error", "mean_squared_logarithmic_error", "huber", "log_cosh")
ONE_HOT_LOSSES = ("categorical_crossentropy", "categorical_hinge", "kl_divergence", "mean_squared_error", "poisson")
TORCH_CLASSIFICATION_LOSSES = ("cross_entropy", "multi_margin", "nll")
#: Keyword arguments that carry data or plumbing, never mutated as keyword operators.
NOT_OPERATORS = frozenset(
    {"x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "validation_data", "validation_split",
     "seed", "verbose", "callbacks", "logs_dir", "self"}
)
DATA_OPERATORS = ("change_label", "delete_training_data", "unbalance_train_data", "add_noise", "make_output_classes_overlap")
#: revision of the data operators' definitions, part of their store keys: runs made under an earlier
#: definition are not reused (before 2: shares of all samples, noise at the data's whole SD; before 3:
#: regression labels deleted as a share of all samples, not of every SD bucket)
DATA_OPERATOR_REVISION = 3
#: the revision each operator's key holds: the last revision that changed what it does to any labels,
#: so runs of operators that revision 3 left alone are still reused
DATA_OPERATOR_REVISIONS = {"change_label": 2, "delete_training_data": 3, "unbalance_train_data": 2, "add_noise": 2,
                           "make_output_classes_overlap": 2}


@dataclass(frozen=True)
class Domain:
    """The values an operator may take: a finite list, or a numeric range ``[low, high]``.

    ``sweep`` are the values tried by default; ``search_to`` is the extreme a binary search
    for the kill threshold walks towards from the default.
    """

    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    integer: bool = False
    sweep: tuple[Any, ...] = ()
    search_to: float | None = None

    @property
    def numeric(self) -> bool:
        return self.low is not None and self.high is not None

    def contains(self, value: Any) -> bool:
        if self.numeric:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
            if self.integer and float(value) != int(value):
                return False
            return self.low <= value <= self.high  # type: ignore[operator]
        return any(_same(value, v) for v in self.values)

    def describe(self) -> str:
        if self.numeric:
            kind = "integer" if self.integer else "number"
            return f"{kind} in [{_fmt(self.low)}, {_fmt(self.high)}]"
        return "one of " + ", ".join(_fmt(v) for v in self.values)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                              and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _fmt(v: Any) -> str:
    if v is None:
        return "None"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return repr(v)
    return str(v)


@dataclass(frozen=True)
class Operator:
    """One mutation: ``kind`` says how ``apply`` changes the call -- set a keyword, mutate the data, ..."""

    name: str
    default: Any
    domain: Domain
    kind: str = "keyword"  # keyword | data | disable_batching | remove_validation_set

    def validate(self, value: Any) -> Any:
        """``value`` if it lies in the domain and differs from the default, else a one-line FaultSpecError."""
        if self.domain.numeric and isinstance(value, int) and not isinstance(value, bool) and not self.domain.integer:
            value = float(value)
        if self.kind == "keyword" and _same(value, self.default):
            raise FaultSpecError(f"--value {_fmt(value)} for operator {self.name!r}: equals the default, so it is not a mutant; pick another value")
        if not self.domain.contains(value):
            raise FaultSpecError(
                f"--value {_fmt(value)} for operator {self.name!r}: outside its domain ({self.domain.describe()}); "
                "pick a value in the domain or widen it in a --domains YAML file"
            )
        return value

    def apply(self, kwargs: dict[str, Any], value: Any, rng: np.random.Generator) -> dict[str, Any]:
        """The keyword arguments of the mutated call (a new dict; ``kwargs`` is left alone)."""
        out = dict(kwargs)
        if self.kind == "keyword":
            out[self.name] = value
        elif self.kind == "disable_batching":
            out["batch_size"] = int(len(out["x_train"]))
        elif self.kind == "remove_validation_set":
            for key in ("validation_split", "validation_data", "x_val", "y_val"):
                if key in out or key in self.default:
                    out[key] = 0.0 if key == "validation_split" else None
        elif self.kind == "data":
            out["x_train"], out["y_train"] = mutate_data(self.name, out["x_train"], out["y_train"], float(value), rng)
        else:  # pragma: no cover - kinds are fixed above
            raise ValueError(self.kind)
        return out


# ---------------------------------------------------------------- data operators (DeepCrime)
def is_class_labels(y: np.ndarray) -> bool:
    """Classification labels: integer class ids, one-hot rows (Keras' ``to_categorical`` gives float ones), or
    float 0/1 targets in one column (a sigmoid output's binary cross-entropy labels). Other labels are regression
    targets."""
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_):
        return True
    if not len(y) or not np.isin(y, (0, 1)).all():
        return False
    return bool(y.ndim == 1 or y.ndim == 2 and (y.shape[1] == 1 or (y.sum(axis=1) == 1).all()))


def class_ids(y: np.ndarray) -> np.ndarray:
    """Integer class ids of classification labels (one-hot rows -> their argmax)."""
    y = np.asarray(y)
    return y.argmax(axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1)


def _share(count: int, percent: float) -> int:
    """How many of ``count`` samples ``percent`` % affects: DeepCrime's ``int(count * percent / 100)`` (rounded down)."""
    return int(count * percent / 100.0)


def _label_groups(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct labels (rows, for one-hot labels), each sample's label index, and the label counts, as DeepCrime's
    ``np.unique(y, axis=0)``: labels in sorted order, so ties between counts go to the first label."""
    labels, inverse, counts = np.unique(y, axis=0, return_inverse=True, return_counts=True)
    return labels, np.asarray(inverse).reshape(-1), counts


def sd_buckets(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeepCrime's classes of regression labels (``get_label_buckets``): each sample's bucket and every bucket's count.

    One output: three buckets, below mean - SD, within [mean - SD, mean + SD], above mean + SD. Two or more
    outputs: nine, ``3 * b0 + b1`` from the first two outputs' buckets with intervals [mean - SD, mean + SD)
    (DeepCrime's ``get_label_buckets_2dims``, which ignores further outputs). Counts include empty buckets.
    DeepCrime puts the edges at +-SD around 0 (its subject's steering angles are centred); here they sit
    around the labels' mean, so uncentred targets (prices) get three buckets too.
    """
    t = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    cols = t[:, :2]
    center, sd = cols.mean(axis=0), cols.std(axis=0)
    below = cols < center - sd
    above = cols > center + sd if cols.shape[1] == 1 else cols >= center + sd
    third = np.where(below, 0, np.where(above, 2, 1))
    bucket = third[:, 0] if cols.shape[1] == 1 else 3 * third[:, 0] + third[:, 1]
    return bucket, np.bincount(bucket, minlength=3 ** cols.shape[1])


def mutate_data(name: str, x: np.ndarray, y: np.ndarray, percent: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """DeepCrime's training-data faults (``operators/training_data_operators.py``), drawn from ``rng``.

    ``percent`` % of the affected samples, rounded down: *change_label* relabels that share of the
    most frequent class, each to another class drawn uniformly; *delete_training_data* deletes that
    share of every class; *unbalance_train_data* deletes that share of every class with fewer samples
    than the mean class count (never a class's last sample); *add_noise* adds to that share of the
    inputs Gaussian noise whose SD is ``percent`` % of the input's own SD; *make_output_classes_overlap*
    appends copies of that share of the most frequent class's inputs labelled as the second most
    frequent class.

    Regression labels (not class labels, see :func:`is_class_labels`) get DeepCrime's regression variants:
    *change_label* adds Gaussian noise with SD ``percent`` % of the labels' SD to every label; the
    others take the labels' SD buckets (:func:`sd_buckets`) as the classes, and the overlap's copies get
    the distinct labels of the second biggest bucket, sorted and repeated in order.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    n = len(x)
    regression = name != "add_noise" and not is_class_labels(y)
    if name == "change_label" and regression:
        sigma = abs(float(np.std(y.astype(np.float64))) * percent / 100.0)
        return x, (y + rng.normal(0.0, sigma, size=y.shape)).astype(y.dtype)
    if name == "change_label":
        labels, inverse, counts = _label_groups(y)
        if len(labels) < 2:
            return x, y
        top = int(np.argmax(counts))
        members = np.flatnonzero(inverse == top)
        idx = rng.choice(members, size=_share(len(members), percent), replace=False)
        others = np.delete(labels, top, axis=0)
        y = y.copy()
        y[idx] = others[rng.integers(0, len(others), size=len(idx))]  # another class, uniformly
        return x, y
    if name in ("delete_training_data", "unbalance_train_data"):
        inverse, counts = sd_buckets(y) if regression else _label_groups(y)[1:]
        parts = []
        for c, count in enumerate(counts):
            if count == 0 or (name == "unbalance_train_data" and not count < counts.mean()):
                continue
            members = np.flatnonzero(inverse == c)
            k = _share(len(members), percent)
            parts.append(rng.choice(members, size=min(k, len(members) - 1), replace=False))
        drop = np.concatenate(parts) if parts else np.zeros(0, int)
        keep = np.setdiff1d(np.arange(n), drop)
        return x[keep], y[keep]
    if name == "add_noise":
        idx = rng.choice(n, size=_share(n, percent), replace=False)
        x = x.astype(np.result_type(x.dtype, np.float32), copy=True)
        if len(idx):
            rows = x[idx]
            sd = rows.reshape(len(idx), -1).std(axis=1) * (percent / 100.0)  # each input's own SD, scaled
            noise = rng.normal(0.0, 1.0, size=rows.shape) * sd.reshape((-1,) + (1,) * (rows.ndim - 1))
            x[idx] = rows + noise.astype(x.dtype)
        return x, y
    if name == "make_output_classes_overlap" and regression:
        inverse, counts = sd_buckets(y)
        a = int(np.argmax(counts))
        rest = counts.copy()
        rest[a] = -1
        b = int(np.argmax(rest))
        if counts[b] == 0:  # one bucket (constant labels): nothing to overlap with (DeepCrime divides by zero)
            return x, y
        members = np.flatnonzero(inverse == a)
        idx = rng.choice(members, size=_share(len(members), percent), replace=False)
        distinct = np.unique(y[inverse == b], axis=0)  # sorted, as DeepCrime's np.unique
        relabelled = distinct[np.arange(len(idx)) % len(distinct)]
        return np.concatenate([x, x[idx]]), np.concatenate([y, relabelled.astype(y.dtype)])
    if name == "make_output_classes_overlap":
        labels, inverse, counts = _label_groups(y)
        order = np.argsort(-counts, kind="stable")
        a, b = order[0], order[1 % len(order)]
        members = np.flatnonzero(inverse == a)
        idx = rng.choice(members, size=_share(len(members), percent), replace=False)
        relabelled = np.repeat(labels[b : b + 1], len(idx), axis=0).astype(y.dtype)
        return np.concatenate([x, x[idx]]), np.concatenate([y, relabelled])
    raise FaultSpecError(f"unknown data operator {name!r}; expected one of {', '.join(DATA_OPERATORS)}")


# ---------------------------------------------------------------- domains from a signature
def _without(values: Iterable[Any], default: Any) -> tuple[Any, ...]:
    return tuple(v for v in values if not _same(v, default))


def _numeric(default: float, low: float, high: float, *, integer: bool, sweep: Iterable[float], search_to: float) -> Domain:
    vals: list[Any] = []
    for v in sweep:
        v = int(round(v)) if integer else float(v)
        v = min(max(v, low), high)
        if not _same(v, default) and v != default and v not in vals:
            vals.append(v)
    return Domain(low=low, high=high, integer=integer, sweep=tuple(vals), search_to=search_to)


def domain_for(name: str, default: Any) -> Domain | None:
    """The mutation domain of keyword ``name`` with ``default``, from its name and type; None if unknown."""
    low_name = name.lower()
    if isinstance(default, bool):
        return Domain(values=(not default,), sweep=(not default,))
    if "activation" in low_name:
        vals = _without(ACTIVATIONS, default)
        return Domain(values=vals, sweep=vals)
    if "initializer" in low_name or "initialiser" in low_name or low_name.endswith("init"):
        cat = TORCH_INITIALIZERS if default in TORCH_INITIALIZERS and default not in ("orthogonal", "zeros", "ones") else INITIALIZERS
        vals = _without(cat, default)
        return Domain(values=vals, sweep=vals)
    if "regularizer" in low_name or "regulariser" in low_name:
        vals = _without(REGULARIZERS, default)
        return Domain(values=vals, sweep=vals)
    if "optimizer" in low_name or "optimiser" in low_name:
        vals = _without(OPTIMIZERS, default)
        return Domain(values=vals, sweep=vals)
    if low_name == "loss":
        fam = next((f for f in (REGRESSION_LOSSES, ONE_HOT_LOSSES, TORCH_CLASSIFICATION_LOSSES) if default in f), None)
        if fam is None:
            return None
        vals = _without(fam, default)
        return Domain(values=vals, sweep=vals)
    if isinstance(default, (int, float)) or default is None:
        if low_name in ("learning_rate", "lr"):
            d = float(default or 1e-3)
            return _numeric(d, d / 1000, d * 1000, integer=False, sweep=(d / 10, d * 10), search_to=d / 1000)
        if "dropout" in low_name or low_name.endswith("_rate") or low_name == "rate":
            d = float(default or 0.0)
            return _numeric(d, 0.0, 0.95, integer=False, sweep=(0.25, 0.5, 0.75), search_to=0.95)
        if "clip" in low_name:
            return _numeric(-1.0, 1e-4, 10.0, integer=False, sweep=(0.01, 0.1), search_to=1e-4)
        if default is None:
            return None
        if isinstance(default, int):
            d = int(default)
            if "epoch" in low_name:
                return _numeric(d, 1, max(1, 4 * d), integer=True, sweep=(max(1, d // 4), max(1, d // 2), 2 * d), search_to=1)
            if "batch" in low_name:
                return _numeric(d, 1, max(4096, 4 * d), integer=True, sweep=(max(1, d // 4), 4 * d), search_to=max(4096, 4 * d))
            if "patience" in low_name:
                return _numeric(d, 0, max(1, 4 * d), integer=True, sweep=(0, max(1, d // 2)), search_to=1 if d > 1 else 0)
            if "depth" in low_name or "layers" in low_name:
                return _numeric(d, 1, max(2, 2 * d), integer=True, sweep=(1, d + 1), search_to=1)
            if any(s in low_name for s in ("unit", "hidden", "filters", "size", "width", "neurons")):
                return _numeric(d, 1, max(2, 4 * d), integer=True, sweep=(max(1, d // 4), max(1, d // 2), 2 * d), search_to=1)
            hi_i = max(1, 4 * d)
            return _numeric(d, 0, hi_i, integer=True, sweep=(d // 2, 2 * d) if d else (1, 2), search_to=0 if d > 0 else hi_i)
        d = float(default)
        hi = 1.0 if 0.0 <= d <= 1.0 else 4 * abs(d)
        low = 0.0 if d >= 0 else -4 * abs(d)
        return _numeric(d, low, hi, integer=False, sweep=(d / 2, min(hi, 2 * d) if d else hi / 2),
                        search_to=hi if abs(hi - d) >= abs(d - low) else low)
    return None


def _domain_from_yaml(name: str, spec: Any, default: Any, where: str) -> Domain:
    if isinstance(spec, list):
        vals = tuple(_parse_scalar(v) for v in spec)
        return Domain(values=vals, sweep=_without(vals, default))
    if isinstance(spec, dict):
        unknown = set(spec) - {"low", "high", "values", "integer", "sweep", "search_to"}
        if unknown:
            raise FaultSpecError(f"{where}: operator {name!r} has unknown key(s) {', '.join(sorted(unknown))}; use low, high, integer, sweep, search_to or values")
        if "values" in spec:
            vals = tuple(_parse_scalar(v) for v in spec["values"])
            return Domain(values=vals, sweep=_without(vals, default))
        if "low" not in spec or "high" not in spec:
            raise FaultSpecError(f"{where}: operator {name!r} needs either values: [...] or low: and high:")
        integer = bool(spec.get("integer", isinstance(default, int) and not isinstance(default, bool)))
        low, high = float(spec["low"]), float(spec["high"])
        if integer:
            low, high = int(low), int(high)
        sweep = spec.get("sweep", [low, high])
        return _numeric(default if default is not None else -1, low, high, integer=integer, sweep=sweep,
                        search_to=spec.get("search_to", high))
    raise FaultSpecError(f"{where}: operator {name!r} must map to a list of values or a mapping with low/high")


def _parse_scalar(v: Any) -> Any:
    if isinstance(v, str) and v.strip().lower() in ("none", "null", "~"):
        return None
    return v


def parse_value(text: str) -> Any:
    """A command-line value as Python: ``None``/``null``, booleans, numbers, else the string."""
    import yaml

    s = text.strip()
    if s.lower() in ("none", "null", "~"):
        return None
    try:
        v = yaml.safe_load(s)
    except yaml.YAMLError:
        return s
    return v if isinstance(v, (bool, int, float, str)) else s


def load_domain_overrides(path: str | Path | None) -> dict[str, Any]:
    """The YAML ``{operator: [values] | {low, high, ...}}`` mapping, checked to be a mapping."""
    if path is None:
        return {}
    import yaml

    p = Path(path)
    if not p.exists():
        raise FaultSpecError(f"--domains {p}: no such file; pass a YAML mapping operator -> values")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise FaultSpecError(f"--domains {p}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise FaultSpecError(f"--domains {p}: expected a mapping operator -> values, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class OperatorCatalogue:
    """The operators of one training function, by name, in signature order."""

    operators: dict[str, Operator] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()

    def get(self, name: str) -> Operator:
        if name not in self.operators:
            raise FaultSpecError(
                f"--operator {name!r}: unknown operator for this model; known: {', '.join(self.operators) or 'none'}"
            )
        return self.operators[name]

    def __iter__(self):
        return iter(self.operators.values())

    def __len__(self) -> int:
        return len(self.operators)


def operators_for(fn: Callable[..., Any], overrides: dict[str, Any] | None = None, *,
                  has_training_data: bool = False, classification: bool = True,
                  where: str = "--domains", defaults: dict[str, Any] | None = None) -> OperatorCatalogue:
    """Every operator of ``fn``: its keyword arguments with domains, plus training-level operators.

    ``defaults`` replaces signature defaults (values fixed with ``--set``), so domains are built around them.
    ``classification`` is accepted for older callers and changes nothing: regression labels get all five
    data operators too (DeepCrime's regression variants, see :func:`mutate_data`).
    """
    overrides = dict(overrides or {})
    params = inspect.signature(fn).parameters
    ops: dict[str, Operator] = {}
    skipped: list[str] = []
    for name, p in params.items():
        if p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL) or name in NOT_OPERATORS:
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        if defaults and name in defaults:
            default = defaults[name]
        if name in overrides:
            dom = _domain_from_yaml(name, overrides.pop(name), default, where)
        else:
            dom = domain_for(name, default)
        if dom is None:
            skipped.append(name)
            continue
        ops[name] = Operator(name=name, default=default, domain=dom)
    has_data = has_training_data and "x_train" in params and "y_train" in params
    extra: list[Operator] = []
    if has_data:
        pct = Domain(low=0.0, high=100.0, sweep=(10.0, 30.0, 50.0), search_to=100.0)
        extra += [Operator(name=n, default=0.0, domain=pct, kind="data") for n in DATA_OPERATORS]
        if "batch_size" in params:
            extra.append(Operator(name="disable_batching", default=False, domain=Domain(values=(True,), sweep=(True,)), kind="disable_batching"))
    val_keys = tuple(k for k in ("validation_split", "validation_data", "x_val", "y_val") if k in params)
    if val_keys:
        extra.append(Operator(name="remove_validation_set", default=val_keys, domain=Domain(values=(True,), sweep=(True,)), kind="remove_validation_set"))
    for op in extra:
        if op.name in overrides:
            op = Operator(name=op.name, default=op.default, domain=_domain_from_yaml(op.name, overrides.pop(op.name), op.default, where), kind=op.kind)
        ops[op.name] = op
    if overrides:
        raise FaultSpecError(f"{where}: unknown operator(s) {', '.join(sorted(overrides))}; known: {', '.join(ops)}")
    return OperatorCatalogue(operators=ops, skipped=tuple(skipped))


__all__ = [
    "Domain", "Operator", "is_class_labels", "class_ids", "OperatorCatalogue", "operators_for", "domain_for", "mutate_data",
    "sd_buckets",
    "parse_value", "load_domain_overrides", "ACTIVATIONS", "INITIALIZERS", "REGULARIZERS", "OPTIMIZERS",
]
