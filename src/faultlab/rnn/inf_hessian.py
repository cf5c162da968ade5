"""Inverse-Hessian-vector products for influence functions: exact, conjugate gradient, LiSSA.

``H`` is the Hessian of the training objective ``mean_i L_i(theta) + weight_decay/2 |theta|^2``
(plus ``damping * I`` to keep it positive definite away from an exact optimum). The exact
solver forms ``H`` with ``torch.func.hessian`` and suits up to a few thousand parameters;
conjugate gradient and LiSSA only need Hessian-vector products.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import FaultlabError

#: ``hvp(v) -> H v`` for float64 vectors of the parameter size.
HVP = Callable[[np.ndarray], np.ndarray]

SOLVERS = ("auto", "exact", "cg", "lissa")
EXACT_LIMIT = 3000


def solve_exact(hessian: np.ndarray, v: np.ndarray, *, damping: float = 0.0) -> np.ndarray:
    """``(H + damping I)^{-1} v`` by a symmetric solve of the explicit Hessian."""
    import scipy.linalg

    h = 0.5 * (hessian + hessian.T) + damping * np.eye(len(hessian))
    try:
        return scipy.linalg.solve(h, v, assume_a="pos")
    except np.linalg.LinAlgError:
        return scipy.linalg.lstsq(h, v)[0]


def solve_cg(hvp: HVP, v: np.ndarray, *, damping: float = 0.0, tol: float = 1e-8, max_iter: int = 500) -> np.ndarray:
    """``(H + damping I)^{-1} v`` by conjugate gradient on Hessian-vector products."""
    from scipy.sparse.linalg import LinearOperator, cg

    n = len(v)
    op = LinearOperator((n, n), matvec=lambda u: hvp(np.asarray(u, dtype=np.float64).ravel()) + damping * u, dtype=np.float64)
    x, info = cg(op, v, rtol=tol, atol=0.0, maxiter=max_iter)
    if info > 0:
        import logging

        logging.getLogger("faultlab").warning("conjugate gradient stopped after %d iterations before reaching tol %g", info, tol)
    return x


def top_eigenvalue(hvp: HVP, size: int, *, iterations: int = 30, seed: int = 0) -> float:
    """The largest eigenvalue of ``H`` by power iteration (for LiSSA's scale)."""
    v = np.random.default_rng(seed).standard_normal(size)
    v /= np.linalg.norm(v)
    lam = 0.0
    for _ in range(iterations):
        w = hvp(v)
        lam = float(np.linalg.norm(w))
        if lam == 0.0:
            return 0.0
        v = w / lam
    return lam


def solve_lissa(hvp: HVP, v: np.ndarray, *, damping: float = 0.01, scale: float | None = None, depth: int = 2000,
                tol: float = 1e-10) -> np.ndarray:
    """``(H + damping I)^{-1} v`` by LiSSA's recursion (Agarwal et al. 2017; Koh & Liang 2017).

    ``h_j = v + (I - (H + damping I)/scale) h_{j-1}``, converging to ``scale (H + damping I)^{-1} v``
    when ``scale`` exceeds the top eigenvalue; ``scale`` defaults to 1.1 times that eigenvalue.
    """
    if scale is None:
        scale = 1.1 * (top_eigenvalue(hvp, len(v)) + damping)
    if scale <= 0:
        raise FaultlabError("LiSSA: the Hessian is zero; nothing to invert")
    h = v.copy()
    for _ in range(depth):
        nxt = v + h - (hvp(h) + damping * h) / scale
        if np.linalg.norm(nxt - h) <= tol * max(np.linalg.norm(nxt), 1e-30):
            h = nxt
            break
        h = nxt
        if not np.all(np.isfinite(h)):
            raise FaultlabError("LiSSA diverged to non-finite values: H + damping I is not positive definite "
                                "(the model is not at a minimum); raise the damping or use --solver cg")
    x = h / scale
    # the recursion converges only when 0 < eig(H + damping I) < 2 scale; a negative eigenvalue (a model
    # not at a minimum) makes it grow without bound, far from (H + damping I)^{-1} v: check the residual
    residual = float(np.linalg.norm(v - hvp(x) - damping * x) / max(np.linalg.norm(v), 1e-30))
    if residual > 1e-3:
        import logging

        logging.getLogger("faultlab").warning(
            "LiSSA did not converge (relative residual %.3g after %d steps): H + damping I is probably not "
            "positive definite, so the influence estimates are unreliable; raise the damping or use conjugate gradient",
            residual, depth)
    return x


def inverse_hvp(v: np.ndarray, *, solver: str, hvp: HVP, hessian: Callable[[], np.ndarray] | None,
                damping: float) -> np.ndarray:
    """Dispatch ``(H + damping I)^{-1} v`` to a solver; ``auto`` is exact up to 3,000 parameters, else CG."""
    if solver not in SOLVERS:
        raise FaultlabError(f"--solver {solver!r}: expected one of {', '.join(SOLVERS)}")
    if solver == "auto":
        solver = "exact" if hessian is not None and len(v) <= EXACT_LIMIT else "cg"
    if solver == "exact":
        if hessian is None:
            raise FaultlabError("--solver exact: this scope has no explicit Hessian; use cg or lissa")
        return solve_exact(hessian(), v, damping=damping)
    if solver == "cg":
        return solve_cg(hvp, v, damping=damping)
    return solve_lissa(hvp, v, damping=max(damping, 1e-6))


__all__ = ["SOLVERS", "solve_exact", "solve_cg", "solve_lissa", "top_eigenvalue", "inverse_hvp"]
