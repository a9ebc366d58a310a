"""Micro-benchmark of the datastore's hot path on SmolLM2-135M-Instruct with LESS's LoRA (r=128, α=512, q/k/v/o).

Side by side in one process, on the same 32 real pool rows (128 tokens max):
- per-example gradients with the LM head on every position vs only on supervised positions (less_hf's path);
- the sparse JL projection of those gradients to d=8192 (int64 vs int32 bucket indices for `index_add_`).

    python benchmarks/micro_gradients.py

Prints a markdown table. Run it on a quiet machine: ratios are only meaningful when nothing else runs.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import torch

from less_hf.gradients import PerExampleGradients, collate
from less_hf.projection import SparseProjector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import lora_model, smollm2_rows  # noqa: E402

ROWS, BATCH = 32, 16


def best_of(fn, repeats: int = 2) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    path, tokenizer, _, rows = smollm2_rows(ROWS)
    batches = [collate(rows[i : i + BATCH], tokenizer.pad_token_id) for i in range(0, ROWS, BATCH)]
    model = lora_model(path)  # LESS's LoRA: r=128, alpha=512 on q,k,v,o
    per_example = PerExampleGradients(model)
    head_split = per_example._decoder_and_head

    per_example._decoder_and_head = None
    full = best_of(lambda: [per_example(b) for b in batches])
    per_example._decoder_and_head = head_split
    supervised_only = best_of(lambda: [per_example(b) for b in batches])

    grads, _, _ = per_example(batches[0])
    projector = SparseProjector(8192)
    projector.project(grads)  # builds the hash tables once
    int64 = best_of(lambda: projector.project(grads))
    original = SparseProjector.project_param

    def int32_path(self, name, x):  # the earlier implementation: int32 indices straight into index_add_
        dims, signs = self._tables(name, x.shape[1], x.device)
        out = torch.zeros(x.shape[0], self.dim, device=x.device)
        for k in range(self.sparsity):
            out.index_add_(1, dims[k], x * signs[k])
        return out

    SparseProjector.project_param = int32_path
    int32 = best_of(lambda: projector.project(grads))
    SparseProjector.project_param = original

    tokens = sum(len(r["input_ids"]) for r in rows)
    supervised = sum(r["num_supervised"] for r in rows)
    print(
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; D = {per_example.num_params:,}; {ROWS} rows, {tokens} tokens, "
        f"{supervised} supervised\n"
    )
    print("| step | s / row | ratio |")
    print("|---|---|---|")
    print(f"| gradients, LM head on all positions | {full / ROWS:.3f} | 1.00 |")
    print(
        f"| gradients, LM head on supervised positions (default) | {supervised_only / ROWS:.3f} | "
        f"{full / supervised_only:.2f}× faster |"
    )
    print(f"| sparse JL d=8192, int32 indices | {int32 / BATCH:.3f} | 1.00 |")
    print(f"| sparse JL d=8192, int64 indices (default) | {int64 / BATCH:.3f} | {int32 / int64:.1f}× faster |")


if __name__ == "__main__":
    main()
