"""Adaptive campaigns end to end on the demo CNN: stopping, no repeated faults, exact resume."""
from __future__ import annotations

import math

from scipy.stats import norm

from faultlab.datasets import load_digits
from faultlab.engine.adaptive import AdaptiveCampaign
from faultlab.targets import make_target


def fpc_wilson(k: int, n: int, big_n: int, z: float) -> tuple[float, float]:
    """Wilson interval with the finite-population correction, solved here (not faultlab.stats):
    (p̂ - p)² = z² p(1-p)/n · (N-n)/(N-1), a quadratic in p."""
    if n >= big_n:
        return k / n, k / n
    a = z * z * (big_n - n) / (big_n - 1) / n
    phat = k / n
    b, c = -(2 * phat + a), phat * phat
    disc = math.sqrt(max(b * b - 4 * (1 + a) * c, 0.0))
    return (-b - disc) / (2 * (1 + a)), (-b + disc) / (2 * (1 + a))


def test_adaptive_stops_within_margin_and_resumes(tmp_path, trained_cnn):
    ds = load_digits("test").head(40)

    def campaign():
        return AdaptiveCampaign(target=make_target(trained_cnn), data=ds, out=tmp_path / "a", margin=0.1, by="layer", seed=3, batch_size=64)

    s = campaign().run()
    assert s.rounds >= 1
    df = s.results
    keys = list(zip(df["layer"], df["idx"], df["bits"]))
    assert len(keys) == len(set(keys)), "a fault was drawn twice"
    for st in s.strata:
        part = df[df["stratum"] == st.name]
        k = int((part["sdc1"] > 0).sum())
        assert (k, len(part)) == (st.k, st.n)
        lo, hi = fpc_wilson(k, len(part), st.N, norm.ppf(0.975))
        assert st.done and ((hi - lo) / 2 <= 0.1 + 1e-12 or len(part) == st.N), (st.name, k, len(part), st.N, (hi - lo) / 2)
    assert len(s.strata) > 1 and len(df) > 0
    assert s.saved == s.fixed_total - len(df)
    again = campaign().run()
    assert again.new_results == 0 and again.resumed
    assert again.results.equals(s.results)
