"""`faultlab plan` and `faultlab report` through the real command line (exit status 2 for bad input)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import norm

# The lead registers these commands in faultlab.cli; importing the module registers them either way.
RUNNER = "import sys, faultlab.cli.report; from faultlab.cli import main; main(sys.argv[1:])"


def faultlab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def leveugle(big_n: int, e: float, t: float, p: float = 0.5) -> int:
    """Leveugle et al.'s n, computed here from the formula (not from faultlab.stats)."""
    return min(big_n, math.ceil(big_n / (1 + e * e * (big_n - 1) / (t * t * p * (1 - p))) - 1e-9))


@pytest.fixture(scope="module")
def big_model(tmp_path_factory) -> str:
    """A model with exactly 268,336 float32 weights, the issue's N = 268,336 x 32."""
    d = tmp_path_factory.mktemp("model")
    (d / "m.py").write_text("import torch\n\ndef factory():\n    return torch.nn.Sequential(torch.nn.Linear(268336, 1, bias=False))\n")
    return f"{d / 'm.py'}:factory"


@pytest.mark.slow
def test_plan_json_reproduces_leveugle_numbers(big_model):
    exact = faultlab("plan", "--model", big_model, "--margin", "0.01", "--confidence", "0.99", "--json")
    assert exact.returncode == 0, exact.stderr
    doc = json.loads(exact.stdout)
    big_n = 268_336 * 32
    assert doc == {"strata": [{"name": "model", "N": big_n, "n": leveugle(big_n, 0.01, norm.ppf(0.995))}], "total": doc["total"]}
    assert doc["total"] == 16_556
    paper = json.loads(faultlab("plan", "--model", big_model, "--margin", "0.01", "--confidence", "0.99", "--t", "2.58", "--json").stdout)
    assert paper["total"] == 16_609 == leveugle(big_n, 0.01, 2.58)


def test_plan_by_layer_writes_the_fault_list(tmp_path):
    from faultlab.faults import FaultList
    from faultlab.models import digits_cnn
    from faultlab.targets import make_target

    out = tmp_path / "faults.csv"
    r = faultlab("plan", "--model", "faultlab.models:digits_cnn", "--margin", "0.05", "--confidence", "0.9", "--by", "layer", "--seed", "4", "-o", out)
    assert r.returncode == 0, r.stderr
    sites = [s for s in make_target(digits_cnn()).sites() if s.kind == "weight"]
    want = {s.name: (s.numel * 32, leveugle(s.numel * 32, 0.05, norm.ppf(0.95))) for s in sites}
    for name, (big_n, n) in want.items():
        assert f"{big_n:,}" in r.stdout and f"{n:,}" in r.stdout
    fl = FaultList.from_csv(out)
    assert len(fl) == sum(n for _, n in want.values())
    for name, (_, n) in want.items():
        mine = [f for f in fl if f.layer == name]
        assert len(mine) == n
        assert len({(f.index, f.bits) for f in mine}) == n  # without replacement
    plan = json.loads((tmp_path / "faults.plan.json").read_text())
    assert plan["margin"] == 0.05 and plan["confidence"] == 0.9 and plan["faults_fingerprint"] == fl.fingerprint()
    assert {s["name"]: (s["N"], s["n"]) for s in plan["strata"]} == want


def test_plan_bad_input_exits_2():
    for args in (("--margin", "2"), ("--margin", "0.05", "--by", "row"), ("--margin", "0.05", "--site", "bias")):
        r = faultlab("plan", "--model", "faultlab.models:digits_cnn", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.slow
def test_report_command(campaign_dir, tmp_path):
    r = faultlab("report", campaign_dir, "--per-input", "--confidence", "0.9")
    assert r.returncode == 0, r.stderr
    assert (campaign_dir / "report.html").exists() and (campaign_dir / "outcomes.parquet").exists()
    assert {p.name for p in (campaign_dir / "plots").iterdir()} >= {"outcomes.png", "layer_rates.png", "layer_bit_heatmap.png", "bit_position.png"}
    assert "report.html" in r.stdout and "90% Wilson" in r.stdout
    missing = faultlab("report", tmp_path / "nope")
    assert missing.returncode == 2 and "no campaign database" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    bad = faultlab("report", campaign_dir, "--confidence", "95")
    assert bad.returncode == 2 and "confidence" in bad.stderr


@pytest.mark.slow
def test_report_shows_the_planned_margin(tmp_path):
    """A campaign run from `faultlab plan -o` output: the page shows the margin asked beside the one achieved."""
    import re

    from faultlab.faults import FaultList
    from report_helpers import run_campaign

    out = tmp_path / "faults.csv"
    assert faultlab("plan", "--model", "faultlab.models:digits_cnn", "--margin", "0.2", "--by", "layer", "-o", out).returncode == 0
    fl = FaultList.from_csv(out)
    camp = run_campaign(tmp_path / "run", fl, n_inputs=10)
    from faultlab.store import CampaignStore

    with CampaignStore.open_existing(camp) as st:  # what `faultlab run --faults faults.csv` records
        st.set_meta("settings", {**st.settings(), "fault_source": str(out)})
    r = faultlab("report", camp)
    assert r.returncode == 0, r.stderr
    html = (camp / "report.html").read_text()
    m = re.search(r'id="margin" data-asked="([^"]+)" data-achieved="([^"]+)"', html)
    assert m and float(m.group(1)) == 0.2
    assert 0 < float(m.group(2)) <= 0.2 + 1e-12  # Leveugle's p = 0.5 sizes are conservative
