"""State abstraction: hidden states -> PCA (k dims) -> diagonal GMM (m components) -> state ids.

Abstract states are numbered 1..m; state 0 is a virtual initial state that every
trace starts in, so a trace of T steps has T+1 states. The PCA is fit on every
training step; the GMM on the projected steps.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError, FaultlabError

log = logging.getLogger("faultlab")


def _as_steps(hidden: np.ndarray) -> np.ndarray:
    hidden = np.asarray(hidden)
    if hidden.ndim != 3:
        raise DataError(f"hidden states must be (N, T, H), got shape {hidden.shape}")
    return hidden.reshape(-1, hidden.shape[2]).astype(np.float64)


class Abstraction:
    """PCA + diagonal GMM abstraction of a recurrent model's hidden states.

    ``Abstraction(pca_dims=k, components=m, seed=0).fit(hidden_train)``; then
    :meth:`transform` maps hidden states (N, T, H) to states 1..m and :meth:`traces`
    prepends the virtual state 0. Learned arrays end in ``_``; :meth:`save` writes them
    to an ``.npz`` that :meth:`load` reads back without pickling.
    """

    def __init__(self, *, pca_dims: int, components: int, seed: int = 0, max_iter: int = 200) -> None:
        self.pca_dims = pca_dims
        self.components = components
        self.seed = seed
        self.max_iter = max_iter

    # ------------------------------------------------------------------ fitting
    def _validate(self, n_steps: int, width: int) -> None:
        if not 1 <= self.pca_dims <= min(width, n_steps):
            raise FaultlabError(f"--pca {self.pca_dims}: must be between 1 and the hidden size {width} (and the number of steps {n_steps})")
        if not 1 <= self.components <= n_steps:
            raise FaultlabError(f"--components {self.components}: must be between 1 and the number of training steps {n_steps}")

    def fit(self, hidden: np.ndarray) -> "Abstraction":
        """Fit the PCA on all steps of ``hidden`` (N, T, H), then the GMM; returns ``self``."""
        steps = _as_steps(hidden)
        self._validate(len(steps), steps.shape[1])
        self._fit_pca(steps)
        return self._fit_gmm(self.project_steps(steps))

    def _fit_pca(self, steps: np.ndarray) -> "Abstraction":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=self.pca_dims, random_state=self.seed).fit(steps)
        self.pca_mean_ = pca.mean_
        self.pca_components_ = pca.components_
        self.explained_variance_ratio_ = pca.explained_variance_ratio_
        return self

    def _fit_gmm(self, z: np.ndarray) -> "Abstraction":
        from sklearn.mixture import GaussianMixture

        gmm = GaussianMixture(n_components=self.components, covariance_type="diag", random_state=self.seed,
                              max_iter=self.max_iter, reg_covar=1e-6)
        gmm.fit(z)
        if not gmm.converged_:
            log.warning("GMM with %d components did not converge in %d iterations", self.components, self.max_iter)
        self.gmm_weights_ = gmm.weights_
        self.gmm_means_ = gmm.means_
        self.gmm_variances_ = gmm.covariances_
        self.bic_ = float(gmm.bic(z))
        return self

    # ---------------------------------------------------------------- transform
    @property
    def hidden_size(self) -> int:
        """Width H of the hidden states this abstraction was fit on."""
        self._check_fitted()
        return int(self.pca_mean_.shape[0])

    @property
    def n_states(self) -> int:
        """Number of states including the virtual state 0: ``components + 1``."""
        return self.components + 1

    def _check_fitted(self) -> None:
        if not hasattr(self, "gmm_means_"):
            raise FaultlabError("this Abstraction is not fitted yet; call fit(hidden_train) first")

    def project_steps(self, steps: np.ndarray) -> np.ndarray:
        """PCA projection of hidden states given as rows (n, H) -> (n, k)."""
        return (np.asarray(steps, dtype=np.float64) - self.pca_mean_) @ self.pca_components_.T

    def log_likelihoods(self, z: np.ndarray) -> np.ndarray:
        """Weighted log-density of each GMM component at projected points z (n, k) -> (n, m)."""
        var = self.gmm_variances_
        quad = ((z[:, None, :] - self.gmm_means_[None]) ** 2 / var[None]).sum(axis=2)
        log_det = np.log(var).sum(axis=1)
        k = z.shape[1]
        return -0.5 * (quad + log_det + k * np.log(2 * np.pi)) + np.log(self.gmm_weights_)

    def transform(self, hidden: np.ndarray, *, batch_size: int = 65536) -> np.ndarray:
        """States (N, T) in 1..m of hidden states (N, T, H): the most likely GMM component, plus one."""
        self._check_fitted()
        hidden = np.asarray(hidden)
        steps = _as_steps(hidden)
        if steps.shape[1] != self.pca_mean_.shape[0]:
            raise DataError(f"hidden size {steps.shape[1]} does not match the abstraction's {self.pca_mean_.shape[0]}; profile the same model")
        out = np.empty(len(steps), dtype=np.int64)
        for start in range(0, len(steps), batch_size):
            z = self.project_steps(steps[start:start + batch_size])
            out[start:start + batch_size] = self.log_likelihoods(z).argmax(axis=1) + 1
        return out.reshape(hidden.shape[:2])

    def traces(self, hidden: np.ndarray) -> np.ndarray:
        """State traces (N, T+1): the virtual initial state 0 followed by :meth:`transform`."""
        states = self.transform(hidden)
        return np.concatenate([np.zeros((len(states), 1), dtype=np.int64), states], axis=1)

    # ------------------------------------------------------------------- saving
    _ARRAYS = ("pca_mean_", "pca_components_", "explained_variance_ratio_", "gmm_weights_", "gmm_means_", "gmm_variances_")

    def save(self, path: str | Path) -> Path:
        """Write the fitted abstraction to ``path`` (.npz), atomically."""
        self._check_fitted()
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp.npz")
        np.savez(tmp, pca_dims=self.pca_dims, components=self.components, seed=self.seed, bic=self.bic_,
                 **{name: getattr(self, name) for name in self._ARRAYS})
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> "Abstraction":
        """Read an abstraction written by :meth:`save`; its array shapes are checked so a damaged file fails here."""
        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                obj = cls(pca_dims=int(z["pca_dims"]), components=int(z["components"]), seed=int(z["seed"]))
                obj.bic_ = float(z["bic"])
                for name in cls._ARRAYS:
                    setattr(obj, name, np.asarray(z[name], dtype=np.float64))
        except FileNotFoundError:
            raise
        except Exception as e:
            raise DataError(f"{p}: not an abstraction written by faultlab ({type(e).__name__}: {' '.join(str(e).split())[:120]}); "
                            "rebuild it with `faultlab rnn build`") from e
        obj._check_arrays(p)
        return obj

    def _check_arrays(self, p: Path) -> None:
        k, m = self.pca_dims, self.components
        h = self.pca_mean_.shape[0] if self.pca_mean_.ndim == 1 else -1
        want = {"pca_mean_": (h,), "pca_components_": (k, h), "explained_variance_ratio_": (k,),
                "gmm_weights_": (m,), "gmm_means_": (m, k), "gmm_variances_": (m, k)}
        bad = [f"{n} {getattr(self, n).shape} (expected {w})" for n, w in want.items() if getattr(self, n).shape != w]
        if h < 1 or k < 1 or m < 1 or bad:
            raise DataError(f"{p}: damaged abstraction for pca={k}, m={m}: {', '.join(bad) or 'empty arrays'}; "
                            "delete it and rerun `faultlab rnn build`")
        if not all(np.all(np.isfinite(getattr(self, n))) for n in want) or (self.gmm_variances_ <= 0).any() or (self.gmm_weights_ <= 0).any():
            raise DataError(f"{p}: damaged abstraction (non-finite values or non-positive variances/weights); "
                            "delete it and rerun `faultlab rnn build`")

    def __repr__(self) -> str:
        return f"Abstraction(pca_dims={self.pca_dims}, components={self.components}, seed={self.seed})"


# ---------------------------------------------------------------------- sweep
@dataclass(frozen=True)
class SweepRow:
    """One row of ``abstraction.csv``: the abstraction with ``m`` components and its quality."""

    m: int
    bic: float
    stability_mean: float
    stability_weighted: float
    stability_min: float
    stability_max: float
    seconds: float


SWEEP_COLUMNS = tuple(f.name for f in fields(SweepRow))


def components_range(start: int, end: int, step: int = 1) -> list[int]:
    """Every m from ``start`` to ``end`` by ``step``, including ``end`` when the steps land on it."""
    if start < 1 or end < start or step < 1:
        raise FaultlabError(f"--start {start} --end {end} --step {step}: need 1 <= start <= end and step >= 1")
    return list(range(start, end + 1, step))


def sweep_components(
    hidden: np.ndarray,
    step_pred: np.ndarray,
    *,
    pca_dims: int,
    ms: list[int],
    seed: int = 0,
    n_classes: int | None = None,
    on_fit: Callable[[Abstraction, SweepRow], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[SweepRow]:
    """Fit one abstraction per m in ``ms`` (sharing one PCA) and measure BIC and stability.

    ``on_fit(abstraction, row)`` is called as soon as each m is done (to store it).
    """
    from .stability import state_stability

    steps = _as_steps(hidden)
    step_pred = np.asarray(step_pred)
    if n_classes is None:
        n_classes = int(step_pred.max()) + 1
    base = Abstraction(pca_dims=pca_dims, components=max(ms), seed=seed)
    base._validate(len(steps), steps.shape[1])
    base._fit_pca(steps)
    z = base.project_steps(steps)
    rows: list[SweepRow] = []
    for i, m in enumerate(ms):
        t0 = time.perf_counter()
        a = Abstraction(pca_dims=pca_dims, components=m, seed=seed)
        a._validate(len(steps), steps.shape[1])
        a.pca_mean_, a.pca_components_ = base.pca_mean_, base.pca_components_
        a.explained_variance_ratio_ = base.explained_variance_ratio_
        a._fit_gmm(z)
        st = state_stability(a.traces(hidden), step_pred, n_states=a.n_states, n_classes=n_classes)
        row = SweepRow(m=m, bic=a.bic_, stability_mean=st.mean, stability_weighted=st.weighted,
                       stability_min=st.min, stability_max=st.max, seconds=time.perf_counter() - t0)
        log.info("m=%d bic=%.1f stability %.3f (weighted %.3f)", m, row.bic, row.stability_mean, row.stability_weighted)
        rows.append(row)
        if on_fit:
            on_fit(a, row)
        if progress:
            progress(i + 1, len(ms))
    return rows


def write_sweep_csv(rows: list[SweepRow], path: str | Path) -> Path:
    """Write sweep rows (sorted by m) to ``path`` with the columns of :class:`SweepRow`, atomically."""
    import pandas as pd

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame([asdict(r) for r in sorted(rows, key=lambda r: r.m)], columns=list(SWEEP_COLUMNS))
    tmp = p.with_name(p.name + ".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(p)
    return p


def read_sweep_csv(path: str | Path) -> list[SweepRow]:
    """Rows of an ``abstraction.csv`` written by :func:`write_sweep_csv` (empty when missing)."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        return []
    df = pd.read_csv(p)
    missing = [c for c in SWEEP_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{p}: missing column(s) {', '.join(missing)}; move it away and rerun `faultlab rnn build`")
    return [SweepRow(**{c: (int(r[c]) if c == "m" else float(r[c])) for c in SWEEP_COLUMNS}) for _, r in df.iterrows()]


__all__ = ["Abstraction", "SweepRow", "SWEEP_COLUMNS", "components_range", "sweep_components", "write_sweep_csv", "read_sweep_csv"]
