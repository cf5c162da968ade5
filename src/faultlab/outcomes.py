"""Golden-vs-faulty classification of (fault, input) pairs, and per-fault summaries.

Classes are mutually exclusive codes, one per (fault, input):

* ``MASKED`` -- the faulty output is bit-identical to the golden one;
* ``NON_CRITICAL`` -- same top-1 class, different scores (regression: within tolerance);
* ``SDC1`` -- top-1 changed, but the golden top-1 is still within the faulty top-k;
* ``SDC5`` -- the golden top-1 is not in the faulty top-k (k = 5, or the number of classes);
* ``DUE`` -- NaN or Inf in the faulty output.

The SDC-1 *rate* counts both SDC1 and SDC5 codes (any top-1 change); the SDC-5 rate counts SDC5.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

MASKED, NON_CRITICAL, SDC1, SDC5, DUE = 0, 1, 2, 3, 4
OUTCOME_NAMES = ("masked", "non_critical", "sdc1", "sdc5", "due")


def _bit_equal_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from .bits import as_int_view

    return (as_int_view(a.contiguous()) == as_int_view(b.contiguous())).all(dim=1)


def classify(golden: torch.Tensor, faulty: torch.Tensor, *, k: int = 5, tolerance: float | None = None) -> torch.Tensor:
    """Outcome codes (uint8, one per row) of ``faulty`` (N, C) against ``golden`` (N, C), on their device.

    With ``tolerance`` (or a single output column), rows are compared as regression outputs:
    relative error ``|f - g| <= tolerance * |g|`` is NON_CRITICAL, beyond it SDC1.
    """
    if golden.shape != faulty.shape:
        raise ValueError(f"golden {tuple(golden.shape)} and faulty {tuple(faulty.shape)} outputs differ in shape")
    golden = golden.reshape(golden.shape[0], -1)
    faulty = faulty.reshape(faulty.shape[0], -1)
    masked = _bit_equal_rows(golden, faulty)
    due = ~torch.isfinite(faulty).all(dim=1)
    codes = torch.full((faulty.shape[0],), NON_CRITICAL, dtype=torch.uint8, device=faulty.device)
    if tolerance is not None or faulty.shape[1] == 1:
        tol = 0.0 if tolerance is None else float(tolerance)
        g = golden.double()
        err = (faulty.double() - g).abs().amax(dim=1)
        bad = err > tol * g.abs().amax(dim=1)
        codes[bad] = SDC1
    else:
        kk = min(k, faulty.shape[1])
        g_top = golden.argmax(dim=1)
        f_top = faulty.argmax(dim=1)
        changed = g_top != f_top
        in_topk = (faulty.topk(kk, dim=1).indices == g_top[:, None]).any(dim=1)
        codes[changed] = SDC1
        codes[changed & ~in_topk] = SDC5
    codes[masked] = MASKED
    codes[due & ~masked] = DUE
    return codes



def classify_pairs(
    golden: torch.Tensor, faulty: torch.Tensor, labels: torch.Tensor | None, *, k: int = 5, tolerance: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`classify` and :func:`pair_stats` of the same rows in one go: (codes, stats).

    Engines need both for every pair that reaches the output; this ranks each row once (one
    ``argmax`` and one ``topk`` of the faulty scores) instead of once per question asked.
    """
    if golden.shape != faulty.shape:
        raise ValueError(f"golden {tuple(golden.shape)} and faulty {tuple(faulty.shape)} outputs differ in shape")
    golden = golden.reshape(golden.shape[0], -1)
    faulty = faulty.reshape(faulty.shape[0], -1)
    if tolerance is not None or faulty.shape[1] == 1:  # regression outputs: nothing to rank
        codes = classify(golden, faulty, k=k, tolerance=tolerance)
        return codes, pair_stats(codes, faulty, golden, labels, k=k)
    kk = min(k, faulty.shape[1])
    g_top = golden.argmax(dim=1)
    f_top = faulty.argmax(dim=1)
    f_topk = faulty.topk(kk, dim=1).indices
    changed = g_top != f_top
    g_in_topk = (f_topk == g_top[:, None]).any(dim=1)
    masked = _bit_equal_rows(golden, faulty)
    due = ~torch.isfinite(faulty).all(dim=1)
    codes = torch.full((faulty.shape[0],), NON_CRITICAL, dtype=torch.uint8, device=faulty.device)
    codes[changed] = SDC1
    codes[changed & ~g_in_topk] = SDC5
    codes[masked] = MASKED
    codes[due & ~masked] = DUE
    cols = [torch.nn.functional.one_hot(codes.long(), 5).to(torch.uint8)]
    if labels is not None:
        t1, tk = f_top == labels, (f_topk == labels[:, None]).any(dim=1)
        cols.append(torch.stack([t1, tk, ~changed, g_in_topk], dim=1).to(torch.uint8))
    else:
        cols.append((codes <= NON_CRITICAL).to(torch.uint8)[:, None].expand(-1, 4))
    return codes, torch.cat(cols, dim=1)

def correctness(outputs: torch.Tensor, labels: torch.Tensor, *, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row booleans: top-1 correct and top-k correct against integer labels."""
    outputs = outputs.reshape(outputs.shape[0], -1)
    kk = min(k, outputs.shape[1])
    top1 = outputs.argmax(dim=1) == labels
    topk = (outputs.topk(kk, dim=1).indices == labels[:, None]).any(dim=1)
    return top1, topk


@dataclass(frozen=True)
class FaultResult:
    """One fault's outcome counts over its inputs, with tf_injector's columns plus sdc5/due.

    ``codes`` keeps the per-input outcome codes (uint8, in input order) for per-input exports
    and for comparing engines.
    """

    fault_id: int
    n: int
    masked: int
    non_critical: int
    sdc1: int  # top-1 changed (SDC1 + SDC5 codes)
    sdc5: int
    due: int
    top1_correct: int
    top5_correct: int
    top1_robust: int
    top5_robust: int
    codes: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0, np.uint8))
    engine: str = "exact"
    #: ``codes`` zlib-compressed where the result was made (a worker), so the store's writer only inserts
    codes_z: bytes | None = field(default=None, repr=False, compare=False)


def pair_stats(codes: torch.Tensor, faulty: torch.Tensor, golden: torch.Tensor, labels: torch.Tensor | None, *, k: int = 5) -> torch.Tensor:
    """Per (fault, input) pair: one-hot outcome (5 columns) then top-1/top-k correct and robust (4 columns).

    A small uint8 (P, 9) tensor, so engines can drop the outputs batch by batch and keep only this.
    """
    faulty = faulty.reshape(faulty.shape[0], -1)
    golden = golden.reshape(golden.shape[0], -1)
    cols = [torch.nn.functional.one_hot(codes.long(), 5).to(torch.uint8)]
    if labels is not None and faulty.shape[1] > 1:
        t1, tk = correctness(faulty, labels, k=k)
        r1, rk = correctness(faulty, golden.argmax(dim=1), k=k)
        cols.append(torch.stack([t1, tk, r1, rk], dim=1).to(torch.uint8))
    else:
        ok = (codes <= NON_CRITICAL).to(torch.uint8)[:, None]
        cols.append(ok.expand(-1, 4))
    return torch.cat(cols, dim=1)


def aggregate(fault_ids: Sequence[int], pair_fault: torch.Tensor, stats: torch.Tensor, codes: torch.Tensor, *, engine: str = "exact") -> list[FaultResult]:
    """Per-fault results from per-pair ``stats`` (see :func:`pair_stats`), with one host transfer.

    ``pair_fault[i]`` is the position in ``fault_ids`` of pair i; pairs of one fault must be
    in input order, so each result's ``codes`` are in input order.
    """
    n_f = len(fault_ids)
    counts = torch.zeros((n_f, stats.shape[1]), dtype=torch.long, device=stats.device)
    counts.index_add_(0, pair_fault.long().to(stats.device), stats.long())
    host = counts.cpu().numpy()
    pf = pair_fault.cpu().numpy()
    all_codes = codes.cpu().numpy().astype(np.uint8)
    order = np.argsort(pf, kind="stable")
    bounds = np.searchsorted(pf[order], np.arange(n_f + 1))
    out = []
    for j, fid in enumerate(fault_ids):
        h = host[j]
        out.append(
            FaultResult(
                fault_id=int(fid),
                n=int(h[:5].sum()),
                masked=int(h[MASKED]),
                non_critical=int(h[NON_CRITICAL]),
                sdc1=int(h[SDC1] + h[SDC5]),
                sdc5=int(h[SDC5]),
                due=int(h[DUE]),
                top1_correct=int(h[5]),
                top5_correct=int(h[6]),
                top1_robust=int(h[7]),
                top5_robust=int(h[8]),
                codes=(c := all_codes[order[bounds[j] : bounds[j + 1]]]),
                engine=engine,
                codes_z=zlib.compress(c.tobytes(), 1),
            )
        )
    return out


__all__ = ["MASKED", "NON_CRITICAL", "SDC1", "SDC5", "DUE", "OUTCOME_NAMES", "classify", "classify_pairs", "correctness", "FaultResult", "pair_stats", "aggregate"]
