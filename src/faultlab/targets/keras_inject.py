"""Activation-fault instrumentation for Keras models, built once per target and reused for every fault.

:func:`instrument` clones a Functional (or Sequential) model's graph *sharing its layers* (so the
same weights, and weight faults, apply) and inserts a :class:`FaultPoint` after every layer. Each
fault point asks a :class:`FaultPlan` -- plain Python state set before each forward pass -- whether
its layer has faults; if not it returns its input untouched, otherwise it gives each batch row its
own fault (vectorised gather/mask/scatter, as the PyTorch target does with hooks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..bits import BIT_MODELS, apply_fault_model, apply_masks, as_int_view, bit_mask
from ..faults import Fault, Site
from .keras_loading import import_keras
from ._tensor_ops import rows_tensor




@dataclass
class LayerFaults:
    """The faults of one activation site for the current forward pass, grouped for vectorised masks."""

    site: Site
    grouped: dict[str, dict[str, list]] = field(default_factory=dict)
    other: list[tuple[Fault, Any]] = field(default_factory=list)
    _cache: dict[tuple[int, str], list[tuple[str, tuple[torch.Tensor, ...], torch.Tensor]]] = field(default_factory=dict)

    def add(self, fault: Fault, rows: Any) -> None:
        if fault.model in BIT_MODELS and fault.index is not None:
            g = self.grouped.setdefault(fault.model, {"rows": [], "elems": [], "masks": []})
            g["rows"].append(rows)
            g["elems"].append(int(np.ravel_multi_index(fault.index, self.site.shape)))
            g["masks"].append(bit_mask(fault.bits, self.site.bit_width))
        else:
            self.other.append((fault, rows))

    def _groups(self, n_rows: int, device: torch.device) -> list[tuple[str, tuple[torch.Tensor, ...], torch.Tensor]]:
        """Per fault model: index tensors (rows, then one per element axis) and masks, once per batch size."""
        key = (n_rows, str(device))
        if key not in self._cache:
            out = []
            for model, g in self.grouped.items():
                rs = [rows_tensor(r, n_rows, device) for r in g["rows"]]
                es = torch.cat([torch.full_like(r, e) for r, e in zip(rs, g["elems"])])
                ms = torch.cat([torch.full_like(r, m) for r, m in zip(rs, g["masks"])])
                coords = torch.unravel_index(es, self.site.shape)
                out.append((model, (torch.cat(rs),) + tuple(coords), ms))
            self._cache[key] = out
        return self._cache[key]

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """A faulty copy of one batch of this site's outputs, in the same memory layout."""
        t = t.clone()
        for model, idx, m in self._groups(t.shape[0], t.device):
            t[idx] = apply_masks(t[idx], m.to(as_int_view(t[:0]).dtype), model)  # type: ignore[arg-type]
        for fault, rows in self.other:
            r = rows_tensor(rows, t.shape[0], t.device)
            key = (r,) if fault.index is None else (r,) + tuple(fault.index)
            t[key] = apply_fault_model(t[key], fault.model, fault.bits, value=fault.value)
        return t


class FaultPlan:
    """What every fault point does in the next forward passes: {site name: LayerFaults}; empty = nothing."""

    def __init__(self) -> None:
        self.layers: dict[str, LayerFaults] = {}
        #: When set, every fault point stores its (possibly faulty) output here by site name.
        self.record: dict[str, Any] | None = None

    def clear(self) -> None:
        self.layers = {}

    def __bool__(self) -> bool:
        return bool(self.layers)

    def apply(self, name: str, x: Any) -> Any:
        lf = self.layers.get(name)
        if lf is not None:
            x = _apply_backend(lf, x)
        if self.record is not None:
            self.record[name] = x
        return x


def _apply_backend(lf: LayerFaults, x: Any) -> Any:
    """Apply on the backend's own tensors: torch directly, others through numpy (zero-copy on CPU)."""
    if isinstance(x, torch.Tensor):
        return lf.apply(x)
    keras = import_keras()
    t = torch.from_numpy(np.array(keras.ops.convert_to_numpy(x)))
    return keras.ops.convert_to_tensor(lf.apply(t).numpy())


_FAULT_POINT_CLS: type | None = None


def fault_point_class() -> type:
    """The Keras layer class inserted after each instrumented layer (defined once Keras is imported)."""
    global _FAULT_POINT_CLS
    if _FAULT_POINT_CLS is None:
        keras = import_keras()

        class FaultPoint(keras.layers.Layer):
            """Identity unless the shared :class:`FaultPlan` holds faults for ``site_name``."""

            def __init__(self, site_name: str, plan: FaultPlan, **kwargs: Any) -> None:
                # autocast=False: take the layer's output in its own dtype. Autocast would cast a float16 or
                # bfloat16 output (mixed or half-precision policies) to float32 here, so a fault would hit a
                # float32 copy and the site would read as float32
                super().__init__(trainable=False, autocast=False, **kwargs)
                # an identity on shapes: pass a padding mask (Embedding(mask_zero=True), Masking) on to the layers
                # after it, which in a Sequential model read it from their input tensor
                self.supports_masking = True
                self.site_name = site_name
                self.plan = plan

            def call(self, x: Any) -> Any:
                if not self.plan and self.plan.record is None:
                    return x
                return self.plan.apply(self.site_name, x)

            def compute_output_shape(self, input_shape: Any) -> Any:
                return input_shape

            def compute_output_spec(self, x: Any) -> Any:
                return keras.KerasTensor(x.shape, dtype=x.dtype)

        _FAULT_POINT_CLS = FaultPoint
    return _FAULT_POINT_CLS


def _first(out: Any) -> tuple[Any, Callable[[Any], Any]]:
    """The first tensor of a layer's output and a function putting a replacement back in place."""
    if isinstance(out, (list, tuple)) and out:
        rest = list(out[1:])
        return out[0], (lambda t: type(out)([t] + rest)) if isinstance(out, list) else (lambda t: tuple([t] + rest))
    return out, lambda t: t


def instrument(model: Any, plan: FaultPlan, site_names: set[str]) -> tuple[Any, dict[str, Any]]:
    """One clone of ``model`` sharing its layers, with a fault point after each layer in ``site_names``.

    Returns the instrumented model and {site name: the fault point's symbolic output}, from which
    a probe model returning every layer's output can be built.
    """
    keras = import_keras()
    FaultPoint = fault_point_class()
    taps: dict[str, Any] = {}

    def call_function(layer: Any, *args: Any, **kwargs: Any) -> Any:
        out = layer(*args, **kwargs)
        if layer.name not in site_names or layer.name in taps:
            return out
        t, put = _first(out)
        fp = FaultPoint(layer.name, plan, name=f"faultlab_fault_point_{len(taps)}")
        taps[layer.name] = fp(t)
        return put(taps[layer.name])

    if isinstance(model, keras.Sequential):
        inp = model.inputs[0]
        x = inputs = keras.Input(batch_shape=tuple(inp.shape), dtype=inp.dtype)
        for layer in model.layers:
            x = call_function(layer, x)
        clone = keras.Model(inputs, x, name=f"{model.name}_faultlab")
    else:
        clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call_function)
    return clone, taps


__all__ = ["FaultPlan", "LayerFaults", "instrument", "fault_point_class"]
