"""Streaming scoring: rows/s, effective GB/s read and peak RSS for N pool rows (synthetic features stored in fp16 and
packed 1-bit, d = 8192, one checkpoint), as a share of the roofline min(measured memory bandwidth, measured fp32 GEMM
speed × arithmetic intensity).

Two target sets: MMLU/BBH/CSQA-shaped (57 + 27 + 1 = 85 subtask directions, the demo's) and a single direction (the
memory-bound case). Each (N, targets) is scored in a fresh child process, so its peak RSS (VmHWM) is the scoring's
alone. The N-row array is written once per N (16 GB of disk at 1M rows) and deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from .common import Section, peak_rss_mb, run_child

DIM = 8192
TARGET_SETS = {"85": {"mmlu": 57, "bbh": 27, "csqa": 1}, "1": {"csqa": 1}}


def make_store(root: Path, n: int, seed: int = 0, storage: str = "float16") -> None:
    """A complete datastore on disk with random features in ``storage`` (written in chunks, never whole in memory),
    its files' checksums recorded in the manifest as a build records them."""
    from less_hf.datastore.manifest import CheckpointEntry, Manifest, write_json_atomic
    from less_hf.datastore.packed import PACKED_BITS, scales_file_name
    from less_hf.datastore.store import file_checksum, stored_layout

    rng = np.random.default_rng(seed)
    folder = root / "pool" / "checkpoint-1"
    folder.mkdir(parents=True)
    dtype, columns = stored_layout(storage, DIM)
    array = np.lib.format.open_memmap(folder / f"d{DIM}.npy", mode="w+", dtype=dtype, shape=(n, columns))
    bits = PACKED_BITS.get(storage)
    scales = np.empty((n, 1), dtype=np.float32)
    for lo in range(0, n, 32768):
        hi = min(n, lo + 32768)
        if bits:  # random codes: decoding and scoring cost the same whatever the values
            array[lo:hi] = rng.integers(0, 256, size=(hi - lo, columns), dtype=np.uint8)
            scales[lo:hi] = rng.uniform(0.5, 1.5, size=(hi - lo, 1))
        else:
            array[lo:hi] = rng.standard_normal((hi - lo, DIM), dtype=np.float32)
    array.flush()
    del array
    names = [f"d{DIM}.npy"]
    if bits:
        np.save(folder / scales_file_name(DIM), scales)
        names.append(scales_file_name(DIM))
    np.save(root / "valid.npy", np.ones(n, dtype=bool))
    write_json_atomic(root / "row_ids.json", [])
    Manifest(
        base_model="synthetic",
        checkpoints=[CheckpointEntry("checkpoint-1", "", 1, 1.0, 1e-5)],
        transform="adam",
        projectors=[{"kind": "sparse", "dim": DIM, "seed": 0}],
        storage_dtype=storage,
        max_length=0,
        truncation="right",
        n_rows=n,
        dataset_fingerprint="synthetic",
        files={f"pool/checkpoint-1/{name}": file_checksum(folder / name) for name in names},
        status="complete",
    ).save(root)
    for name, subtasks in TARGET_SETS["85"].items():
        directory = root / "targets" / name
        (directory / "checkpoint-1").mkdir(parents=True)
        rows = subtasks * 3
        np.save(directory / "checkpoint-1" / f"d{DIM}.npy", rng.standard_normal((rows, DIM)).astype(np.float16))
        labels = [f"{name}-{i % subtasks}" for i in range(rows)]
        write_json_atomic(
            directory / "meta.json", {"name": name, "subtasks": labels, "ids": [], "valid": [True] * rows}
        )


def child_score(root: str, targets: str, block_rows: int) -> None:
    """Score twice with one :class:`Datastore`: the first pass checks every file's CRC-32 as it streams, the second
    reads files this object has already verified (a second ``select`` in one process, or after ``verify()``)."""
    from less_hf.datastore import Datastore, load_target_features
    from less_hf.scoring import score_datastore

    store = Datastore.open(root)
    features = [load_target_features(Path(root) / "targets" / name) for name in TARGET_SETS[targets]]
    times = []
    for _ in range(2):
        start = time.perf_counter()
        scores = score_datastore(store, features, block_rows=block_rows)
        times.append(time.perf_counter() - start)
    assert all(np.isfinite(s).all() for s in scores.values())
    print(json.dumps({"first_seconds": times[0], "seconds": times[1], "max_rss_mb": peak_rss_mb()}))


def roofline_gb_s(bandwidth: float, gflops: float, directions: int, row_bytes: int) -> float:
    """min(memory bandwidth, GEMM throughput ÷ FLOP per stored byte) in GB/s of stored features: the rate at which
    the matmul alone could consume the rows, or the memory system deliver them."""
    intensity = 2 * DIM * directions / row_bytes  # FLOP per byte read
    return min(bandwidth, gflops / intensity)


def run(
    sizes: list[int],
    workdir: Path,
    bandwidth: float,
    gflops: float,
    block_rows: int = 65536,
    storages: tuple[str, ...] = ("float16", "int1"),
) -> Section:
    from less_hf.datastore.store import row_bytes

    section = Section(
        "3. Scoring: streaming from disk",
        [
            "N rows",
            "storage",
            "directions",
            "features",
            "1st pass (+CRC)",
            "seconds",
            "rows/s",
            "GB/s read",
            "roofline GB/s",
            "% of roofline",
            "peak RSS",
        ],
        data={"bandwidth_gb_s": bandwidth, "gemm_gflops": gflops, "results": []},
    )
    for n in sizes:
        for storage in storages:
            root = workdir / f"scoring_n{n}_{storage}"
            shutil.rmtree(root, ignore_errors=True)
            make_store(root, n, storage=storage)
            per_row = row_bytes(storage, [DIM])
            for targets in TARGET_SETS:
                result = run_child("scoring", "--child", str(root), targets, str(block_rows))
                gigabytes = n * per_row / 1e9
                rate = gigabytes / result["seconds"]
                roof = roofline_gb_s(bandwidth, gflops, int(targets), per_row)
                section.rows.append(
                    [
                        f"{n:,}",
                        storage,
                        targets,
                        f"{gigabytes:.2f} GB",
                        f"{result['first_seconds']:.2f} s",
                        f"{result['seconds']:.2f} s",
                        f"{n / result['seconds']:,.0f}",
                        f"{rate:.2f}",
                        f"{roof:.2f}",
                        f"{100 * rate / roof:.0f}%",
                        f"{result['max_rss_mb']:.0f} MB",
                    ]
                )
                section.data["results"].append(
                    {"n": n, "storage": storage, "directions": int(targets), **result, "gb_s": rate, "roofline": roof}
                )
            shutil.rmtree(root, ignore_errors=True)
    flops_row = 2 * DIM * 85
    cap_rows = gflops * 1e9 / flops_row
    section.notes.append(
        f"Roofline = min(memory bandwidth {bandwidth:.1f} GB/s (numpy copy, read+write), fp32 GEMM {gflops:.0f} "
        f"GFLOP/s ÷ FLOP per stored byte). At 85 directions a row costs {flops_row / 1e6:.2f} MFLOP, so the GEMM caps "
        f"scoring at ≈ {cap_rows:,.0f} rows/s whatever the storage ({cap_rows * DIM * 2 / 1e9:.2f} GB/s of fp16, "
        f"{cap_rows * row_bytes('int1', [DIM]) / 1e9:.3f} GB/s of 1-bit rows); at 1 direction fp16 is memory-bound. "
        "Each case runs in a fresh process that scores twice with one Datastore: '1st pass' also checks every file's "
        "CRC-32 as it streams (once per Datastore), 'seconds' is the second pass, and the rates and % of roofline are "
        "the second pass's. Synthetic features, d = 8192, one checkpoint, the files in the page cache."
    )
    return section


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, metavar=("ROOT", "TARGETS", "BLOCK_ROWS"))
    args = parser.parse_args()
    child_score(args.child[0], args.child[1], int(args.child[2]))
