"""Adaptive campaigns end to end on the demo CNN: stopping, no repeated faults, exact resume."""
from __future__ import annotations

from faultlab.datasets import load_digits
from faultlab.engine.adaptive import AdaptiveCampaign
from faultlab.stats import wilson_interval
from faultlab.targets import make_target


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
        lo, hi = wilson_interval(k, len(part), 0.95, st.N)
        assert st.done and ((hi - lo) / 2 <= 0.1 + 1e-12 or len(part) == st.N)
    assert s.saved == s.fixed_total - len(df)
    again = campaign().run()
    assert again.new_results == 0 and again.resumed
    assert again.results.equals(s.results)
