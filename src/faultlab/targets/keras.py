"""Keras 3 target (torch or tensorflow backend) behind the same interface as the PyTorch one.

Sites are addressed by Keras layer names: a layer name alone is its kernel (its first variable
when it has none), ``name.bias`` / ``name/bias`` its other variables; activation sites are each
layer's output in model order. Indices use Keras axis order (a Conv2D kernel is (kh, kw, in, out),
feature maps (H, W, C)). Weight faults are written in place on the variables and restored
bit-exactly; activation faults go through one instrumented clone of the model built once
(see :mod:`faultlab.targets.keras_inject`), never a rebuild per fault.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..bits import apply_fault_model
from ..errors import DataError, FaultSpecError, ModelLoadError
from ..faults import Fault, Site
from .base import Assignment, Target
from ._tensor_ops import fault_in_place
from .keras_inject import FaultPlan, LayerFaults, instrument
from .keras_loading import import_keras, load_keras_model  # noqa: F401  (load_keras_model: used by loading.load_model)

log = logging.getLogger("faultlab")


def _shape_of(t: Any) -> tuple | None:
    shape = getattr(t, "shape", None)
    return None if shape is None else tuple(shape)


def _first(out: Any) -> Any:
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        out = out[0] if out else None
    return out


class KerasTarget(Target):
    """A Keras 3 model under test. ``forward`` returns torch tensors on every backend.

    Activation sites need concrete output shapes: they come from the model's symbolic outputs,
    or from one forward pass (:meth:`trace`, or ``example_input``) where those have unknown sizes.
    """

    framework = "keras"
    image_layout = "channels_last"

    def __init__(self, model: Any, *, example_input: np.ndarray | None = None) -> None:
        self.keras = import_keras()
        self.backend = self.keras.backend.backend()
        self.model = model
        self._device = torch.device("cpu")
        if self.backend == "torch":
            self._device = self.keras.ops.convert_to_tensor(np.zeros(1, np.float32)).device
        self.device = str(self._device)
        self._plan = FaultPlan()
        self._instrumented: Any = None
        self._probe: Any = None
        self._taps: dict[str, Any] = {}
        self._act_shapes: dict[str, tuple[tuple[int, ...], str]] | None = None
        self._sites: list[Site] | None = None
        self._variables: dict[str, Any] = {}
        self._layer_variables: dict[str, list[Any]] = {}
        self._index: tuple[list[Site], dict[str, dict[str, list[Site]]]] | None = None
        self._check_supported()
        if not getattr(model, "built", True) and example_input is not None:
            model(self.prepare(np.asarray(example_input[:1])))
        if example_input is not None:
            self.trace(self.prepare(np.asarray(example_input)))  # bundled (channels-first) data works as is

    def _check_supported(self) -> None:
        """Refuse up front what no campaign can run: stateful recurrent layers, several inputs or outputs.

        faultlab feeds a model one input array and classifies one (N, C) output against a golden run of the
        same inputs; a stateful layer's output depends on the calls before it, so no two runs compare.
        """
        flatten = getattr(self.model, "_flatten_layers", None)
        for layer in flatten(include_self=False, recursive=True) if flatten is not None else []:
            if getattr(layer, "stateful", False) is True:
                raise ModelLoadError(
                    f"Keras layer {layer.name!r} ({type(layer).__name__}) is stateful: its output depends on the calls before it, "
                    "so faulty and golden runs cannot be compared; rebuild the model with stateful=False and load the same weights"
                )
        if not self._graph_layers():
            return  # a subclassed model: its first forward says so (see forward)
        what = self.model.name
        ins, outs = list(self.model.inputs), list(getattr(self.model, "outputs", None) or [])
        if len(ins) > 1:
            names = ", ".join(str(getattr(t, "name", "?")) for t in ins)
            raise ModelLoadError(
                f"Keras model {what!r} takes {len(ins)} inputs ({names}); faultlab feeds a model one input array (--data x), "
                "so it runs models with one input (merge the inputs into one Input and split it inside the model)"
            )
        if len(outs) > 1:
            names = ", ".join(self._output_names(outs))
            raise ModelLoadError(
                f"Keras model {what!r} has {len(outs)} outputs ({names}); faultlab classifies one output, "
                "so pass a model of the head to study, e.g. keras.Model(model.inputs, model.get_layer(NAME).output)"
            )

    def declared_input_shape(self) -> tuple[int, ...] | None:
        """The model's input shape without the batch dimension, when every size is declared (so sites can be traced without data)."""
        try:
            ins = list(self.model.inputs)
        except (AttributeError, TypeError, ValueError):  # a subclassed model not yet called
            return None
        shape = tuple(ins[0].shape)[1:] if len(ins) == 1 else ()
        return shape if shape and all(isinstance(d, int) for d in shape) else None

    @staticmethod
    def _output_names(outs: list[Any]) -> list[str]:
        """The layer producing each output (a KerasTensor's history), else its tensor name."""
        names = []
        for t in outs:
            hist = getattr(t, "_keras_history", None)
            layer = getattr(hist, "operation", None) if hist is not None else None
            names.append(str(getattr(layer, "name", None) or getattr(t, "name", "?")))
        return names

    # ----- sites -----
    def _layers(self) -> list[Any]:
        return [l for l in self.model.layers if type(l).__name__ != "InputLayer"]

    def _graph_layers(self) -> bool:
        """Whether activations can be instrumented: a Functional or a built Sequential model."""
        return hasattr(self.model, "inputs") and bool(getattr(self.model, "inputs", None)) and hasattr(self.model, "layers")

    def _symbolic_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        shapes: dict[str, tuple[tuple[int, ...], str]] = {}
        if not self._graph_layers():
            return shapes
        for layer in self._layers():
            try:
                out = _first(layer.output)
            except (AttributeError, ValueError, RuntimeError):
                continue
            shape = _shape_of(out)
            if shape and len(shape) >= 2 and all(isinstance(d, int) for d in shape[1:]):
                shapes[layer.name] = (tuple(int(d) for d in shape[1:]), str(out.dtype))
        return shapes

    def trace(self, x: np.ndarray | torch.Tensor) -> None:
        """Record every layer's output shape from one forward pass (resolves unknown sizes)."""
        if not self._graph_layers():
            self._act_shapes = {}
            self._sites = None
            return
        outs = self.layer_outputs(x[:1])
        self._act_shapes = {name: (tuple(t.shape[1:]), str(t.dtype).replace("torch.", "")) for name, t in outs.items()}
        self._sites = None

    def _variable_sites(self, layer: Any) -> list[tuple[str, Any]]:
        """(site name, variable) of a layer, in ``get_weights()`` order.

        The kernel (else the first variable) is the layer's name alone, the others ``name.<variable name>``. Where
        the layer holds several variables of that name (a Bidirectional wrapper: a forward and a backward
        kernel), each is named by its path below the layer instead (``bi.forward_lstm/lstm_cell/kernel``).
        """
        variables = list(layer.weights)
        if not variables:
            return []
        names = [v.name for v in variables]
        main = next((v for v in variables if v.name == "kernel"), variables[0])
        out: list[tuple[str, Any]] = []
        for v in variables:
            if v is main and names.count(v.name) == 1:
                out.append((layer.name, v))
                continue
            suffix = v.name if names.count(v.name) == 1 else v.path.split(f"{layer.name}/", 1)[-1]
            out.append((f"{layer.name}.{suffix}", v))
        return out

    def sites(self) -> list[Site]:
        if self._sites is None:
            sites: list[Site] = []
            self._variables = {}
            self._layer_variables = {}
            for layer in self._layers():
                self._layer_variables[layer.name] = list(layer.weights)
                for name, v in self._variable_sites(layer):
                    self._variables[name] = v
                    sites.append(Site(name, "weight", layer.name, type(layer).__name__, tuple(int(d) for d in v.shape), str(v.dtype)))
            shapes = self._act_shapes if self._act_shapes is not None else self._symbolic_shapes()
            for layer in self._layers():
                if layer.name in shapes:
                    shape, dt = shapes[layer.name]
                    sites.append(Site(layer.name, "activation", layer.name, type(layer).__name__, shape, dt))
            self._sites = sites
        return self._sites

    def _site_index(self) -> dict[str, dict[str, list[Site]]]:
        """The base class's name index, built once per site list (engines look a site up for every fault)."""
        sites = self.sites()
        if self._index is None or self._index[0] is not sites:
            self._index = (sites, super()._site_index())
        return self._index[1]

    def _aliases(self, site: Site) -> list[str]:
        """``name/var`` for ``name.var``; the Keras variable path (``lstm/lstm_cell/recurrent_kernel``) and
        ``layer.<path below the layer>``; for the kernel ``layer.kernel`` / ``layer/kernel``, and the bare layer
        name where its kernel is not listed under it (Bidirectional: the forward kernel, as listed before)."""
        if site.kind != "weight":
            return []
        v = self._variables.get(site.name)
        out = [site.name.replace(".", "/", 1)] if "." in site.name else []
        if v is None:
            return out
        out += [v.path, f"{site.layer}.{v.path.split(f'{site.layer}/', 1)[-1]}"]
        first = next((w for w in self._layer_variables.get(site.layer, []) if w.name == "kernel"), None)
        if first is None and self._layer_variables.get(site.layer):
            first = self._layer_variables[site.layer][0]
        if v is first:
            out += [f"{site.layer}.{v.name}", f"{site.layer}/{v.name}"] + ([site.layer] if site.name != site.layer else [])
        return [a for a in dict.fromkeys(out) if a != site.name]

    def fingerprint(self) -> str:
        """A hash of every variable, to recognise the same model on resume."""
        import hashlib

        h = hashlib.sha256()
        for v in self.model.weights:
            h.update(v.path.encode())
            h.update(np.ascontiguousarray(self.keras.ops.convert_to_numpy(v)).tobytes())
        return h.hexdigest()[:16]

    # ----- forward -----
    def to_tensor(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        # a fresh C-order copy: never alias the caller's buffer (as the PyTorch target does)
        t = torch.from_numpy(np.array(x, order="C", copy=True)) if not isinstance(x, torch.Tensor) else x
        if t.is_floating_point() and t.dtype != torch.float32:
            t = t.to(torch.float32)
        return t.to(self._device)

    def _call(self, model: Any, x: torch.Tensor | np.ndarray) -> Any:
        try:
            if self.backend == "torch":
                with torch.no_grad():
                    return model(self.to_tensor(x), training=False)
            xn = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            return model(xn, training=False)
        except FaultSpecError:
            raise
        except (ValueError, TypeError) as e:
            shape = tuple(x.shape)
            raise DataError(f"data of shape {shape} does not fit the Keras model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None

    def _as_torch(self, t: Any) -> torch.Tensor:
        if isinstance(t, torch.Tensor):
            return t.detach()
        return torch.from_numpy(np.array(self.keras.ops.convert_to_numpy(t)))

    def forward(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        model = self._instrumented if self._plan else self.model
        raw = self._call(model, x)
        n_out = len(self.keras.tree.flatten(raw))
        if n_out > 1:
            raise ModelLoadError(
                f"Keras model {self.model.name!r} returns {n_out} tensors; faultlab classifies one output, "
                "so pass a model (or a call) that returns the head to study"
            )
        out = _first(raw)
        if out is None:
            raise DataError("the Keras model returned no tensor; faultlab needs (N, C) scores")
        t = self._as_torch(out)
        return t.reshape(t.shape[0], -1) if t.dim() != 2 else t

    def layer_outputs(self, x: torch.Tensor | np.ndarray, assignments: Sequence[Assignment] = ()) -> dict[str, torch.Tensor]:
        """Every activation site's output for ``x`` (faulty where ``assignments`` say), in model order."""
        self._ensure_instrumented()
        record: dict[str, Any] = {}
        with self.inject(assignments):
            self._plan.record = record
            try:
                self._call(self._instrumented, x)
            finally:
                self._plan.record = None
        return {name: self._as_torch(record[name]) for name in self._taps if name in record}

    def site(self, name: str, kind: str) -> Site:  # type: ignore[override]
        if kind == "activation" and not self._graph_layers():
            raise FaultSpecError(
                f"activation layer {name!r}: activation faults need a Functional or Sequential Keras model with known inputs; "
                f"{type(self.model).__name__} is a subclassed model (weight faults still work)"
            )
        return super().site(name, kind)  # type: ignore[arg-type]

    # ----- injection -----
    def _ensure_instrumented(self) -> None:
        if self._instrumented is not None:
            return
        if not self._graph_layers():
            raise FaultSpecError(
                f"activation faults need a Functional or Sequential Keras model with known inputs; {type(self.model).__name__} is a subclassed model (weight faults still work)"
            )
        names = {l.name for l in self._layers()}
        self._instrumented, self._taps = instrument(self.model, self._plan, names)
        log.debug("instrumented %s with %d fault points", self.model.name, len(self._taps))

    @contextmanager
    def inject(self, assignments: Sequence[Assignment]) -> Iterator[None]:
        restores: list[Callable[[], None]] = []
        try:
            layers: dict[str, LayerFaults] = {}
            for fault, rows in assignments:
                site = self.check_fault(fault)  # a wrong rank, index or bit fails here, before anything is changed
                if fault.site == "weight":
                    restores.append(self._apply_weight(fault, site))
                else:
                    self._ensure_instrumented()
                    layers.setdefault(site.name, LayerFaults(site)).add(fault, rows)
            self._plan.layers = layers
            yield
        finally:
            self._plan.clear()
            for restore in reversed(restores):
                restore()

    def _apply_weight(self, fault: Fault, site: Site) -> Callable[[], None]:
        if not self._variables:
            self.sites()
        v = self._variables[site.name]
        idx = fault.index
        if self.backend == "torch":
            return fault_in_place(v.value.data, fault)
        orig_arr = np.array(self.keras.ops.convert_to_numpy(v), copy=True)
        new = orig_arr.copy()
        if idx is None:
            new = np.asarray(apply_fault_model(orig_arr, fault.model, fault.bits, value=fault.value), dtype=orig_arr.dtype)
        else:
            new[idx] = apply_fault_model(np.asarray(orig_arr[idx]), fault.model, fault.bits, value=fault.value)
        v.assign(new)
        return lambda: v.assign(orig_arr)


__all__ = ["KerasTarget", "load_keras_model"]
