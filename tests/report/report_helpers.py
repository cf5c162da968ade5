"""Helpers for the report tests: small real campaigns on the demo CNN, an independent FPC Wilson interval."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from faultlab.faults import Fault, FaultList


def sample_faults(sites, n_per_site: int, *, seed: int, start: int = 0) -> FaultList:
    """Single-bit flips drawn without replacement over (element, bit) of each site."""
    rng = np.random.default_rng(seed)
    faults = []
    for s in sites:
        pop = s.numel * s.bit_width
        picks = rng.choice(pop, size=min(n_per_site, pop), replace=False)
        for p in picks:
            elem, bit = divmod(int(p), s.bit_width)
            faults.append(Fault(start + len(faults), s.name, tuple(int(i) for i in np.unravel_index(elem, s.shape)), (bit,), s.kind))
    return FaultList.of(faults, "test")


def run_campaign(out: Path, faults: FaultList, *, model=None, n_inputs: int = 60, seed: int = 3):
    from faultlab.datasets import load_dataset
    from faultlab.engine.campaign import Campaign
    from faultlab.models import pretrained_digits_cnn
    from faultlab.targets import make_target

    target = make_target(model if model is not None else pretrained_digits_cnn())
    ds = load_dataset("digits", split="test").head(n_inputs)
    Campaign(
        target=target, data=ds, faults=faults, out=out, batch_size=512,
        model_id="faultlab.models:digits_cnn", settings={"seed": seed},
    ).run()
    return out


def demo_sites(kinds=("weight", "activation")):
    from faultlab.datasets import load_dataset
    from faultlab.models import pretrained_digits_cnn
    from faultlab.targets import make_target

    t = make_target(pretrained_digits_cnn())
    t.trace(load_dataset("digits", split="test").x[:1])
    return [s for s in t.sites() if s.kind in kinds]



def fpc_wilson(k: float, n: float, big_n: float, z: float) -> tuple[float, float]:
    """Wilson score interval for a population proportion: solve (p̂ - p)² = z² p(1-p)/n · (N-n)/(N-1) for p."""
    import math

    f = (big_n - n) / (big_n - 1)
    phat = k / n
    a = z * z * f / n  # (1 + a) p² - (2 p̂ + a) p + p̂² = 0
    A, B, C = 1 + a, -(2 * phat + a), phat * phat
    disc = math.sqrt(max(B * B - 4 * A * C, 0.0))
    return (-B - disc) / (2 * A), (-B + disc) / (2 * A)
