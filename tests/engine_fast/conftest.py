import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def digits():
    """64 digits test images and labels; copied into standard strides (the exact engine gathers inputs into standard strides for activation faults)."""
    from faultlab.datasets import load_dataset

    ds = load_dataset("digits", split="test")
    return ds.x[:64].copy(), ds.y[:64]
