"""Golden-vs-faulty classification of (fault, input) pairs, and per-fault summaries.

Classes are mutually exclusive codes, one per (fault, input):

* ``MASKED`` -- the faulty output is bit-identical to the golden one;
* ``NON_CRITICAL`` -- same top-1 class, different scores (regression: within tolerance);
* ``SDC1`` -- top-1 changed, but the golden top-1 is still within the faulty top-k;
* ``SDC5`` -- the golden top-1 is not in the faulty top-k (k = 5, or the number of classes);
* ``DUE`` -- NaN or Inf in the faulty output.

The SDC-1 *rate* counts both SDC1 and SDC5 codes (any top-1 change); the SDC-5 rate counts SDC5.
Top-k membership ranks classes as ``argmax`` does (ties to the lower index, NaN first): see :func:`in_top_k`.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from .bits import as_int_view

MASKED, NON_CRITICAL, SDC1, SDC5, DUE = 0, 1, 2, 3, 4
OUTCOME_NAMES = ("masked", "non_critical", "sdc1", "sdc5", "due")


def rows_equal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row: are ``a`` and ``b`` bit-identical (the outcome's definition of masked)?"""
    ne = torch.ne(as_int_view(a), as_int_view(b))  # any layouts: no contiguous copies
    if ne.dim() <= 1:
        return ~ne
    return ~any_per_row(ne)


_WORDS = ((torch.int64, 8), (torch.int32, 4), (torch.int16, 2))


def any_per_row(ne: torch.Tensor) -> torch.Tensor:
    """``ne.any()`` over every dim but the first, reading the booleans 8 at a time where the layout allows.

    A reduction of a bool tensor along rows runs byte by byte; viewing each row's flags as 64-bit
    words (a row is any() iff one of its words is nonzero) makes the slowest part of an early-exit
    check several times cheaper.
    """
    order = sorted(range(ne.dim()), key=lambda d: (-ne.stride(d), d))
    mem = ne.permute(order)  # the tensor in memory order, rows outermost if the layout is dense
    width = math.prod(ne.shape[1:])
    if order[0] == 0 and mem.is_contiguous() and width > 1:
        flat = mem.view(ne.shape[0], width)
        for word, size in _WORDS:
            if width % size == 0:
                words = flat.view(word)
                return words.ne(0).squeeze(1) if words.shape[1] == 1 else words.ne(0).any(dim=1)
    return ne.any(dim=tuple(range(1, ne.dim())))


#: the exponent bits of each float type: all set means Inf or NaN
_EXPONENT_BITS = {torch.float32: 0x7F800000, torch.float64: 0x7FF0000000000000, torch.float16: 0x7C00, torch.bfloat16: 0x7F80}


def finite_rows(x: torch.Tensor) -> torch.Tensor:
    """Per row of ``x``: are all its values finite? Read from the exponent bits (all ones: Inf or NaN).

    Same answer as ``isfinite(x).all(dim=1)``, in two integer passes and a word-wide reduction
    instead of a per-byte one: engines ask it of every (fault, input) row that reaches the output.
    """
    e = _EXPONENT_BITS.get(x.dtype)
    if e is None or x.dim() < 2:
        return torch.isfinite(x).reshape(x.shape[0], -1).all(dim=1) if x.dim() >= 1 else torch.isfinite(x)
    return ~any_per_row(as_int_view(x).bitwise_and(e) == e)


def in_top_k(scores: torch.Tensor, cls: torch.Tensor, k: int) -> torch.Tensor:
    """Per row of ``scores`` (N, C): is class ``cls[r]`` among the ``k`` best?

    Classes are ranked as ``argmax`` ranks them: higher scores first, NaN above everything,
    ties to the lower class index -- so the top-1 is always ``argmax``, and the result does not
    depend on how a ``topk`` kernel happens to order ties. One comparison per class, no sort.
    """
    v = scores.gather(1, cls.long()[:, None])
    nan_s, nan_v = scores.isnan(), v.isnan()
    before = torch.arange(scores.shape[1], device=scores.device)[None, :] < cls[:, None]
    ahead = (scores > v) | (((scores == v) | (nan_s & nan_v)) & before) | (nan_s & ~nan_v)
    return ahead.sum(dim=1) < k


def classify(golden: torch.Tensor, faulty: torch.Tensor, *, k: int = 5, tolerance: float | None = None) -> torch.Tensor:
    """Outcome codes (uint8, one per row) of ``faulty`` (N, C) against ``golden`` (N, C), on their device.

    With ``tolerance`` (or a single output column), rows are compared as regression outputs:
    relative error ``|f - g| <= tolerance * |g|`` is NON_CRITICAL, beyond it SDC1.
    """
    golden, faulty = _rows(golden, faulty)
    if tolerance is not None or faulty.shape[1] == 1:
        tol = 0.0 if tolerance is None else float(tolerance)
        g = golden.double()
        err = (faulty.double() - g).abs().amax(dim=1)
        changed = err > tol * g.abs().amax(dim=1)
        return _codes(golden, faulty, changed, torch.zeros_like(changed))
    g_top = golden.argmax(dim=1)
    changed = g_top != faulty.argmax(dim=1)
    return _codes(golden, faulty, changed, ~in_top_k(faulty, g_top, min(k, faulty.shape[1])))


def _rows(golden: torch.Tensor, faulty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if golden.shape != faulty.shape:
        raise ValueError(f"golden {tuple(golden.shape)} and faulty {tuple(faulty.shape)} outputs differ in shape")
    return golden.reshape(golden.shape[0], -1), faulty.reshape(faulty.shape[0], -1)


def _codes(golden: torch.Tensor, faulty: torch.Tensor, changed: torch.Tensor, out_of_top_k: torch.Tensor) -> torch.Tensor:
    """Codes from the per-row facts, most specific last: SDC1/SDC5 if the top-1 changed, DUE if not finite, MASKED if bit-identical."""
    code = NON_CRITICAL + changed.to(torch.uint8) * (1 + out_of_top_k.to(torch.uint8))
    code = torch.where(finite_rows(faulty), code, DUE)
    return torch.where(rows_equal(golden, faulty), MASKED, code).to(torch.uint8)


#: bits of a pair's flags (see :func:`pair_flags`)
TOP1_CORRECT, TOPK_CORRECT, TOP1_ROBUST, TOPK_ROBUST = 1, 2, 4, 8


def pair_flags(
    codes: torch.Tensor, faulty: torch.Tensor, golden: torch.Tensor, labels: torch.Tensor | None, *, k: int = 5,
    golden_top: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per (fault, input) pair, one uint8 of four bits: top-1 / top-k correct against ``labels``, top-1 / top-k robust (golden top-1 kept).

    Without labels (or with one output column) all four bits say the pair is masked or
    non-critical. One byte per pair lets engines drop the outputs batch by batch.
    """
    golden, faulty = _rows(golden, faulty)
    if labels is None or faulty.shape[1] == 1:
        return (codes <= NON_CRITICAL).to(torch.uint8) * 15
    kk = min(k, faulty.shape[1])
    g_top = golden.argmax(dim=1) if golden_top is None else golden_top
    f_top = faulty.argmax(dim=1)
    bits = [f_top == labels, in_top_k(faulty, labels, kk), f_top == g_top, in_top_k(faulty, g_top, kk)]
    out = torch.zeros(faulty.shape[0], dtype=torch.uint8, device=faulty.device)
    for i, b in enumerate(bits):
        out |= b.to(torch.uint8) << i
    return out


def classify_pairs(
    golden: torch.Tensor, faulty: torch.Tensor, labels: torch.Tensor | None, *, k: int = 5, tolerance: float | None = None,
    golden_top: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`classify` and :func:`pair_flags` of the same rows in one go: (codes, flags).

    Engines need both for every pair that reaches the output; this ranks each row once.
    ``golden_top`` (the golden rows' argmax, if the caller has it) saves ranking the golden rows.
    """
    golden, faulty = _rows(golden, faulty)
    if tolerance is not None or faulty.shape[1] == 1:  # regression outputs: nothing to rank
        codes = classify(golden, faulty, k=k, tolerance=tolerance)
        return codes, pair_flags(codes, faulty, golden, labels, k=k)
    kk = min(k, faulty.shape[1])
    g_top = golden.argmax(dim=1) if golden_top is None else golden_top
    f_top = faulty.argmax(dim=1)
    kept = f_top == g_top
    g_in = _in_top_k_unless_top(faulty, g_top, kk, kept)
    codes = _codes(golden, faulty, ~kept, ~g_in)
    if labels is None:
        return codes, (codes <= NON_CRITICAL).to(torch.uint8) * 15
    hit = f_top == labels
    flags = hit.to(torch.uint8) | (_in_top_k_unless_top(faulty, labels, kk, hit).to(torch.uint8) << 1) | (kept.to(torch.uint8) << 2) | (g_in.to(torch.uint8) << 3)
    return codes, flags


def _in_top_k_unless_top(scores: torch.Tensor, cls: torch.Tensor, k: int, is_top: torch.Tensor) -> torch.Tensor:
    """:func:`in_top_k`, ranked only for the rows whose ``cls`` is not the argmax (``is_top``): the argmax is always in the top k.

    Most faulty rows keep their top-1, so this ranks a few rows instead of all of them.
    """
    out = torch.ones(scores.shape[0], dtype=torch.bool, device=scores.device)
    rest = torch.nonzero(~is_top).squeeze(1)
    if len(rest):
        out[rest] = in_top_k(scores.index_select(0, rest), cls.index_select(0, rest), k)
    return out


def correctness(outputs: torch.Tensor, labels: torch.Tensor, *, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row booleans: top-1 correct and top-k correct against integer labels (ties ranked as in :func:`in_top_k`)."""
    outputs = outputs.reshape(outputs.shape[0], -1)
    kk = min(k, outputs.shape[1])
    return outputs.argmax(dim=1) == labels, in_top_k(outputs, labels, kk)


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
    #: ``codes`` zlib-compressed where the result was made (a campaign worker, see :meth:`compressed`), so the
    #: store's writer only inserts; engines leave it None (storage is not their job)
    codes_z: bytes | None = field(default=None, repr=False, compare=False)

    def compressed(self) -> "FaultResult":
        """This result with ``codes_z`` filled in (as the store keeps codes), for sending to the store's writer."""
        if self.codes_z is not None:
            return self
        return replace(self, codes_z=zlib.compress(np.ascontiguousarray(self.codes, dtype=np.uint8).tobytes(), 1))


def aggregate(fault_ids: Sequence[int], pair_fault: torch.Tensor, codes: torch.Tensor, flags: torch.Tensor, *, engine: str = "exact") -> list[FaultResult]:
    """Per-fault results from per-pair ``codes`` and ``flags`` (see :func:`pair_flags`), with one histogram and one host transfer.

    ``pair_fault[i]`` is the position in ``fault_ids`` of pair i; pairs of one fault must be
    in input order, so each result's ``codes`` are in input order.
    """
    n_f = len(fault_ids)
    pf_dev = pair_fault.to(codes.device)
    # int32 keys when they fit: the histogram key is the costly part of a big run in int64
    kt = torch.int32 if n_f * 80 < 2**31 else torch.int64
    key = pf_dev.to(kt) * 80 + codes.to(kt) * 16 + flags.to(kt)
    hist = torch.bincount(key, minlength=n_f * 80).reshape(n_f, 5, 16).cpu().numpy()
    per_code = hist.sum(axis=2)  # (n_f, 5)
    per_flags = hist.sum(axis=1)  # (n_f, 16): pairs per flag combination
    bit_of = (np.arange(16)[None, :] >> np.arange(4)[:, None]) & 1  # (4, 16)
    per_bit = per_flags @ bit_of.T  # (n_f, 4): top1/topk correct, top1/topk robust
    pf = pf_dev.cpu().numpy()
    all_codes = codes.cpu().numpy().astype(np.uint8, copy=False)
    if len(pf) > 1 and bool((pf[1:] < pf[:-1]).any()):
        order = np.argsort(pf, kind="stable")
        all_codes, pf = all_codes[order], pf[order]
    bounds = np.searchsorted(pf, np.arange(n_f + 1)).tolist()
    rows = np.concatenate([per_code, per_code[:, SDC1:SDC1 + 1] + per_code[:, SDC5:SDC5 + 1], per_bit], axis=1).tolist()
    out = []
    for j, fid in enumerate(fault_ids):
        h = rows[j]  # masked, non_critical, sdc1 code, sdc5, due, sdc1 rate, top1/topk correct, top1/topk robust
        c = all_codes[bounds[j] : bounds[j + 1]]
        out.append(
            FaultResult(
                fault_id=int(fid),
                n=bounds[j + 1] - bounds[j],
                masked=h[MASKED],
                non_critical=h[NON_CRITICAL],
                sdc1=h[5],
                sdc5=h[SDC5],
                due=h[DUE],
                top1_correct=h[6],
                top5_correct=h[7],
                top1_robust=h[8],
                top5_robust=h[9],
                codes=c,
                engine=engine,
            )
        )
    return out


__all__ = ["rows_equal", "any_per_row", "finite_rows", "MASKED", "NON_CRITICAL", "SDC1", "SDC5", "DUE", "OUTCOME_NAMES", "classify", "classify_pairs", "correctness", "in_top_k", "pair_flags", "FaultResult", "aggregate",
           "TOP1_CORRECT", "TOPK_CORRECT", "TOP1_ROBUST", "TOPK_ROBUST"]
