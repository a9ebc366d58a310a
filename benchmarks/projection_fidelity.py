"""Projector fidelity and speed on real per-example gradients, over several seeds, side by side in one run.

SmolLM2-135M-Instruct with LoRA r=8 on q,v (D = 460,800, small enough for the dense projector to be timed whole;
LoRA A and B both random so every coordinate has a gradient), real pool rows (≤128 tokens): N rows give N(N-1)/2
gradient pairs. For each projector, d and seed: Spearman and mean absolute error of projected vs exact cosines, and
the time per example. The dense projector generates its signs on the fly in one pass over all rows (cache off): at
LESS's r=128 on q,k,v,o (D = 14.7M) its sign matrix would be 120 GB and could not be kept.
"""

from __future__ import annotations

import numpy as np
import torch

from less_hf.gradients import PerExampleGradients, collate
from less_hf.projection import DenseProjector, SparseProjector

from .common import Section, lora_model, mean_std, smollm2_rows, spearman, timed


def cosines(x: torch.Tensor) -> np.ndarray:
    unit = torch.nn.functional.normalize(x.double(), dim=1)
    full = (unit @ unit.T).numpy()
    return full[np.triu_indices(len(x), k=1)]


def real_gradients(rows: int) -> tuple[dict[str, torch.Tensor], int]:
    """``({param: (rows, out, in) gradient}, D)`` for SmolLM2 with LoRA r=8 on q,v."""
    path, tokenizer, _, tokenized = smollm2_rows(rows)
    per_example = PerExampleGradients(lora_model(path, r=8, alpha=16, targets=("q_proj", "v_proj")))
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, rows, 16):
        grads, _, _ = per_example(collate(tokenized[start : start + 16], tokenizer.pad_token_id))
        for name, g in grads.items():
            parts.setdefault(name, []).append(g)
    return {name: torch.cat(p) for name, p in parts.items()}, per_example.num_params


def run(rows: int, dims: list[int], seeds: int, dense_dims: list[int]) -> Section:
    grads, num_params = real_gradients(rows)
    names = sorted(grads)
    exact = cosines(torch.cat([grads[n].flatten(1) for n in names], dim=1))
    section = Section(
        "2. Projection: speed and cosine fidelity on real gradients",
        ["projector", "d", "Spearman vs exact cosines", "mean abs error", "s / example"],
        data={"rows": rows, "pairs": len(exact), "D": num_params, "results": []},
    )
    kinds = [
        ("sparse JL, s=4 (default)", SparseProjector, dims),
        ("dense Rademacher (paper)", DenseProjector, dense_dims),
    ]
    for d in dims:
        for label, cls, kind_dims in kinds:
            if d not in kind_dims:
                continue
            rhos, errors, per_row = [], [], []
            for seed in range(seeds):
                projector = cls(d, seed=seed, **({"cache_bytes": 0} if cls is DenseProjector else {}))
                if cls is SparseProjector:
                    projector.project(grads)  # hash tables are built once per parameter and kept (6 bytes / coord)
                projected, seconds = timed(projector.project, grads)
                approx = cosines(projected)
                rhos.append(spearman(exact, approx))
                errors.append(float(np.abs(exact - approx).mean()))
                per_row.append(seconds / rows)
            section.rows.append([label, d, mean_std(rhos), mean_std(errors), f"{np.mean(per_row):.4f}"])
            section.data["results"].append(
                {"projector": label, "dim": d, "spearman": rhos, "mae": errors, "s_per_example": per_row}
            )
    section.notes.append(
        f"SmolLM2-135M, LoRA r=8 on q,v (D = {num_params:,}), {rows} real pool rows → {len(exact)} pairs; exact "
        f"cosines mean {exact.mean():.3f} ± {exact.std():.3f}. Mean ± std over {seeds} projection seeds. The sparse "
        "time excludes its one-time hash tables; the dense time includes generating its signs (amortised over the "
        f"{rows} rows of one pass)."
    )
    return section
