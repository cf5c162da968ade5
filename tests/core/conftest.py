from __future__ import annotations

import numpy as np
import pytest
import torch

from faultlab.datasets import load_digits
from faultlab.models import BranchyCNN, pretrained_digits_cnn


@pytest.fixture(scope="session")
def digits_test():
    return load_digits("test")


@pytest.fixture(scope="session")
def trained_cnn():
    return pretrained_digits_cnn()


@pytest.fixture()
def branchy():
    torch.manual_seed(3)
    m = BranchyCNN().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="session")
def random_faults():
    return _random_faults


def _random_faults(target, kind: str, n: int, seed: int, *, bits=range(32)):
    """Uniform (site, element, bit) draws, written independently of faultlab's planners."""
    from faultlab.faults import Fault

    rng = np.random.default_rng(seed)
    sites = [s for s in target.sites() if s.kind == kind]
    out = []
    bits = list(bits)
    for i in range(n):
        s = sites[rng.integers(len(sites))]
        idx = tuple(int(v) for v in np.unravel_index(rng.integers(s.numel), s.shape))
        out.append(Fault(i, s.name, idx, (int(bits[rng.integers(len(bits))]),), kind))
    return out
