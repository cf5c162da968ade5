"""Benchmark: a campaign's peak memory does not grow with its number of faults (the fast engine's bounded memory).

Run by hand (not a test):  python benchmarks/bench_memory.py [--faults 1000 100000] [--max-memory 256MiB]

For each fault count it writes a fault list (``faultlab faults generate``, half weight and half
activation faults on the demo CNN) and runs it as a user would, ``faultlab run --engine fast`` over
the 450 digits test images, in a fresh process, then reports that process's peak resident memory
(``ru_maxrss``) and its wall time. Faults stream through the engine in chunks and their results go
to SQLite as they come, so the engine's share stays flat while the fault count grows a hundredfold;
what grows is the per-fault bookkeeping (the fault list, the summary table). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faultlab.models import pretrained_digits_cnn, pretrained_digits_path

FAULTLAB = [sys.executable, "-m", "faultlab"]
MODEL = "faultlab.models:digits_cnn"


def peak_of(cmd: list[str]) -> tuple[float, float]:
    """(peak resident MiB, wall seconds) of one child process running ``cmd``."""
    t0 = time.perf_counter()
    # a child of a child: RUSAGE_CHILDREN keeps the largest peak of the children waited for so far,
    # so each measurement runs under its own intermediate process
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1]) / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faults", type=int, nargs="+", default=[1000, 100_000], help="fault counts to compare")
    ap.add_argument("--max-memory", default="256MiB", help="the fast engine's --max-memory")
    args = ap.parse_args()
    pretrained_digits_cnn()  # trained and cached once, outside the measured processes
    weights = str(pretrained_digits_path())
    env_note = f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.faults:
            d = Path(tmp) / f"n{n}"
            d.mkdir()
            lists = []
            for site, seed in (("weight", 1), ("activation", 2)):
                f = d / f"{site}.csv"
                subprocess.run([*FAULTLAB, "faults", "generate", "--model", MODEL, "--weights", weights, "--n", str(n // 2),
                                "--site", site, "--seed", str(seed), "-o", str(f)], check=True, capture_output=True)
                lists.append(f)
            for site, f in zip(("weight", "activation"), lists):
                out = d / f"run-{site}"
                mib, secs = peak_of([*FAULTLAB, "run", "--model", MODEL, "--weights", weights, "--data", "digits", "--faults", str(f),
                                     "--out", str(out), "--engine", "fast", "--max-memory", args.max_memory])
                rows.append((n // 2, site, mib, secs))
                print(f"  {n // 2} {site} faults: peak {mib:.0f} MiB, {secs:.1f} s", file=sys.stderr, flush=True)
    print(f"faultlab run --engine fast --max-memory {args.max_memory}, demo CNN, 450 digits test inputs; {env_note}\n")
    print("| faults | site | peak resident memory (MiB) | wall time (s, process start included) |")
    print("|---:|---|---:|---:|")
    for n, site, mib, secs in rows:
        print(f"| {n:,} | {site} | {mib:,.0f} | {secs:.1f} |")


if __name__ == "__main__":
    main()
