"""Tensor operations shared by the framework targets and the engines (torch storage)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..bits import apply_fault_model
from ..faults import Fault


def rows_tensor(rows: slice | Sequence[int] | None, n_rows: int, device: torch.device) -> torch.Tensor:
    """Row indices of a batch of ``n_rows``: every row (None), a slice, or explicit indices."""
    if rows is None:
        return torch.arange(n_rows, device=device)
    if isinstance(rows, slice):
        return torch.arange(*rows.indices(n_rows), device=device)
    return torch.as_tensor(list(rows), dtype=torch.long, device=device)


def first_tensor(out: Any) -> torch.Tensor | None:
    """A module's output tensor, or the first element of a tuple/list output (e.g. an RNN's)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def fault_in_place(p: torch.Tensor, fault: Fault) -> Callable[[], None]:
    """Apply ``fault`` to the weight storage ``p`` in place; returns the function that restores it bit-exactly."""
    idx = fault.index
    with torch.no_grad():
        if idx is None:
            orig = p.clone()
            p.copy_(apply_fault_model(orig, fault.model, fault.bits, value=fault.value))

            def restore_all() -> None:
                with torch.no_grad():
                    p.copy_(orig)

            return restore_all
        orig_el = p[idx].clone()
        p[idx] = apply_fault_model(orig_el, fault.model, fault.bits, value=fault.value)

    def restore_el() -> None:
        with torch.no_grad():
            p[idx] = orig_el

    return restore_el
