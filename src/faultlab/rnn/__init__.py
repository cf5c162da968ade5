"""Model-based analysis of recurrent networks, after RNNRepair (issue #7).

A trained LSTM/GRU is profiled (hidden state and prediction at every step), its hidden
states are abstracted into discrete states (PCA, then a diagonal GMM; state 0 is a
virtual initial state) and the resulting state traces explain its behaviour: state
stability, trace features and a linear surrogate (SimNN), a Markov chain with coverage,
nearest-trace fault localisation and a diff between a clean and a faulty model.

Typical use::

    from faultlab.rnn import load_model, profile_model, Abstraction, state_stability
    model = load_model("gru.pt")
    train = profile_model(model, x_train)               # Profile(hidden, step_pred, step_proba)
    abst = Abstraction(pca_dims=10, components=20, seed=0).fit(train.hidden)
    tr = abst.traces(train.hidden)                      # (N, T+1) ints, column 0 is state 0
    report = state_stability(tr, train.step_pred, n_states=abst.n_states)

Public names are imported lazily so ``import faultlab.rnn`` does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # subjects: train / save / load the analysed models
    "RecurrentClassifier": "faultlab.rnn._torch_models",
    "train_subject": "faultlab.rnn.subjects",
    "save_model": "faultlab.rnn.subjects",
    "load_model": "faultlab.rnn.subjects",
    "is_torch_model": "faultlab.rnn.subjects",
    # profiling
    "Profile": "faultlab.rnn.profile",
    "ProfileFunction": "faultlab.rnn.profile",
    "profile_model": "faultlab.rnn.profile",
    # abstraction
    "Abstraction": "faultlab.rnn.abstraction",
    "SweepRow": "faultlab.rnn.abstraction",
    "sweep_components": "faultlab.rnn.abstraction",
    "components_range": "faultlab.rnn.abstraction",
    "write_sweep_csv": "faultlab.rnn.abstraction",
    "read_sweep_csv": "faultlab.rnn.abstraction",
    # stability
    "Stability": "faultlab.rnn.stability",
    "state_label_counts": "faultlab.rnn.stability",
    "state_stability": "faultlab.rnn.stability",
    "stability_from_counts": "faultlab.rnn.stability",
    "purity": "faultlab.rnn.stability",
    # trace features and the SimNN surrogate
    "FEATURE_SETS": "faultlab.rnn.features",
    "label_distribution": "faultlab.rnn.features",
    "trace_features": "faultlab.rnn.features",
    "SimNN": "faultlab.rnn.features",
    "SimNNScore": "faultlab.rnn.features",
    "evaluate_simnn": "faultlab.rnn.features",
    "compare_feature_sets": "faultlab.rnn.features",
    # Markov chain and coverage
    "MarkovChain": "faultlab.rnn.markov",
    "Coverage": "faultlab.rnn.markov",
    "transition_counts": "faultlab.rnn.markov",
    "state_visits": "faultlab.rnn.markov",
    "markov_chain": "faultlab.rnn.markov",
    "coverage": "faultlab.rnn.markov",
    # fault localisation
    "normalise_traces": "faultlab.rnn.localize",
    "nearest_traces": "faultlab.rnn.localize",
    "localisation_curves": "faultlab.rnn.localize",
    "plot_localisation": "faultlab.rnn.localize",
    "neighbour_table": "faultlab.rnn.localize",
    # clean vs faulty model
    "ModelDiff": "faultlab.rnn.diff",
    "diff_traces": "faultlab.rnn.diff",
    "parse_fault": "faultlab.rnn.diff",
    "WeightBitFlip": "faultlab.rnn.diff",
    "flipped_bit": "faultlab.rnn.diff",
    # shared analysis bundle (model + data + abstraction) used by the CLI
    "Analysis": "faultlab.rnn.analysis",
    "build_analysis": "faultlab.rnn.analysis",
    "load_split_data": "faultlab.rnn.analysis",
    "abstraction_file": "faultlab.rnn.analysis",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'faultlab.rnn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
