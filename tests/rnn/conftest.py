"""Session fixtures for the RNN analysis tests: one tiny GRU on digits-seq, trained once."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from faultlab.datasets import Dataset, load_dataset

sys.path.insert(0, str(Path(__file__).parent))  # rnn_cli_helpers, whatever pytest's import mode


@dataclass(frozen=True)
class Subject:
    model: object
    path: Path
    train: Dataset
    test: Dataset
    train_profile: object
    test_profile: object


@pytest.fixture(scope="session")
def gru_subject(tmp_path_factory) -> Subject:
    from faultlab.rnn import profile_model, save_model, train_subject

    train = load_dataset("digits-seq", "train")
    test = load_dataset("digits-seq", "test")
    model = train_subject(train, arch="gru", framework="torch", hidden_size=16, epochs=8, seed=0)
    path = save_model(model, tmp_path_factory.mktemp("subject") / "gru")
    return Subject(model, path, train, test, profile_model(model, train.x), profile_model(model, test.x))


@pytest.fixture(scope="session")
def gru_abstraction(gru_subject):
    from faultlab.rnn import Abstraction

    return Abstraction(pca_dims=8, components=20, seed=0).fit(gru_subject.train_profile.hidden)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
