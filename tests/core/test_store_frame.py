"""CampaignStore.results_frame reads results in chunks: the same table whatever the chunk size."""
from __future__ import annotations

import numpy as np
import pandas as pd

from faultlab import store as store_mod
from faultlab.faults import Fault, FaultList
from faultlab.outcomes import FaultResult
from faultlab.store import CampaignStore


def _filled(tmp_path) -> None:
    faults = [Fault(i, ("conv1", "fc1", "fc2")[i % 3], (i % 5, 1), (i % 32,), "weight" if i % 2 else "activation") for i in range(23)]
    rng = np.random.default_rng(0)
    results = []
    for f in faults:
        codes = rng.integers(0, 5, 7).astype(np.uint8)
        counts = np.bincount(codes, minlength=5)
        results.append(FaultResult(f.id, 7, int(counts[0]), int(counts[1]), int(counts[2] + counts[3]), int(counts[3]), int(counts[4]), 3, 4, 5, 6, codes=codes, engine="fast"))
    with CampaignStore(tmp_path) as st:
        st.init_campaign({"model": "m"}, {}, FaultList.of(faults, "test"))
        st.add_results(results[::-1])  # stored out of id order; read back in id order


def test_chunked_frame_equals_one_shot_and_shares_names(tmp_path, monkeypatch):
    _filled(tmp_path)
    with CampaignStore.open_existing(tmp_path) as st:
        monkeypatch.setattr(store_mod, "_FRAME_CHUNK", 10**6)
        whole = st.results_frame(with_codes=True)
        monkeypatch.setattr(store_mod, "_FRAME_CHUNK", 4)  # 23 rows: six chunks, the last one short
        chunked = st.results_frame(with_codes=True)
        empty = CampaignStore(tmp_path / "empty")
        try:
            nothing = empty.results_frame()
        finally:
            empty.close()
    assert list(whole.fault_id) == list(range(23))
    pd.testing.assert_frame_equal(whole.drop(columns="codes"), chunked.drop(columns="codes"))
    assert all(np.array_equal(a, b) for a, b in zip(whole.codes, chunked.codes))
    assert (chunked.layer == "fc1").sum() == 8
    assert nothing.empty and "fault_id" in nothing.columns


def test_layer_sums_in_sql_equal_the_table_from_the_whole_frame(tmp_path):
    """The per-layer table a long campaign prints from SQL sums is the one pandas makes from every row."""
    from faultlab.report import layer_table

    _filled(tmp_path)
    with CampaignStore.open_existing(tmp_path) as st:
        from_rows = layer_table(st.results_frame())
        from_sums = layer_table(st.layer_sums())
        with CampaignStore(tmp_path / "empty") as empty:
            assert layer_table(empty.layer_sums()).empty
    assert list(zip(from_sums.site, from_sums.layer)) == [("activation", "conv1"), ("weight", "fc1"), ("activation", "fc2"), ("weight", "conv1"), ("activation", "fc1"), ("weight", "fc2")]
    pd.testing.assert_frame_equal(from_rows, from_sums, check_dtype=False)


def test_report_csv_written_from_chunks_equals_the_one_shot_file(tmp_path):
    from faultlab.report import write_report_csv
    from faultlab.report.tables import REPORT_COLUMNS

    _filled(tmp_path)
    with CampaignStore.open_existing(tmp_path) as st:
        one = write_report_csv(st.results_frame(), tmp_path / "one.csv", "top-1").read_bytes()
        chunked = write_report_csv(st.result_chunks(chunk=5), tmp_path / "chunked.csv", "top-1").read_bytes()
        none = write_report_csv(iter(()), tmp_path / "none.csv", "top-1").read_text()
    assert one == chunked and one.count(b"\n") == 24
    assert none.strip() == ",".join(REPORT_COLUMNS)  # no results: the header alone


def test_worker_results_arrive_compressed_and_the_store_keeps_codes_either_way(tmp_path):
    """Engines leave ``codes_z`` empty; a campaign worker compresses in its own process; the store reads back the codes."""
    import dataclasses
    import zlib

    from faultlab.datasets import load_dataset
    from faultlab.engine.campaign import CampaignWorker
    from faultlab.models import pretrained_digits_cnn
    from faultlab.targets.torch import TorchTarget

    ds = load_dataset("digits", split="test")
    x, y = ds.x[:40], ds.y[:40]
    faults = [Fault(i, "fc1", (i, 3 * i), (30 - i,), "weight") for i in range(4)]
    work = CampaignWorker(lambda: TorchTarget(pretrained_digits_cnn(), example_input=x[:1]), x, y, engine="fast")()
    sent = work(faults)
    assert all(r.codes_z is not None and zlib.decompress(r.codes_z) == r.codes.tobytes() for r in sent)
    plain = [dataclasses.replace(r, codes_z=None) for r in sent]
    assert all(r.codes_z is None for r in plain)
    with CampaignStore(tmp_path) as st:
        st.init_campaign({"model": "m"}, {}, FaultList.of(faults, "test"))
        st.add_results(sent[:2])
        st.add_results(plain[2:])  # e.g. from an engine run outside a worker
        back = st.results_frame(with_codes=True)
    assert [list(c) for c in back.codes] == [list(r.codes) for r in sent]
    assert (back.masked + back.non_critical + back.sdc1 + back.due == 40).all()
