"""What content keys cost: hashing the base model, the warmup checkpoints and the pool, cold and cached.

    python benchmarks/key_cost.py WARMUP_DIR [--pool-rows N]

WARMUP_DIR is a SmolLM2 warmup (e.g. the demo's ``demo_output/warmup``). Timed with a fresh, empty file-hash cache
(cold: every byte read and hashed) and then again (cached: only ``stat`` and a JSON lookup), plus the up-front
checkpoint checks (adapter finite, Adam state valid) and the content digest of the built-in pool. Saves
``benchmarks/results/key_cost.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("warmup_dir")
    parser.add_argument("--pool-rows", type=int, default=None, help="rows of the built-in pool (default: all)")
    args = parser.parse_args()
    os.environ["LESS_HF_CACHE"] = tempfile.mkdtemp(prefix="less_hf_key_cost_")

    from less_hf.assets import load_pool, smollm2_path
    from less_hf.capture.checkpoints import check_checkpoint, find_checkpoints
    from less_hf.datastore.keys import checkpoint_identity, dataset_digest, model_identity

    model = str(smollm2_path())
    checkpoints = find_checkpoints(args.warmup_dir)
    identity, model_cold = timed(model_identity, model)
    _, model_warm = timed(model_identity, model)
    files, ckpt_cold = timed(lambda: [checkpoint_identity(c.path, c.captured) for c in checkpoints])
    _, ckpt_warm = timed(lambda: [checkpoint_identity(c.path, c.captured) for c in checkpoints])
    model_bytes = sum((Path(model) / name).stat().st_size for name in identity["files"])
    ckpt_bytes = sum((c.path / name).stat().st_size for c, names in zip(checkpoints, files) for name in names)
    _, checks = timed(lambda: [check_checkpoint(c) for c in checkpoints])
    pool = load_pool(args.pool_rows)
    _, pool_s = timed(dataset_digest, pool, ["messages", "id"])
    rows = [
        ("base model files (SmolLM2-135M, fp32)", f"{model_bytes / 1e6:.0f} MB", model_cold, model_warm),
        (f"{len(checkpoints)} checkpoints: adapter + Adam state", f"{ckpt_bytes / 1e6:.0f} MB", ckpt_cold, ckpt_warm),
        (f"{len(checkpoints)} checkpoints: up-front checks (finite, Adam)", "—", checks, checks),
        (f"pool content digest ({len(pool):,} rows)", "—", pool_s, pool_s),
    ]
    lines = ["| what | size | cold (s) | cached (s) |", "|---|---|---|---|"]
    lines += [f"| {name} | {size} | {cold:.2f} | {warm:.3f} |" for name, size, cold, warm in rows]
    total_cold = sum(r[2] for r in rows)
    total_warm = sum(r[3] for r in rows)
    lines.append(f"| **all** | | **{total_cold:.2f}** | **{total_warm:.2f}** |")
    table = "\n".join(lines)
    print(table)
    out = ROOT / "benchmarks" / "results" / "key_cost.md"
    out.write_text(f"# Content keys: cost\n\n`python benchmarks/key_cost.py {args.warmup_dir}`\n\n{table}\n")


if __name__ == "__main__":
    main()
