"""Streaming scoring: rows/s, effective GB/s read and peak RSS for N = 10k, 100k, 1M pool rows (synthetic fp16
features, d = 8192, one checkpoint, three targets of 57, 27 and 1 subtasks — MMLU, BBH and CSQA-shaped).

Each N is scored in a fresh child process, so its peak RSS (VmHWM) is the scoring's alone. The machine's
memory bandwidth is measured the same way (a large numpy copy) for reference. Writing the 1M-row array takes 16 GB
of disk and a minute or two.

    python benchmarks/scoring.py [--sizes 10000 100000 1000000] [--workdir /tmp/less_hf_scoring]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM = 8192
SUBTASKS = {"mmlu": 57, "bbh": 27, "csqa": 1}


def make_store(root: Path, n: int, seed: int = 0) -> None:
    """A complete datastore on disk with random features (written in chunks, never whole in memory)."""
    from less_hf.datastore.manifest import CheckpointEntry, Manifest, write_json_atomic

    rng = np.random.default_rng(seed)
    (root / "pool" / "checkpoint-1").mkdir(parents=True)
    array = np.lib.format.open_memmap(
        root / "pool" / "checkpoint-1" / f"d{DIM}.npy", mode="w+", dtype=np.float16, shape=(n, DIM)
    )
    for lo in range(0, n, 32768):
        hi = min(n, lo + 32768)
        array[lo:hi] = rng.standard_normal((hi - lo, DIM), dtype=np.float32)
    array.flush()
    del array
    np.save(root / "valid.npy", np.ones(n, dtype=bool))
    write_json_atomic(root / "row_ids.json", [])
    Manifest(
        base_model="synthetic",
        checkpoints=[CheckpointEntry("checkpoint-1", "", 1, 1.0, 1e-5)],
        transform="adam",
        projectors=[{"kind": "sparse", "dim": DIM, "seed": 0}],
        storage_dtype="float16",
        max_length=0,
        truncation="right",
        n_rows=n,
        dataset_fingerprint="synthetic",
        status="complete",
    ).save(root)
    for name, subtasks in SUBTASKS.items():
        directory = root / "targets" / name
        (directory / "checkpoint-1").mkdir(parents=True)
        rows = subtasks * 3
        np.save(directory / "checkpoint-1" / f"d{DIM}.npy", rng.standard_normal((rows, DIM)).astype(np.float16))
        labels = [f"{name}-{i % subtasks}" for i in range(rows)]
        write_json_atomic(
            directory / "meta.json", {"name": name, "subtasks": labels, "ids": [], "valid": [True] * rows}
        )


def child_score(root: str) -> None:
    from less_hf.datastore import Datastore, load_target_features
    from less_hf.scoring import score_datastore

    store = Datastore.open(root)
    targets = [load_target_features(Path(root) / "targets" / name) for name in SUBTASKS]
    start = time.perf_counter()
    scores = score_datastore(store, targets, block_rows=16384)
    seconds = time.perf_counter() - start
    assert all(np.isfinite(s).all() for s in scores.values())
    print(json.dumps({"seconds": seconds, "max_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries the parent's peak into a forked child."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_bandwidth() -> None:
    a = np.ones(1 << 28, dtype=np.uint8)  # 256 MiB
    b = np.empty_like(a)
    best = min(_timed_copy(a, b) for _ in range(5))
    print(json.dumps({"gb_per_s": 2 * a.nbytes / best / 1e9}))  # read + write


def _timed_copy(a, b) -> float:
    start = time.perf_counter()
    np.copyto(b, a)
    return time.perf_counter() - start


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--workdir", default="/tmp/less_hf_scoring")
    parser.add_argument("--child-score", help=argparse.SUPPRESS)
    parser.add_argument("--child-bandwidth", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_score:
        return child_score(args.child_score)
    if args.child_bandwidth:
        return child_bandwidth()
    bandwidth = run_child("--child-bandwidth")["gb_per_s"]
    print(f"memory bandwidth (numpy copy, read+write): {bandwidth:.1f} GB/s\n")
    print("| N rows | features on disk | seconds | rows/s | GB/s read | % of bandwidth | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        root = Path(args.workdir) / f"n{n}"
        shutil.rmtree(root, ignore_errors=True)
        make_store(root, n)
        result = run_child("--child-score", str(root))
        gigabytes = n * DIM * 2 / 1e9
        rate = gigabytes / result["seconds"]
        print(
            f"| {n:,} | {gigabytes:.2f} GB | {result['seconds']:.1f} | {n / result['seconds']:,.0f} | {rate:.2f} | "
            f"{100 * rate / bandwidth:.0f}% | {result['max_rss_mb']:.0f} MB |",
            flush=True,
        )
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
