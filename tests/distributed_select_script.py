"""Run by tests/test_distributed.py under `accelerate launch`: build the datastore and score one target, sharded.
Usage: distributed_select_script.py WARMUP_DIR DATASTORE_DIR SCORES_FILE"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402

from less_hf import GradientConfig, LESSSelector, ProjectionConfig  # noqa: E402

from conftest import make_pool  # noqa: E402


def select_config(warmup_dir: str, datastore_dir: str) -> LESSSelector:
    return LESSSelector(
        warmup_dir,
        datastore_dir,
        GradientConfig(max_length=64, batch_size=4, device="cpu"),
        ProjectionConfig(dims=[256]),
    )


def target():
    return make_pool(12, seed=5).filter(lambda r: r["source"] == "add")


if __name__ == "__main__":
    warmup_dir, datastore_dir, scores_file = sys.argv[1:4]
    scores = select_config(warmup_dir, datastore_dir).score(make_pool(), {"add": target()})["add"]
    np.save(scores_file, scores)
