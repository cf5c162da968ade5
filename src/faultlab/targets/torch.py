"""PyTorch target: weight faults in place on parameters, activation faults through forward hooks."""
from __future__ import annotations

import logging
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..bits import BIT_MODELS, apply_fault_model, apply_masks, as_int_view, bit_mask
from ..errors import DataError, FaultlabError, FaultSpecError, ModelLoadError
from ..faults import Fault, Site
from .base import Assignment, Target
from ._tensor_ops import fault_in_place, first_tensor, rows_tensor


log = logging.getLogger("faultlab")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _put_back(t: torch.Tensor, copy: torch.Tensor) -> None:
    """Make ``t`` bit-identical to ``copy`` again (in place; only if it differs, so an unchanged tensor keeps its write count)."""
    if t.shape != copy.shape:
        t.set_(copy)  # resized in place
    elif not torch.equal(as_int_view(t.reshape(-1)), as_int_view(copy.reshape(-1))):
        t.copy_(copy)


def _random_in_training(mod: nn.Module) -> bool:
    """Does ``mod`` draw random numbers on every pass in its current mode (dropout in training mode)?"""
    if not mod.training:
        return False
    if isinstance(mod, nn.modules.dropout._DropoutNd):
        return mod.p > 0
    if isinstance(mod, nn.RReLU):
        return mod.lower != mod.upper
    if isinstance(mod, (nn.RNNBase, nn.MultiheadAttention)):
        return float(getattr(mod, "dropout", 0) or 0) > 0 and (not isinstance(mod, nn.RNNBase) or mod.num_layers > 1)
    return False


class TorchTarget(Target):
    """A ``torch.nn.Module`` under test, on whatever device it lives.

    Activation sites need one forward pass to learn their shapes: pass ``example_input``
    (one or more samples) or call :meth:`trace` before asking for sites.
    """

    framework = "torch"
    image_layout = "channels_first"

    def __init__(self, model: nn.Module, *, example_input: torch.Tensor | np.ndarray | None = None) -> None:
        try:
            model.eval()
        except NotImplementedError:  # torch.export modules: already captured in eval semantics
            pass
        self.model = model
        try:
            p = next(model.parameters())
            self._device = p.device
            self._float_dtype = next((q.dtype for q in model.parameters() if q.is_floating_point()), torch.float32)
        except StopIteration:
            self._device = torch.device("cpu")
            self._float_dtype = torch.float32
        self.device = str(self._device)
        self._modules = dict(model.named_modules())
        #: parameters the model's own forward writes in place (``nn.Embedding(max_norm=...)`` renormalises the rows it
        #: looks up), by id: put back after every pass, and a weight fault on one restores the whole tensor
        self.written_params: dict[int, str] = {
            id(m.weight): f"{name}.weight" if name else "weight"
            for name, m in self._modules.items()
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.max_norm is not None
        }
        self._act_shapes: dict[str, tuple[tuple[int, ...], str]] | None = None
        self._act_order: list[str] = []
        #: modules called more than once per forward pass (name -> calls): not activation sites
        self.reused_modules: dict[str, int] = {}
        #: modules whose output's first dimension is not the batch (name -> output shape for one input): not activation sites
        self.unbatched_modules: dict[str, tuple[int, ...]] = {}
        self._sites: list[Site] | None = None
        if example_input is not None:
            self.trace(example_input)

    # ----- sites -----
    def trace(self, x: torch.Tensor | np.ndarray) -> None:
        """Run one forward pass on ``x`` to record every module's output shape and call order.

        A second pass on two copies of that input finds the modules whose output's first dimension is not
        the batch (``nn.LSTM`` without ``batch_first``: time first): a row of such an output is no input, so
        they are not activation sites (:attr:`unbatched_modules`).
        """
        xt = self._fresh(x[:1])
        shapes: dict[str, tuple[tuple[int, ...], str]] = {}
        order: list[str] = []
        calls: dict[str, int] = {}
        lead: dict[str, int] = {}
        full: dict[str, tuple[int, ...]] = {}
        nested: set[str] = set()
        handles = []

        def rec(name: str) -> Callable:
            def hook(mod: nn.Module, inp: Any, out: Any) -> None:
                calls[name] = calls.get(name, 0) + 1
                t = first_tensor(out)
                if t is not None and t.is_nested:  # rows of several lengths (nn.TransformerEncoder with a padding mask)
                    nested.add(name)
                    return
                if t is not None and name not in shapes and t.dim() >= 1:
                    shapes[name] = (tuple(t.shape[1:]), _dtype_name(t.dtype))
                    full[name] = tuple(t.shape)
                    order.append(name)

            return hook

        def rec2(name: str) -> Callable:
            def hook(mod: nn.Module, inp: Any, out: Any) -> None:
                t = first_tensor(out)
                if t is not None and name not in lead and not t.is_nested and t.dim() >= 1:
                    lead[name] = int(t.shape[0])

            return hook

        for name, mod in self._modules.items():
            if name:
                handles.append(mod.register_forward_hook(rec(name)))
        try:
            with torch.no_grad(), self._state_kept():
                self.model(xt)
        except Exception as e:
            raise DataError(f"data of shape {tuple(xt.shape)} does not fit the model ({type(e).__name__}: {e})") from None
        finally:
            for h in handles:
                h.remove()
        handles = [self._modules[name].register_forward_hook(rec2(name)) for name in order]
        try:
            with torch.no_grad(), self._state_kept():
                self.model(torch.cat([xt, xt]))
        except Exception as e:
            # faultlab runs inputs in batches: a model that takes one input at a time (a torch.export program with a
            # fixed batch size, a hard-coded view(1, ...)) would fail mid-campaign, so it is refused here, before anything runs
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ModelLoadError(
                f"the model runs on one input but not on a batch of two ({type(e).__name__}: {msg[:150]}); faultlab runs inputs in "
                "batches, so give the model a batch dimension of any size (torch.export: export with "
                "dynamic_shapes={'x': {0: torch.export.Dim('batch')}})"
            ) from None
        finally:
            for h in handles:
                h.remove()
        self.unbatched_modules = {name: full[name] for name in order if full[name][0] != 1 or lead.get(name, 2) != 2}
        self.unbatched_modules.update({name: () for name in nested})
        self._act_shapes, self._act_order, self._sites = shapes, order, None
        self.reused_modules = {name: c for name, c in calls.items() if c > 1 and name in shapes}

    def _param_site_name(self, module: str, pname: str) -> str:
        if pname == "weight" and module:
            return module
        return f"{module}.{pname}" if module else pname

    def sites(self) -> list[Site]:
        if self._sites is None:
            sites: list[Site] = []
            for mname, mod in self._modules.items():
                for pname, p in mod.named_parameters(recurse=False):
                    sites.append(Site(self._param_site_name(mname, pname), "weight", mname, type(mod).__name__, tuple(p.shape), _dtype_name(p.dtype)))
            if self._act_shapes is not None:
                for name in self._act_order:
                    if name in self.reused_modules or name in self.unbatched_modules:
                        continue  # several outputs per forward pass, or rows that are not inputs: nothing for a fault to name
                    shape, dt = self._act_shapes[name]
                    sites.append(Site(name, "activation", name, type(self._modules[name]).__name__, shape, dt))
            self._sites = sites
        return self._sites

    def site(self, name: str, kind: str) -> Site:  # type: ignore[override]
        if kind == "activation" and self._act_shapes is None:
            raise FaultSpecError("activation sites need the input shape: trace the target with an example input first")
        if kind == "activation" and name in self.reused_modules:
            raise FaultSpecError(
                f"activation layer {name!r} is called {self.reused_modules[name]} times per forward pass, so its output is "
                "several tensors and a fault cannot name one; fault the layer that feeds it, or give each use its own module"
            )
        if kind == "activation" and self.unbatched_modules.get(name) == ():
            raise FaultSpecError(
                f"activation layer {name!r}: its output is a nested tensor (rows of several lengths, as nn.TransformerEncoder "
                "makes of a padded batch with src_key_padding_mask in eval mode), so a fault cannot name one element; "
                "fault the layer whose output is a padded tensor again (the encoder itself), or build the encoder with "
                "enable_nested_tensor=False"
            )
        if kind == "activation" and name in self.unbatched_modules:
            raise FaultSpecError(
                f"activation layer {name!r}: its output's first dimension is not the batch (shape "
                f"{self.unbatched_modules[name]} for one input; time first, as nn.LSTM/nn.GRU/nn.MultiheadAttention "
                "give without batch_first=True), so its rows are not inputs and a fault cannot name one element; "
                "build the layer with batch_first=True, or fault the layer after it"
            )
        return super().site(name, kind)  # type: ignore[arg-type]

    def _aliases(self, site: Site) -> list[str]:
        if site.kind == "weight" and site.name == site.layer and site.layer:
            return [f"{site.layer}.weight"]
        return []

    def _param(self, site: Site) -> torch.Tensor:
        pname = "weight" if site.name == site.layer else site.name[len(site.layer) + 1 :] if site.layer else site.name
        return getattr(self._modules[site.layer], pname)

    def fingerprint(self) -> str:
        """A hash of every parameter and buffer, to recognise the same model on resume."""
        import hashlib

        h = hashlib.sha256()
        for name, t in self.model.state_dict().items():
            h.update(name.encode())
            if t.numel():
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    # ----- forward -----
    def to_tensor(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        # a fresh C-order copy: never alias the caller's buffer, and standard strides even for
        # size-1 axes (odd strides make torch pick channels-last kernels that round differently)
        t = torch.from_numpy(np.array(x, order="C", copy=True)) if not isinstance(x, torch.Tensor) else x
        if t.is_floating_point() and t.dtype != self._float_dtype:
            t = t.to(self._float_dtype)
        return t.to(self._device, non_blocking=True)

    def _fresh(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``x`` as a tensor the model may change in place (``x.sub_(mean)`` in forward) without changing the caller's."""
        t = self.to_tensor(x)
        return t.clone() if t is x else t

    def _refuse_random(self) -> None:
        for name, mod in self._modules.items():
            if _random_in_training(mod):
                raise FaultlabError(
                    f"module {name or type(mod).__name__!r} ({type(mod).__name__}) is in training mode and draws a new random "
                    "mask on every pass, so outputs differ with no fault at all; call model.eval() (TorchTarget does when it "
                    "is built) or .eval() on that module"
                )

    @contextmanager
    def _state_kept(self) -> Iterator[None]:
        """Put back every buffer the model writes during the block (a call counter, batch-norm running statistics in
        training mode, a range observer), every parameter it is known to write (:attr:`written_params`) and every
        plain tensor attribute it rebinds (``self.prev = h``): each pass starts from the same state, and a campaign
        leaves none behind. (Attributes a pass adds are left: caches made on first use.)

        Values are compared bit for bit with a copy taken before (batch norm's kernel writes its running statistics
        without counting a write), and a buffer rebound to a new tensor gets the old one back. A parameter found
        written by a pass that was not known to be (its write count moved) is put back from the next pass on.
        """
        held = [(m, k, b, b.detach().clone()) for m in self._modules.values() for k, b in m._buffers.items() if b is not None and not b.is_inference()]
        attrs = [(m, a) for m in self._modules.values() if (a := {k: v for k, v in m.__dict__.items() if isinstance(v, torch.Tensor)})]
        params = {id(p): (n, p) for n, p in self.model.named_parameters()}
        written = [(p, p.detach().clone()) for i, (_, p) in params.items() if i in self.written_params]
        versions = {i: p._version for i, (_, p) in params.items() if not p.is_inference()}
        try:
            yield
        finally:
            with torch.no_grad():
                for m, k, b, c in held:
                    if m._buffers.get(k) is not b:
                        m._buffers[k] = b
                    _put_back(b, c)
                for p, c in written:
                    _put_back(p, c)
            for m, a in attrs:  # plain tensor attributes rebound (``self.prev = h.mean(0)``, read by the next pass)
                for k, v in a.items():
                    if m.__dict__.get(k) is not v:
                        m.__dict__[k] = v
            for i, v in versions.items():
                n, p = params[i]
                if i not in self.written_params and p._version != v:
                    self.written_params[i] = n
                    log.warning("model's forward wrote parameter %s in place; it is put back after every pass from now on", n)

    def forward(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        self._refuse_random()
        with torch.no_grad(), self._state_kept():
            out = first_tensor(self.model(self._fresh(x)))
        if out is None:
            raise DataError("the model's forward() returned no tensor; faultlab needs (N, C) scores")
        return out.reshape(out.shape[0], -1) if out.dim() != 2 else out

    def layer_outputs(self, x: torch.Tensor | np.ndarray, assignments: Sequence[Assignment] = ()) -> dict[str, torch.Tensor]:
        """Every traced module's output for ``x`` (faulty where ``assignments`` say), in call order."""
        if self._act_shapes is None:
            self.trace(x)
        record: dict[str, torch.Tensor] = {}

        def rec(name: str) -> Callable:
            def hook(mod: nn.Module, inp: Any, out: Any) -> None:
                t = first_tensor(out)
                if t is not None and name not in record:
                    record[name] = t.detach().clone()

            return hook

        with self.inject(assignments):
            # registered after the injection hooks, so they see the faulty outputs
            handles = [self._modules[name].register_forward_hook(rec(name)) for name in self._act_order]
            try:
                with torch.no_grad(), self._state_kept():
                    self.model(self._fresh(x))
            finally:
                for h in handles:
                    h.remove()
        return {name: record[name] for name in self._act_order if name in record}

    # ----- injection -----
    @contextmanager
    def inject(self, assignments: Sequence[Assignment]) -> Iterator[None]:
        restores: list[Callable[[], None]] = []
        handles: list[Any] = []
        try:
            by_layer: dict[str, list[tuple[Fault, Any, Site]]] = defaultdict(list)
            with torch.no_grad():
                for fault, rows in assignments:
                    site = self.check_fault(fault)  # a wrong rank, index or bit fails here, before anything is changed
                    if fault.site == "weight":
                        restores.append(self._apply_weight(fault, site))
                    else:
                        by_layer[site.layer].append((fault, rows, site))
            for layer, items in by_layer.items():
                handles.append(self._modules[layer].register_forward_hook(self._activation_hook(items)))
            yield
        finally:
            for h in handles:
                h.remove()
            with torch.no_grad():
                for restore in reversed(restores):
                    restore()

    def _apply_weight(self, fault: Fault, site: Site) -> Callable[[], None]:
        p = self._param(site)
        if id(p) not in self.written_params:
            return fault_in_place(p.data, fault)
        whole = p.detach().clone()  # the model writes this parameter itself (outside faultlab's forward too): restore all of it
        fault_in_place(p.data, fault)
        return lambda: _put_back(p.data, whole)

    def _activation_hook(self, items: list[tuple[Fault, Any, Site]]) -> Callable:
        """One hook per layer: vectorised gather/XOR/scatter for indexed bit faults, a loop otherwise."""
        device = self._device
        plan: dict[str, dict[str, list]] = {}
        slow: list[tuple[Fault, Any]] = []
        for fault, rows, site in items:
            if fault.model in BIT_MODELS and fault.index is not None:
                flat = int(np.ravel_multi_index(fault.index, site.shape))
                g = plan.setdefault(fault.model, {"rows": [], "elems": [], "masks": [], "shape": tuple(site.shape)})
                g["rows"].append(rows)
                g["elems"].append(flat)
                g["masks"].append(bit_mask(fault.bits, site.bit_width))
            else:
                slow.append((fault, rows))
        cache: dict[int, list[tuple[str, tuple[torch.Tensor, ...], torch.Tensor]]] = {}

        def groups_for(n_rows: int) -> list[tuple[str, tuple[torch.Tensor, ...], torch.Tensor]]:
            """Per fault model: index tensors (rows, then one per element axis) and masks, built once per batch size."""
            if n_rows not in cache:
                out = []
                for model, g in plan.items():
                    r_all, e_all, m_all = [], [], []
                    for rows, e, m in zip(g["rows"], g["elems"], g["masks"]):
                        r = rows_tensor(rows, n_rows, device)
                        r_all.append(r)
                        e_all.append(torch.full_like(r, e))
                        m_all.append(torch.full_like(r, m))
                    flat = torch.cat(e_all)
                    coords = torch.unravel_index(flat, g["shape"])
                    out.append((model, (torch.cat(r_all),) + tuple(coords), torch.cat(m_all)))
                cache[n_rows] = out
            return cache[n_rows]

        indexed = [(f, site) for f, _, site in items if f.index is not None]

        def hook(mod: nn.Module, inp: Any, out: Any) -> Any:
            t0 = first_tensor(out)
            if t0 is None:
                return None
            if indexed and tuple(t0.shape[1:]) != tuple(indexed[0][1].shape):
                # a module called again on other shapes (one ReLU shared by several layers): an element index
                # names no element of this call's output; say so instead of an IndexError from deep in torch
                f, site = indexed[0]
                raise FaultSpecError(
                    f"activation site {site.name}: the module is called with output shape {tuple(t0.shape[1:])}, not the traced "
                    f"{tuple(site.shape)} (a module called several times on different shapes); fault {f.id} cannot be placed"
                )
            # keep the memory format: downstream kernels (and so rounding) depend on it
            t = t0.clone()
            for model, idx, m in groups_for(t.shape[0]):
                t[idx] = apply_masks(t[idx], m.to(as_int_view(t[:0]).dtype), model)  # type: ignore[arg-type]
            for fault, rows in slow:
                sel = slice(None) if rows is None else rows
                if fault.index is None:
                    t[sel] = apply_fault_model(t[sel], fault.model, fault.bits, value=fault.value)
                else:
                    r = rows_tensor(rows, t.shape[0], t.device)
                    key = (r,) + tuple(fault.index)
                    t[key] = apply_fault_model(t[key], fault.model, fault.bits, value=fault.value)
            if isinstance(out, tuple):
                return (t,) + tuple(out[1:])
            if isinstance(out, list):
                return [t] + list(out[1:])
            return t

        return hook



__all__ = ["TorchTarget"]
