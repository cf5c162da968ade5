"""Fixtures for the report tests: one small real campaign on the demo CNN, shared by the session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # report_helpers, whatever pytest's import mode
from report_helpers import demo_sites, run_campaign, sample_faults  # noqa: E402


@pytest.fixture(scope="session")
def campaign_dir(tmp_path_factory) -> Path:
    """A weight + activation campaign: 12 single-bit faults per site, 40 inputs."""
    out = tmp_path_factory.mktemp("campaign")
    return run_campaign(out, sample_faults(demo_sites(), 12, seed=1), n_inputs=40)
