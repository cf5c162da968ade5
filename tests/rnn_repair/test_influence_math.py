"""Koh & Liang on a convex softmax head: Hessian, solvers, and the removal sign checked by refitting."""
from __future__ import annotations

import numpy as np
import pytest

from faultlab.rnn.inf_hessian import solve_cg, solve_exact, solve_lissa
from faultlab.rnn.influence import fit_head, head_losses, kl_head_influence

WD = 1e-2


def _blobs(seed: int = 0, n: int = 120, width: int = 4, n_classes: int = 3, flip: int = 12):
    """Gaussian blobs with some labels of class 0 flipped to class 1; test points of class 0."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, size=(n_classes, width))
    y = np.arange(n) % n_classes
    phi = centres[y] + rng.normal(0, 1.0, size=(n, width))
    flipped = rng.choice(np.flatnonzero(y == 0), flip, replace=False)
    y_noisy = y.copy()
    y_noisy[flipped] = 1
    y_t = np.zeros(20, dtype=np.int64)
    phi_t = centres[y_t] + rng.normal(0, 1.0, size=(20, width))
    return phi, y_noisy, flipped, phi_t, y_t


def _numpy_hessian(theta, phi, y, n_classes):
    """The analytic Hessian of mean softmax cross-entropy + WD/2 |theta|^2 (weights row-major, then bias)."""
    width = phi.shape[1]
    w, b = theta[: n_classes * width].reshape(n_classes, width), theta[n_classes * width:]
    z = phi @ w.T + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    P = n_classes * (width + 1)
    H = np.zeros((P, P))
    for i in range(len(phi)):
        s = np.diag(p[i]) - np.outer(p[i], p[i])
        H_ww = np.kron(s, np.outer(phi[i], phi[i]))
        H_wb = np.kron(s, phi[i][:, None])
        block = np.block([[H_ww, H_wb], [H_wb.T, s]])
        H += block
    return H / len(phi) + WD * np.eye(P)


def test_exact_hessian_matches_analytic_formula():
    import torch
    from torch.func import hessian

    from faultlab.rnn.influence import _head_loss_fns

    phi, y, _, _, _ = _blobs()
    theta = np.random.default_rng(1).normal(size=3 * 5)
    _, objective = _head_loss_fns(3, 4)
    got = hessian(objective)(torch.as_tensor(theta), torch.as_tensor(phi), torch.as_tensor(y), WD).numpy()
    np.testing.assert_allclose(got, _numpy_hessian(theta, phi, y, 3), rtol=1e-8, atol=1e-10)


def test_cg_and_lissa_agree_with_exact_solve():
    phi, y, _, _, _ = _blobs()
    theta = fit_head(phi, y, n_classes=3, weight_decay=WD)
    H = _numpy_hessian(theta, phi, y, 3)
    v = np.random.default_rng(2).normal(size=len(H))
    exact = np.linalg.solve(H, v)
    np.testing.assert_allclose(solve_exact(H, v), exact, rtol=1e-8)
    np.testing.assert_allclose(solve_cg(lambda u: H @ u, v, tol=1e-12), exact, rtol=1e-5, atol=1e-8)
    lissa = solve_lissa(lambda u: H @ u, v, damping=0.0, depth=20000)
    np.testing.assert_allclose(lissa, exact, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_removal_prediction_matches_refitting(solver):
    """(1/n) g_target^T H^-1 g_z predicts the actual change of the target loss when z is removed."""
    phi, y, _, phi_t, y_t = _blobs()
    theta = fit_head(phi, y, n_classes=3, weight_decay=WD)
    pred = kl_head_influence(theta, phi, y, phi_t, y_t, n_classes=3, weight_decay=WD, solver=solver)
    base = head_losses(theta, phi_t, y_t, n_classes=3).sum()
    idx = np.r_[np.argsort(pred)[:4], np.argsort(pred)[-4:]]
    actual = []
    for j in idx:
        w = np.ones(len(phi))
        w[j] = 0
        refit = fit_head(phi, y, n_classes=3, weight_decay=WD, theta0=theta, weights=w)
        actual.append(head_losses(refit, phi_t, y_t, n_classes=3).sum() - base)
    actual = np.array(actual)
    assert np.corrcoef(pred[idx], actual)[0, 1] > 0.95
    slope = np.polyfit(pred[idx], actual, 1)[0]
    assert 0.7 < slope < 1.4  # the sign and the 1/n factor are right


def test_removing_top_harmful_reduces_target_loss_and_top_helpful_raises_it():
    phi, y, flipped, phi_t, y_t = _blobs()
    theta = fit_head(phi, y, n_classes=3, weight_decay=WD)
    harm = -kl_head_influence(theta, phi, y, phi_t, y_t, n_classes=3, weight_decay=WD)
    base = head_losses(theta, phi_t, y_t, n_classes=3).sum()

    def loss_without(idx):
        w = np.ones(len(phi))
        w[idx] = 0
        return head_losses(fit_head(phi, y, n_classes=3, weight_decay=WD, weights=w), phi_t, y_t, n_classes=3).sum()

    order = np.argsort(-harm)
    assert loss_without(order[:10]) < base
    assert loss_without(order[-10:]) > base
    # the flipped samples dominate the harmful end
    assert len(set(order[:12].tolist()) & set(flipped.tolist())) >= 6


def test_lissa_warns_when_the_hessian_is_indefinite(caplog):
    """A GRU away from a minimum has negative Hessian eigenvalues; LiSSA then diverges (audit 11).

    On a tiny GRU (71 parameters) the explicit Hessian had eigenvalue -0.056 and LiSSA returned
    values 1e13 times the explicit solve without a word; it must at least say so.
    """
    import logging

    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    H = q @ np.diag([-0.05, 0.2, 0.5, 1.0, 1.5, 2.0]) @ q.T
    v = rng.normal(size=6)
    with caplog.at_level(logging.WARNING, logger="faultlab"):
        solve_lissa(lambda u: H @ u, v, damping=0.01, depth=500)
    assert any("LiSSA did not converge" in r.getMessage() for r in caplog.records)
    # positive definite: converges to the explicit solve, no warning
    caplog.clear()
    H_pd = q @ np.diag([0.3, 0.4, 0.5, 1.0, 1.5, 2.0]) @ q.T
    with caplog.at_level(logging.WARNING, logger="faultlab"):
        got = solve_lissa(lambda u: H_pd @ u, v, damping=0.01, depth=5000)
    assert not any("LiSSA" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(got, np.linalg.solve(H_pd + 0.01 * np.eye(6), v), rtol=1e-6)
