"""`accelerate launch` with 2 CPU processes (DDP over gloo): the warmup's callback writes once, on the main process;
the sharded datastore build equals a single-process build."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from less_hf.capture import OptimizerMoments

pytestmark = pytest.mark.slow


def launch(script: str, *args: str) -> None:
    """Run a script of this folder under `accelerate launch` with 2 CPU processes.

    `--cpu` with several processes needs MPI; `--multi_gpu` launches through torchrun, which on a machine without
    GPUs runs DDP over gloo on the CPU (the scripts ask accelerate for CPU).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        str(Path(__file__).parent / script),
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def ddp_warmup(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("ddp")
    launch("distributed_warmup_script.py", tiny_model_dir, str(out))
    return out


def test_two_processes_write_one_capture_per_checkpoint(ddp_warmup):
    checkpoints = sorted(ddp_warmup.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [c.name for c in checkpoints] == ["checkpoint-4", "checkpoint-8"]  # 16 rows / (2 procs × 2) per epoch
    for checkpoint in checkpoints:
        entries = sorted(p.name for p in checkpoint.iterdir() if "less_hf" in p.name)
        assert entries == ["less_hf"]  # no leftover temp dirs from a second writer
        moments = OptimizerMoments.load(checkpoint / "less_hf")
        assert len(moments.extra["learning_rates"]) == 4
        saved = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True)
        first = saved["state"][0]["exp_avg"]
        assert any(torch.equal(first, t) for t in moments.exp_avg.values())


def test_two_process_datastore_equals_single_process(warmup_dir, tmp_path):
    import numpy as np
    from distributed_select_script import make_pool, select_config, target

    from less_hf.datastore import Datastore

    single = select_config(str(warmup_dir), str(tmp_path / "single"))
    single_scores = single.score(make_pool(), {"add": target()})["add"]
    launch("distributed_select_script.py", str(warmup_dir), str(tmp_path / "double"), str(tmp_path / "scores.npy"))

    one, two = Datastore.open(tmp_path / "single"), Datastore.open(tmp_path / "double")
    assert one.row_ids == two.row_ids
    assert (one.valid == two.valid).all()
    for checkpoint in one.manifest.checkpoints:
        a = np.asarray(one.pool_features(checkpoint.name, 256), dtype=np.float32)
        b = np.asarray(two.pool_features(checkpoint.name, 256), dtype=np.float32)
        assert np.abs(a).sum(axis=1).min() > 0  # every row was computed by one of the two processes
        # bit-identical: both runs compute every row in the same batch (one global batch plan, dealt by batch)
        assert np.array_equal(b, a)
        assert not list((tmp_path / "double" / "pool").glob("*.part"))
        assert not list((tmp_path / "double" / "pool" / checkpoint.name).glob("done.rank*"))
    assert np.array_equal(np.load(tmp_path / "scores.npy"), single_scores)
