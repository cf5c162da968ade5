"""Batch-row selections shared by the framework targets."""
from __future__ import annotations

from typing import Sequence

import torch


def rows_tensor(rows: slice | Sequence[int] | None, n_rows: int, device: torch.device) -> torch.Tensor:
    """Row indices of a batch of ``n_rows``: every row (None), a slice, or explicit indices."""
    if rows is None:
        return torch.arange(n_rows, device=device)
    if isinstance(rows, slice):
        return torch.arange(*rows.indices(n_rows), device=device)
    return torch.as_tensor(list(rows), dtype=torch.long, device=device)
