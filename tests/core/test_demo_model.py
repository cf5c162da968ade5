"""The demo CNN is the same model whichever process trains it first (any thread count)."""
from __future__ import annotations

import pytest
import torch


@pytest.mark.slow
def test_pretrained_digits_cnn_does_not_depend_on_the_callers_threads(tmp_path, monkeypatch):
    from faultlab.models import pretrained_digits_cnn, pretrained_digits_path

    monkeypatch.setenv("FAULTLAB_CACHE", str(tmp_path))
    before = torch.get_num_threads()
    weights = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            weights.append(pretrained_digits_cnn(retrain=True).state_dict())
            assert torch.get_num_threads() == threads  # the caller's setting is given back
    finally:
        torch.set_num_threads(before)
    assert pretrained_digits_path().parent == tmp_path and pretrained_digits_path().exists()
    for name, w in weights[0].items():
        assert torch.equal(w, weights[1][name]), name
