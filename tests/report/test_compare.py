"""`faultlab compare`: paired per-fault SDC outcomes, McNemar against statsmodels, fault-list checks."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from report_helpers import demo_sites, run_campaign, sample_faults

RUNNER = "import sys, faultlab.cli.report; from faultlab.cli import main; main(sys.argv[1:])"


def faultlab(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, *map(str, args)], capture_output=True, text=True, timeout=300)


def per_fault_sdc(directory: Path) -> pd.DataFrame:
    """Per fault, straight from SQLite: SDC = some input's top-1 changed (outcome code SDC1 or SDC5)."""
    con = sqlite3.connect(directory / "campaign.sqlite")
    df = pd.read_sql_query("SELECT f.id, f.site, f.layer, r.codes FROM results r JOIN faults f ON f.id = r.fault_id ORDER BY f.id", con)
    con.close()
    df["sdc"] = [bool(np.isin(np.frombuffer(zlib.decompress(b), np.uint8), (2, 3)).any()) for b in df["codes"]]
    return df.drop(columns="codes")


@pytest.fixture(scope="module")
def quantised_dir(campaign_dir, tmp_path_factory) -> Path:
    """The same fault list on the demo CNN with its weights rounded to bfloat16 precision."""
    import torch

    from faultlab.models import pretrained_digits_cnn
    from faultlab.store import CampaignStore

    model = pretrained_digits_cnn()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    with CampaignStore.open_existing(campaign_dir) as st:
        faults = st.faults()
    return run_campaign(tmp_path_factory.mktemp("quantised"), faults, model=model, n_inputs=40)


@pytest.mark.slow
def test_mcnemar_and_differences_match_statsmodels(campaign_dir, quantised_dir):
    from faultlab.report.compare import compare_campaigns
    from faultlab.report.export import ALL_LAYERS

    comp = compare_campaigns(campaign_dir, quantised_dir)
    a, b = per_fault_sdc(campaign_dir), per_fault_sdc(quantised_dir)
    m = a.merge(b, on=["id", "site", "layer"], suffixes=("_a", "_b"))
    assert len(comp.table) == m.groupby(["site", "layer"]).ngroups + m["site"].nunique()
    assert (m["sdc_a"] != m["sdc_b"]).any(), "the quantised model should flip some outcomes"
    for _, r in comp.table.iterrows():
        g = m[m["site"] == r["site"]]
        if r["layer"] != ALL_LAYERS:
            g = g[g["layer"] == r["layer"]]
        xa, xb = g["sdc_a"].to_numpy(), g["sdc_b"].to_numpy()
        table = [[int(np.sum(xa & xb)), int(np.sum(xa & ~xb))], [int(np.sum(~xa & xb)), int(np.sum(~xa & ~xb))]]
        ref = mcnemar(table, exact=(table[0][1] + table[1][0]) < 25, correction=True)
        assert (r["only_a"], r["only_b"]) == (table[0][1], table[1][0])
        assert r["statistic"] == pytest.approx(ref.statistic, abs=1e-12)
        assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-12)
        assert r["rate_a"] == pytest.approx(xa.mean()) and r["rate_b"] == pytest.approx(xb.mean())
        assert r["difference"] == pytest.approx(xa.mean() - xb.mean())
        assert -1 <= r["diff_lo"] <= r["difference"] <= r["diff_hi"] <= 1


@pytest.mark.slow
def test_compare_command_terminal_and_html(campaign_dir, quantised_dir, tmp_path):
    out = tmp_path / "cmp.html"
    r = faultlab("compare", campaign_dir, quantised_dir, "--html", out)
    assert r.returncode == 0, r.stderr
    assert "McNemar" in r.stdout and "all layers" in r.stdout
    assert "not weighted by layer size like the all-layers row of `faultlab report`" in " ".join(r.stdout.split())  # says how it pools
    text = out.read_text()
    assert 'id="compare-table"' in text and "<script" not in text and "data:image/png;base64," in text


def test_different_fault_lists_are_refused(campaign_dir, tmp_path):
    other = run_campaign(tmp_path / "other", sample_faults(demo_sites(("weight",)), 2, seed=9), n_inputs=5)
    r = faultlab("compare", campaign_dir, other)
    assert r.returncode == 2
    assert "different fault lists" in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
