"""Run campaigns on Keras model files and print per-fault outcome counts as JSON (one line).

Used by the tests under either Keras backend (fixed by KERAS_BACKEND before Keras is imported):
    KERAS_BACKEND=tensorflow python tf_campaign.py MODEL FAULTS.csv OUT_DIR DATA [MODEL FAULTS.csv OUT_DIR DATA ...]
"""
from __future__ import annotations

import json
import sys

import numpy as np


def campaign_counts(model_path: str, faults_csv: str, out_dir: str, data: str = "digits", n_inputs: int = 40) -> dict:
    from faultlab.datasets import load_dataset
    from faultlab.engine.campaign import Campaign
    from faultlab.faults import FaultList
    from faultlab.targets.keras import KerasTarget, load_keras_model

    model = load_keras_model(model_path)
    before = [np.array(v.numpy(), copy=True) for v in model.weights]
    target = KerasTarget(model)
    ds = load_dataset(data, "test").head(n_inputs)
    summary = Campaign(target=target, data=ds, faults=FaultList.from_csv(faults_csv), out=out_dir, chunk_size=16).run()
    restored = all(np.array_equal(v.numpy().view(np.int32), b.view(np.int32)) for v, b in zip(model.weights, before))
    cols = ["fault_id", "n", "masked", "non_critical", "sdc1", "sdc5", "due"]
    rows = summary.results[cols].sort_values("fault_id").astype(int).values.tolist()
    import keras

    return {"backend": keras.backend.backend(), "restored": restored, "clean_top1": summary.clean_top1, "rows": rows}


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps([campaign_counts(*args[i : i + 4]) for i in range(0, len(args), 4)]))
