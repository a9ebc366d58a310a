"""Shared by tests/test_reliability.py and benchmarks/reliability.py: a build run in a subprocess that is SIGKILLed
when the files on disk reach a chosen state, and a byte-level comparison of two datastores."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from less_hf import GradientConfig, ProjectionConfig

from conftest import make_pool

SCRIPT = Path(__file__).parent / "crash_build_script.py"
# batch 2, a durable flush after every batch: many distinct crash points in a build of a few seconds
CRASH_GRAD = GradientConfig(max_length=64, batch_size=2, flush_every=1, device="cpu")
CRASH_PROJ = ProjectionConfig(dims=[64, 128], seed=3)


def crash_pool():
    return make_pool(16)


def datastore_digest(directory: Path) -> dict[str, str]:
    """sha256 of every file of a datastore (the manifest without its creation time), keyed by relative path. The
    lock file and target features are left out."""
    out = {}
    for path in sorted(Path(directory).rglob("*")):
        rel = str(path.relative_to(directory))
        if not path.is_file() or rel == ".lock" or rel.startswith("targets"):
            continue
        data = path.read_bytes()
        if rel == "manifest.json":
            manifest = json.loads(data)
            manifest.pop("created")
            data = json.dumps(manifest, sort_keys=True).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def rows_done(part: Path) -> int:
    """Rows recorded done in a ``.part`` folder (0 when there is no done-mask yet)."""
    try:
        return int(np.count_nonzero(np.load(part / "done.npy")))
    except (FileNotFoundError, ValueError, OSError, EOFError):
        return 0


def crash_points(out: Path) -> dict[str, Callable[[], bool]]:
    """Named moments of a build, as conditions on the files under ``out``."""
    pool = out / "pool"
    return {
        "after the manifest": lambda: (out / "manifest.json").exists(),
        "mid first checkpoint": lambda: rows_done(pool / "checkpoint-3.part") >= 6,
        "mid second checkpoint": lambda: rows_done(pool / "checkpoint-6.part") >= 8,
        "second checkpoint renamed": lambda: (pool / "checkpoint-6").is_dir(),
    }


def run_and_kill(warmup_dir: Path, out: Path, condition: Callable[[], bool] | None, delay: float = 0.0) -> str:
    """Start a build of ``out`` in a subprocess and SIGKILL it as soon as ``condition()`` holds (polled every
    millisecond), or ``delay`` seconds after the first file appears when no condition is given. Returns what
    happened: "killed" or "finished first"."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(warmup_dir), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    started = None
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if condition is not None and condition():
                break
            if condition is None and (out / "manifest.json").exists():
                started = started or time.monotonic()
                if time.monotonic() - started >= delay:
                    break
            time.sleep(0.001)
        if proc.poll() is not None:
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.read().decode()[-3000:])
            return "finished first"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return "killed"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
