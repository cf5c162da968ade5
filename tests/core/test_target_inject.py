"""``Target.inject`` checks every fault before it changes anything (the README's hand-injection example)."""
from __future__ import annotations

import pytest
import torch

from faultlab.errors import FaultSpecError
from faultlab.faults import Fault
from faultlab.models import digits_cnn
from faultlab.targets import make_target


@pytest.mark.parametrize(
    "fault,expect",
    [
        (Fault(0, "fc1", (3,), (30,)), "rank 1"),
        (Fault(0, "fc1", (40, 17), (30,)), "out of bounds"),
        (Fault(0, "fc1", (3, 17), (32,)), "bit 32 is beyond"),
        (Fault(0, "conv2", (0, 1, 2, 3), (30,), "activation"), "rank 4"),
        (Fault(0, "nope", (0,), (30,)), "unknown weight layer 'nope'"),
    ],
)
def test_inject_refuses_bad_faults_and_changes_nothing(fault, expect):
    torch.manual_seed(0)
    model = digits_cnn().eval()
    target = make_target(model, example_input=torch.rand(1, 1, 8, 8).numpy())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    good = Fault(1, "conv1", (0, 0, 1, 1), (31,))
    with pytest.raises(FaultSpecError, match=expect):
        with target.inject([(good, None), (fault, None)]):  # the good one is applied first, then undone
            pass
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(target.forward(target.to_tensor(x.numpy())), model(x).detach())
