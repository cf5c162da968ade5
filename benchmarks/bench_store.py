"""How many workers can one driver feed? Store throughput vs. a campaign worker's rate.

Measures, on this machine:

1. **store**: sustained result rows per second written into SQLite through
   ``CampaignStore.add_results`` in batches (one transaction per batch, as the campaign
   driver does), for several numbers of inputs per fault (the per-input ``codes`` blob
   grows with it), split into time spent compressing codes and time in SQLite;
2. **driver**: the other per-row cost on the driver, unpickling results as they arrive
   from a worker (what Ray or a process pool hands back);
3. **worker**: faults per second of one campaign worker (exact engine, one torch thread)
   for the demo CNN on the bundled digits test split;

then how many such workers one driver keeps busy: ``driver rows/s / worker rows/s``.

Run:  python benchmarks/bench_store.py            (2-3 minutes on 2 cores)
      python benchmarks/bench_store.py --json out.json --rows 200000
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from faultlab.faults import Fault, FaultList
from faultlab.outcomes import FaultResult
from faultlab.store import CampaignStore


def synthetic_results(n_rows: int, n_inputs: int, *, start: int = 0, seed: int = 0) -> list[FaultResult]:
    """Results shaped like a real campaign's: ~70 % of faults fully masked, the rest with a few SDCs."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_rows):
        codes = np.zeros(n_inputs, np.uint8)
        if rng.random() < 0.3:
            hit = rng.random(n_inputs) < rng.uniform(0.01, 0.5)
            codes[hit] = rng.integers(1, 5, hit.sum())
        counts = np.bincount(codes, minlength=5)
        out.append(FaultResult(
            fault_id=start + i, n=n_inputs, masked=int(counts[0]), non_critical=int(counts[1]),
            sdc1=int(counts[2] + counts[3]), sdc5=int(counts[3]), due=int(counts[4]),
            top1_correct=int(n_inputs - counts[2:].sum()), top5_correct=int(n_inputs - counts[3:].sum()),
            top1_robust=int(n_inputs - counts[2:].sum()), top5_robust=int(n_inputs - counts[3:].sum()), codes=codes,
        ))
    return out


class WorkerCompressedStore(CampaignStore):
    """The change proposed for store.py: ``codes`` arrive already zlib-compressed (bytes) from the worker.

    Compressing a few hundred bytes costs ~10-35 us per row (zlib's per-call setup dominates),
    which caps a single driver; done in the workers it scales with them and the driver only inserts.
    """

    def add_results(self, results):
        if not results:
            return 0
        now = time.time()
        rows = [(r.fault_id, r.n, r.masked, r.non_critical, r.sdc1, r.sdc5, r.due, r.top1_correct, r.top5_correct,
                 r.top1_robust, r.top5_robust, r.engine, r.codes, now) for r in results]
        with self._tx():
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO results(fault_id, n, masked, non_critical, sdc1, sdc5, due, top1_correct, top5_correct,"
                " top1_robust, top5_robust, engine, codes, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            return self._conn.total_changes - before


def worker_compressed(results: list[FaultResult]) -> list[FaultResult]:
    """What a worker would send under the proposal: the same results with codes as zlib bytes."""
    return [replace(r, codes=zlib.compress(np.ascontiguousarray(r.codes, dtype=np.uint8).tobytes(), 1)) for r in results]


STORES = {"current": CampaignStore, "worker-compressed": WorkerCompressedStore}


def bench_store(n_rows: int, n_inputs: int, batch: int, directory: Path, variant: str = "current") -> dict:
    """Rows/s through ``add_results`` (batches of ``batch``), plus the share spent compressing codes."""
    faults = FaultList.of([Fault(i, "conv1", (0, 0, 0, 0), (30,), "weight") for i in range(n_rows)], "bench")
    results = synthetic_results(n_rows, n_inputs)
    if variant == "worker-compressed":
        results = worker_compressed(results)
    with STORES[variant](directory) as store:
        store.init_campaign({"bench": n_inputs}, {}, faults)
        t0 = time.perf_counter()
        for i in range(0, n_rows, batch):
            store.add_results(results[i : i + batch])
        seconds = time.perf_counter() - t0
        assert store.n_results() == n_rows
    t0 = time.perf_counter()
    for r in results:
        if variant == "current":
            zlib.compress(np.ascontiguousarray(r.codes, dtype=np.uint8).tobytes(), 1)
    compress = time.perf_counter() - t0
    size = (directory / "campaign.sqlite").stat().st_size
    return {"variant": variant, "inputs_per_fault": n_inputs, "batch": batch, "rows": n_rows, "rows_per_s": n_rows / seconds,
            "compress_share": compress / seconds, "db_bytes_per_row": size / n_rows}


def bench_unpickle(n_rows: int, n_inputs: int, chunk: int, variant: str = "current") -> float:
    """Rows/s the driver unpickles when results arrive in chunks of ``chunk`` faults."""
    chunks = (synthetic_results(chunk, n_inputs, start=i) for i in range(0, n_rows, chunk))
    blobs = [pickle.dumps(worker_compressed(c) if variant == "worker-compressed" else c, protocol=5) for c in chunks]
    t0 = time.perf_counter()
    for b in blobs:
        pickle.loads(b)
    return n_rows / (time.perf_counter() - t0)


def bench_worker(n_faults: int, chunk: int, *, resnet_inputs: int = 0) -> dict:
    """Faults/s of one campaign worker (exact engine, 1 torch thread): the demo CNN on the digits
    test split, or (``resnet_inputs``) ResNet-20 on that many CIFAR-shaped random images."""
    import torch

    from faultlab.datasets import load_dataset
    from faultlab.engine.campaign import CampaignWorker
    from faultlab.faults import renumber
    from faultlab.models import pretrained_digits_cnn, pretrained_digits_path, resnet20
    from faultlab.planning import RandomPlanner
    from faultlab.targets import TargetSpec, make_target

    torch.set_num_threads(1)
    if resnet_inputs:
        name, model, spec = "ResNet-20 (random weights)", resnet20().eval(), TargetSpec("faultlab.models:resnet20")
        rng = np.random.default_rng(0)
        x = rng.random((resnet_inputs, 3, 32, 32), dtype=np.float32)
        y = rng.integers(0, 10, resnet_inputs)
    else:
        name, model = "DigitsCNN (demo)", pretrained_digits_cnn(seed=0)
        spec = TargetSpec("faultlab.models:digits_cnn", str(pretrained_digits_path()))
        data = load_dataset("digits", split="test")
        x, y = np.array(data.x, order="C", copy=True), data.y
    target = make_target(model)
    target.trace(x[:1])
    w = RandomPlanner(n=max(1, n_faults // 2), site_kind="weight").plan(target.sites(), seed=0).faults
    a = RandomPlanner(n=max(1, n_faults // 2), site_kind="activation").plan(target.sites(), seed=1).faults
    faults = renumber(list(w) + list(a))
    factory = CampaignWorker(spec, x, y, "exact", 512)
    t0 = time.perf_counter()
    work = factory()
    build = time.perf_counter() - t0
    work(faults[:chunk])  # warm-up
    t0 = time.perf_counter()
    done = 0
    for i in range(0, len(faults), chunk):
        done += len(work(faults[i : i + chunk]))
    seconds = time.perf_counter() - t0
    return {"model": name, "inputs_per_fault": len(x), "faults": done, "faults_per_s": done / seconds,
            "pairs_per_s": done * len(x) / seconds, "build_s": build}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000, help="result rows per store measurement")
    ap.add_argument("--inputs", type=int, nargs="+", default=[1, 450, 10_000], help="inputs per fault (codes length)")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 1024], help="rows per add_results call")
    ap.add_argument("--worker-faults", type=int, default=400)
    ap.add_argument("--resnet-inputs", type=int, default=0, help="also time a ResNet-20 worker on this many 3x32x32 inputs")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)

    report: dict = {"cpu": os.cpu_count(), "python": sys.version.split()[0], "store": [], "unpickle": []}
    with tempfile.TemporaryDirectory(prefix="faultlab-bench-") as tmp:
        for n_inputs in args.inputs:
            rows = max(2_000, min(args.rows, int(args.rows * 450 / max(n_inputs, 450))))  # big codes: fewer rows
            for variant, batch in [(v, b) for v in STORES for b in args.batches]:
                r = bench_store(rows, n_inputs, batch, Path(tmp) / f"{variant}_{n_inputs}_{batch}", variant)
                report["store"].append(r)
                print(f"store   {variant:<17} inputs/fault={n_inputs:>6}  batch={batch:>5}  {r['rows_per_s']:>10,.0f} rows/s"
                      f"  (codes compression {100 * r['compress_share']:.0f} % of it, {r['db_bytes_per_row']:.0f} B/row on disk)")
            for variant in STORES:
                u = bench_unpickle(rows, n_inputs, 64, variant)
                report["unpickle"].append({"variant": variant, "inputs_per_fault": n_inputs, "rows_per_s": u})
                print(f"unpickle {variant:<17} inputs/fault={n_inputs:>6}  chunk=   64  {u:>10,.0f} rows/s")
    w = bench_worker(args.worker_faults, 64)
    report["worker"] = w
    print(f"worker  {w['model']}, {w['inputs_per_fault']} inputs/fault: {w['faults_per_s']:,.1f} faults/s "
          f"({w['pairs_per_s']:,.0f} fault x input pairs/s), built in {w['build_s']:.2f} s")
    if args.resnet_inputs:
        r = bench_worker(8, 4, resnet_inputs=args.resnet_inputs)
        report["worker_resnet20"] = r
        print(f"worker  {r['model']}, {r['inputs_per_fault']} inputs/fault: {r['faults_per_s']:,.2f} faults/s "
              f"({r['pairs_per_s']:,.0f} fault x input pairs/s), built in {r['build_s']:.2f} s")

    n = w["inputs_per_fault"]
    report["driver"] = {}
    for variant in STORES:
        store_rate = [r["rows_per_s"] for r in report["store"]
                      if (r["variant"], r["inputs_per_fault"], r["batch"]) == (variant, n, min(args.batches))]
        unpickle = [u["rows_per_s"] for u in report["unpickle"] if (u["variant"], u["inputs_per_fault"]) == (variant, n)]
        if not store_rate or not unpickle:
            continue
        driver = 1 / (1 / store_rate[0] + 1 / unpickle[0])
        report["driver"][variant] = {"rows_per_s": driver, "workers_per_driver": driver / w["faults_per_s"]}
        print(f"driver  {variant:<17} stores + unpickles {driver:,.0f} rows/s at {n} inputs/fault in chunks of "
              f"{min(args.batches)} -> feeds about {driver / w['faults_per_s']:,.0f} such workers")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
