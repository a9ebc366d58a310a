"""Run by tests/test_distributed.py under `accelerate launch --num_processes 2 --cpu`: a tiny warmup with the
capture callback. Usage: distributed_warmup_script.py MODEL_DIR OUTPUT_DIR"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from less_hf import warmup  # noqa: E402

from conftest import make_pool, tiny_warmup_config  # noqa: E402

if __name__ == "__main__":
    model_dir, output_dir = sys.argv[1], sys.argv[2]
    config = tiny_warmup_config(num_rows=16, per_device_batch_size=2)
    warmup(model_dir, make_pool(), output_dir, config, use_cpu=True, disable_tqdm=True)
