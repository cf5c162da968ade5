"""The one Target interface every framework implements.

A target owns a model that stays in memory once. Engines ask it for fault *sites*,
run *forward* passes on batches (torch tensors on the model's device, whatever the
framework) and *inject* faults for the duration of a ``with`` block: weight faults
are written in place and restored bit-exactly on exit (even on error), activation
faults are hooks that give each batch row its own fault.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..bits import BIT_MODELS
from ..errors import FaultSpecError
from ..faults import Fault, FaultList, InjectConfig, Site, SiteKind

if TYPE_CHECKING:
    import torch

#: A fault and the batch rows it applies to (``None``: every row; weight faults always hit every row).
Assignment = tuple[Fault, "slice | Sequence[int] | None"]


class Target(ABC):
    """A model under test: its fault sites, forward passes and in-place fault injection."""

    framework: str = "?"
    #: 'channels_first' (torch) or 'channels_last' (Keras): how bundled images are laid out for it.
    image_layout: str = "channels_first"

    @abstractmethod
    def sites(self) -> list[Site]:
        """Every weight and activation site, in layer order."""

    @abstractmethod
    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        """Outputs (N, C) for a batch of inputs, as a torch tensor on :attr:`device`."""

    @abstractmethod
    def inject(self, assignments: Sequence[Assignment]) -> AbstractContextManager[None]:
        """Apply faults while the context is open; restore weights / remove hooks on exit.

        Each assignment is ``(fault, rows)``: ``rows`` (a slice or index array over the batch) says which
        inputs an activation fault hits, ``None`` every one. Every fault is checked first
        (:meth:`check_fault`): a bad layer, index or bit raises :class:`FaultSpecError` and changes nothing.
        """

    def layer_outputs(self, x: Any, assignments: Sequence[Assignment] = ()) -> "dict[str, torch.Tensor]":
        """Every activation site's output for inputs ``x`` while ``assignments`` are injected, in model order.

        For inspecting how a fault spreads (``faultlab show-activations``); not used by the engines.
        """
        raise NotImplementedError(f"{type(self).__name__} does not report per-layer outputs")

    # ----- shared helpers -----
    device: str = "cpu"

    def site(self, name: str, kind: SiteKind) -> Site:
        """The site a fault list's ``Layer`` names, or a FaultSpecError listing the choices."""
        for s in self._site_index().get(kind, {}).get(name, []):
            return s
        names = [s.name for s in self.sites() if s.kind == kind]
        hint = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        raise FaultSpecError(f"unknown {kind} layer {name!r}; this model's {kind} sites are: {hint} (see 'faultlab layers')")

    def _site_index(self) -> dict[str, dict[str, list[Site]]]:
        idx: dict[str, dict[str, list[Site]]] = {}
        for s in self.sites():
            idx.setdefault(s.kind, {}).setdefault(s.name, []).append(s)
            for alias in self._aliases(s):
                idx[s.kind].setdefault(alias, []).append(s)
        return idx

    def _aliases(self, site: Site) -> list[str]:
        """Other names a fault list may use for a site (e.g. ``conv1.weight`` for ``conv1``)."""
        return []

    def check_fault(self, fault: Fault, *, where: str = "") -> Site:
        """Validate one fault against this model: layer, index rank and bounds, bits within the dtype."""
        at = f"{where}: " if where else ""
        try:
            site = self.site(fault.layer, fault.site)
        except FaultSpecError as e:
            raise FaultSpecError(f"{at}{e}") from None
        return self._check_on_site(fault, site, at)

    @staticmethod
    def _check_on_site(fault: Fault, site: Site, at: str) -> Site:
        if fault.index is not None:
            if len(fault.index) != len(site.shape):
                raise FaultSpecError(
                    f"{at}TensorIndex {fault.index} has rank {len(fault.index)} but {fault.site} site {site.name} has shape {site.shape} (rank {len(site.shape)})"
                )
            for i, (v, n) in enumerate(zip(fault.index, site.shape)):
                if not 0 <= v < n:
                    raise FaultSpecError(f"{at}TensorIndex {fault.index} is out of bounds for {site.name} of shape {site.shape} (axis {i} must be 0..{n - 1})")
        if fault.model in BIT_MODELS:
            w = site.bit_width
            bad = [b for b in fault.bits if not 0 <= b < w]
            if bad:
                raise FaultSpecError(f"{at}bit {bad[0]} is beyond {site.name}'s {site.dtype} ({w} bits); expected 0..{w - 1}")
        if fault.model == "random" and fault.value is not None and site.dtype.startswith(("int", "uint")):
            import numpy as np

            from ..bits import int_value

            info = np.iinfo(np.dtype(site.dtype))
            try:
                int_value(fault.value, info)  # the rule apply_fault_model applies, checked before anything runs
            except FaultSpecError:
                raise FaultSpecError(f"{at}Value {fault.value:g} does not fit {site.name}'s {site.dtype}; expected an integer in {info.min}..{info.max}") from None
        return site

    def check_faults(self, faults: FaultList, n_inputs: int | None = None) -> None:
        """Validate a whole list before anything runs, naming the file and row of the first bad fault.

        Each (layer, site kind) is looked up once and a fault's location is only worked out for the
        message, so a 100,000-fault list is checked in a fraction of a second.
        """
        sites: dict[tuple[str, str], Site] = {}
        for f in faults:
            try:
                site = sites.get((f.layer, f.site))
                if site is None:
                    site = sites[(f.layer, f.site)] = self.site(f.layer, f.site)
                self._check_on_site(f, site, "")
                if f.input is not None and n_inputs is not None and not 0 <= f.input < n_inputs:
                    raise FaultSpecError(f"Input {f.input} is out of range for {n_inputs} evaluation inputs")
            except FaultSpecError as e:
                raise FaultSpecError(f"{faults.where(f)}: {e}") from None

    def expand_config(self, config: "InjectConfig", n_inputs: int, *, seed: int = 0) -> FaultList:
        """Resolve an InjectTF2 config's layer (by name or index among activation sites) and expand it."""
        acts = [s for s in self.sites() if s.kind == "activation"]
        if config.layer_name is not None:
            try:
                site = self.site(config.layer_name, "activation")
            except FaultSpecError as e:
                raise FaultSpecError(f"{config.source}: inject_layer.layer_name: {e}") from None
        else:
            n = config.layer_number or 0
            if not 0 <= n < len(acts):
                raise FaultSpecError(f"{config.source}: inject_layer_number {n} is out of range; this model has {len(acts)} layers (0..{len(acts) - 1})")
            site = acts[n]
        return config.expand(site, n_inputs, seed=seed)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Bring bundled-layout data into the layout this framework's model expects."""
        if x.ndim == 4 and self.image_layout == "channels_last" and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return x


__all__ = ["Target", "Assignment"]
