"""Datastore build with 1 vs 2 processes on the same rows (CPU, DDP over gloo via ``accelerate launch``).

Fair on a 2-core machine: one process with 2 torch threads vs two processes with 1 thread each. The time is taken
inside the build (rank 0, from before ``build_datastore`` until every rank is done, model load included) and for the
whole launch (process start-up and imports too). The 2-process datastore is compared with the 1-process one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import Section  # noqa: E402


def launch(processes: int, warmup_dir: Path, rows: int, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, 2 // processes)), "HF_HUB_OFFLINE": "1"}
    child = [str(Path(__file__).resolve()), "--child", str(warmup_dir), str(rows), str(out)]
    if processes == 1:
        cmd = [sys.executable, *child]
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), *child,
        ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"scaling run with {processes} process(es) failed:\n{result.stderr[-3000:]}")
    line = [x for x in result.stdout.splitlines() if x.startswith("{")][-1]
    return {**json.loads(line), "wall_s": wall}


def child(warmup_dir: str, rows: int, out: str) -> None:
    import torch

    from less_hf import GradientConfig, ProjectionConfig
    from less_hf.assets import load_pool
    from less_hf.datastore import build_datastore
    from less_hf.datastore.distributed import current_shard

    pool = load_pool(max_rows=400, seed=0).select(range(100, 100 + rows))
    shard = current_shard()
    shard.barrier()
    start = time.perf_counter()
    store = build_datastore(
        warmup_dir, pool, out, GradientConfig(max_length=128, batch_size=16, device="cpu"), ProjectionConfig()
    )
    seconds = time.perf_counter() - start
    if shard.is_main:
        ckpts = len(store.manifest.checkpoints)
        print(json.dumps({"build_s": seconds, "checkpoints": ckpts, "threads": torch.get_num_threads()}))


def run(warmup_dir: Path, rows: int, workdir: Path) -> Section:
    for p in (1, 2):  # a complete datastore would be reused, not rebuilt
        shutil.rmtree(workdir / f"scaling_{p}proc", ignore_errors=True)
    results = {p: launch(p, warmup_dir, rows, workdir / f"scaling_{p}proc") for p in (1, 2)}
    stores = {}
    for p in results:
        from less_hf.datastore import Datastore

        store = Datastore.open(workdir / f"scaling_{p}proc")
        stores[p] = np.concatenate([store.pool_features(c.name, 8192) for c in store.manifest.checkpoints]).astype(
            np.float32
        )
    diff = float(np.abs(stores[1] - stores[2]).max() / np.abs(stores[1]).max())
    ckpts = results[1]["checkpoints"]
    section = Section(
        "5. Scaling: 1 vs 2 processes (accelerate launch, CPU/gloo)",
        ["processes × threads", "build time", "examples/s (build)", "speed-up", "whole launch"],
        data={"rows": rows, "results": results, "max_relative_difference": diff},
    )
    for p, r in results.items():
        section.rows.append(
            [
                f"{p} × {r['threads']}",
                f"{r['build_s']:.1f} s",
                f"{rows * ckpts / r['build_s']:.2f}",
                f"{results[1]['build_s'] / r['build_s']:.2f}×",
                f"{r['wall_s']:.1f} s",
            ]
        )
    section.notes.append(
        f"{rows} real pool rows × {ckpts} checkpoint(s), batch 16, d=8192, build time inside the process (model load "
        f"included). The 2-process datastore equals the 1-process one up to {diff:.1e} (max abs difference / max "
        "abs value, fp16 storage); 2-process launch: `accelerate launch --multi_gpu --num_processes 2` (torchrun, "
        "gloo on CPU)."
    )
    return section


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit("internal: run through benchmarks/run.py")
