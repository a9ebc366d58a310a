"""Building blocks of ``benchmarks/gpu_check.py``: models built from configs (random weights, no download), synthetic
rows and Adam moments, the build's feature pipeline on a list of rows, LESS scores, timing on any device.

Imports only torch, numpy, transformers, peft and less_hf modules that need neither ``datasets`` nor ``trl`` (the
lent GPU machine has neither).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import torch

from less_hf.capture.optimizer_state import OptimizerMoments
from less_hf.gradients import PerExampleGradients, collate, length_sorted_batches
from less_hf.gradients.featurizer import batch_features
from less_hf.projection import Projector
from less_hf.scoring import subtask_directions
from less_hf.scoring.similarity import cosine_block

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
PAD_ID = 0
FIRST_TOKEN = 8  # ids below this are never drawn (pad and "special" ids)

# Llama shapes (public configs); weights are random, so nothing is downloaded.
SHAPES: dict[str, dict] = {
    "8b": dict(  # Llama-3-8B
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, rope_theta=500000.0, max_position_embeddings=8192, tie_word_embeddings=False,
    ),
    "3b": dict(  # Llama-3.2-3B
        vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
        num_key_value_heads=8, rope_theta=500000.0, max_position_embeddings=8192, tie_word_embeddings=True,
    ),
    "1b": dict(  # Llama-3.2-1B
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, rope_theta=500000.0, max_position_embeddings=8192, tie_word_embeddings=True,
    ),
    "small": dict(  # the bf16-vs-fp32 check's model on a GPU
        vocab_size=8192, hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=4, max_position_embeddings=1024, tie_word_embeddings=True,
    ),
    "tiny": dict(  # the test suite's tiny Llama
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
    ),
}  # fmt: skip


def lora_model(shape: str, r: int, alpha: int, device: str | torch.device, dtype: torch.dtype, seed: int = 0):
    """A random Llama of ``shape`` built directly on ``device`` in ``dtype``, with a random LoRA (A and B random, so
    every coordinate has a gradient) on q,k,v,o, in eval mode. LoRA weights stay fp32 as in a real build (peft
    up-casts adapters of a bf16 model)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**SHAPES[shape], pad_token_id=PAD_ID, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        lora = LoraConfig(
            r=r, lora_alpha=alpha, target_modules=list(LORA_TARGETS), init_lora_weights=False, task_type="CAUSAL_LM"
        )
        model = get_peft_model(model, lora)
    return model.to(device).eval()  # a no-op when the device context placed everything already


def synthetic_rows(
    n: int, length: int, vocab: int, groups: int, seed: int, vary: bool = False
) -> tuple[list[dict], list[str]]:
    """``n`` tokenized rows (``input_ids``, ``labels``) and their group names. A quarter of each row is a prompt of
    tokens from the whole vocabulary (labels -100); the rest, the supervised completion, draws from its group's own
    slice of the vocabulary, so rows of a group have related gradients and scores have structure to rank.
    ``vary``: lengths uniform in [length/2, length] (exercises padding), else all exactly ``length``."""
    g = torch.Generator().manual_seed(seed)
    span = (vocab - FIRST_TOKEN) // groups
    rows, names = [], []
    for i in range(n):
        group = i % groups
        size = int(torch.randint(length // 2, length + 1, (1,), generator=g)) if vary else length
        prompt = max(1, size // 4)
        head = torch.randint(FIRST_TOKEN, vocab, (prompt,), generator=g)
        tail = FIRST_TOKEN + group * span + torch.randint(0, span, (size - prompt,), generator=g)
        rows.append({"input_ids": torch.cat([head, tail]).tolist(), "labels": [-100] * prompt + tail.tolist()})
        names.append(f"group-{group}")
    return rows, names


def synthetic_moments(shapes: dict[str, torch.Size], seed: int = 0, step: int = 100) -> OptimizerMoments:
    """Adam moments for every LoRA weight, on the CPU as ``load_moments`` returns them (the build moves them to the
    device batch by batch)."""
    g = torch.Generator().manual_seed(seed)
    exp_avg = {n: torch.randn(s, generator=g) * 1e-3 for n, s in shapes.items()}
    exp_avg_sq = {n: torch.rand(s, generator=g) * 1e-5 + 1e-7 for n, s in shapes.items()}
    return OptimizerMoments(exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, step=step)


def features(
    per_example: PerExampleGradients,
    rows: list[dict],
    batch_size: int,
    transform: str,
    moments: OptimizerMoments | None,
    projector: Projector,
    device: torch.device,
) -> np.ndarray:
    """``(n, d)`` float32 features of ``rows``, batched as the build batches them (length-sorted, right-padded)."""
    out = np.zeros((len(rows), projector.dim), dtype=np.float32)
    for idx in length_sorted_batches([len(r["input_ids"]) for r in rows], batch_size):
        batch = collate([rows[i] for i in idx], PAD_ID, device)
        out[idx] = batch_features(per_example, batch, transform, moments, [projector])[projector.dim].cpu().numpy()
    return out


def raw_gradients(
    per_example: PerExampleGradients, rows: list[dict], batch_size: int, device: torch.device
) -> np.ndarray:
    """``(n, D)`` float32 unprojected per-example gradients (sorted parameter names), for small models only."""
    out = None
    for idx in length_sorted_batches([len(r["input_ids"]) for r in rows], batch_size):
        with torch.enable_grad():
            grads, _, _ = per_example(collate([rows[i] for i in idx], PAD_ID, device))
        flat = torch.cat([grads[n].flatten(1) for n in sorted(grads)], dim=1).cpu().numpy()
        out = np.zeros((len(rows), flat.shape[1]), dtype=np.float32) if out is None else out
        out[idx] = flat
    return out


def less_scores(pool: np.ndarray, targets: np.ndarray, subtasks: list[str], device: torch.device) -> np.ndarray:
    """One checkpoint's LESS scores: cosines to each subtask's mean unit target feature (the library's
    ``subtask_directions``), scored by the library's ``cosine_block`` on ``device``, max over subtasks."""
    directions, _ = subtask_directions(targets, subtasks, np.ones(len(subtasks), dtype=bool))
    matrix = torch.from_numpy(directions.T.copy()).to(device)
    return cosine_block(torch.from_numpy(pool).to(device), matrix).amax(dim=1).cpu().numpy()


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest per-row ``‖a − b‖ / ‖a‖`` (rows where ``a`` is zero are compared absolutely)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1)
    return float((np.linalg.norm(a64 - b64, axis=1) / np.where(norms > 0, norms, 1.0)).max())


def top_overlap(a: np.ndarray, b: np.ndarray, fraction: float = 0.05) -> float:
    """Share of the top ``fraction`` rows by ``a`` that are also in the top ``fraction`` by ``b``."""
    k = max(1, round(fraction * len(a)))
    return len(set(np.argsort(-a)[:k].tolist()) & set(np.argsort(-b)[:k].tolist())) / k


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """Wall time after the device has finished its queued work."""
    sync(device)
    return time.perf_counter()


@contextmanager
def peak_memory(device: torch.device, into: dict, key: str):
    """Record the peak GPU memory (GiB) allocated inside the block in ``into[key]`` (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            into[key] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def free_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(err: BaseException) -> bool:
    """An allocator's out-of-memory error (torch's, or one a library reports as a RuntimeError)."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(err, oom) or "out of memory" in str(err).lower()
