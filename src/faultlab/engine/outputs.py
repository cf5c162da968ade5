"""tf_injector's ``--save-outputs``: raw scores of the clean run and of every fault, as .npy files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..datasets import Dataset
from ..faults import FaultList
from ..targets.base import Target


def save_outputs(target: Target, data: Dataset, faults: FaultList, out: str | Path, *, batch_size: int = 512) -> Path:
    """Write ``outputs/clean.npy`` (N, C) and ``outputs/inj_<id>.npy`` per fault (its inputs' scores).

    Files already written are skipped, so an interrupted save resumes.
    """
    d = Path(out) / "outputs"
    d.mkdir(parents=True, exist_ok=True)
    x = target.to_tensor(target.prepare(data.x))  # type: ignore[attr-defined]

    def fwd(sel: torch.Tensor | slice) -> np.ndarray:
        xs = x[sel]
        return torch.cat([target.forward(xs[i : i + batch_size]) for i in range(0, len(xs), batch_size)]).cpu().numpy()

    clean = d / "clean.npy"
    if not clean.exists():
        np.save(clean, fwd(slice(None)))
    for f in faults:
        p = d / f"inj_{f.id}.npy"
        if p.exists():
            continue
        rows = slice(None) if f.input is None else torch.tensor([f.input])
        with target.inject([(f, None)]):
            arr = fwd(rows)
        tmp = p.with_suffix(".tmp.npy")
        np.save(tmp, arr)
        tmp.replace(p)
    return d


__all__ = ["save_outputs"]
