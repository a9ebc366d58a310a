"""Projector fidelity and speed on real per-example gradients, side by side in one run.

SmolLM2-135M-Instruct with LoRA r=8 on q,v (D = 460,800; LoRA A and B both random so every coordinate has a gradient),
48 real pool rows (≤128 tokens) → 1,128 gradient pairs. For each projector and d: Spearman and mean absolute error
of projected vs exact cosines, and the time per example (the dense projector's one-time sign generation is shown
separately: at LESS's r=128 on q,k,v,o, D = 14.7M, it could not be kept and would be paid on every call).

    python benchmarks/projection_fidelity.py [--dims 1024 4096 8192]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from less_hf.assets import load_pool, smollm2_path
from less_hf.gradients import PerExampleGradients, collate
from less_hf.modeling import load_tokenizer
from less_hf.projection import DenseProjector, SparseProjector
from less_hf.tokenization import tokenize_dataset

ROWS = 48


def cosines(x: torch.Tensor) -> np.ndarray:
    unit = torch.nn.functional.normalize(x.double(), dim=1)
    full = (unit @ unit.T).numpy()
    return full[np.triu_indices(len(x), k=1)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 4096, 8192])
    args = parser.parse_args()
    path = str(smollm2_path())
    tokenizer = load_tokenizer(path)
    rows = tokenize_dataset(load_pool(max_rows=400, seed=0).select(range(ROWS)), tokenizer, max_length=128)
    rows = [rows[i] for i in range(ROWS)]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
    )
    per_example = PerExampleGradients(get_peft_model(model, lora).eval())
    grads: dict[str, list[torch.Tensor]] = {}
    for start in range(0, ROWS, 16):
        batch, _, _ = per_example(collate(rows[start : start + 16], tokenizer.pad_token_id))
        for name, g in batch.items():
            grads.setdefault(name, []).append(g)
    grads_cat = {name: torch.cat(parts) for name, parts in grads.items()}
    names = sorted(grads_cat)
    exact = cosines(torch.cat([grads_cat[n].flatten(1) for n in names], dim=1))
    print(
        f"D = {per_example.num_params:,}; {ROWS} rows, {len(exact)} pairs; exact cosines: mean {exact.mean():.3f}, "
        f"std {exact.std():.3f}\n"
    )
    print("| projector | d | Spearman vs exact | mean abs error | s / example | one-time setup |")
    print("|---|---|---|---|---|---|")
    for d in args.dims:
        for label, projector in (
            ("sparse (s=4, default)", SparseProjector(d)),
            ("dense Rademacher", DenseProjector(d, cache_bytes=8 << 30)),
        ):
            start = time.perf_counter()
            projected = projector.project(grads_cat)  # first call: builds hash tables / generates the signs
            setup = time.perf_counter() - start
            start = time.perf_counter()
            projected = projector.project(grads_cat)
            per_example_s = (time.perf_counter() - start) / ROWS
            approx = cosines(projected)
            print(
                f"| {label} | {d} | {spearman(exact, approx):.4f} | {np.abs(exact - approx).mean():.4f} | "
                f"{per_example_s:.4f} | {setup:.1f} s |",
                flush=True,
            )
            del projector, projected


if __name__ == "__main__":
    main()
