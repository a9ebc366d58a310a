"""Shared pieces of the benchmark sections: real rows and models, timing, ranks, RSS, the machine description."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Section:
    """One section of the report: a markdown table, notes under it, and the raw numbers for the JSON file."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", "| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        if self.notes:
            lines += [""] + self.notes
        return "\n".join(lines) + "\n"


def smollm2_rows(n: int, offset: int = 0, max_length: int = 128):
    """``(path, tokenizer, pool rows (Dataset), tokenized rows (list of dicts))`` from the built-in pool."""
    from less_hf.assets import load_pool, smollm2_path
    from less_hf.modeling import load_tokenizer
    from less_hf.tokenization import tokenize_dataset

    path = str(smollm2_path())
    tokenizer = load_tokenizer(path)
    pool = load_pool(max_rows=400, seed=0).select(range(offset, offset + n))
    tokenized = tokenize_dataset(pool, tokenizer, max_length=max_length)
    return path, tokenizer, pool, [tokenized[i] for i in range(n)]


def lora_model(
    path: str, r: int = 128, alpha: int = 512, targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
):
    """SmolLM2 with a randomly initialised LoRA (A and B both random, so every coordinate has a gradient)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = LoraConfig(
        r=r, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, lora).eval()


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def mean_std(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries the parent's peak into a forked child."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_child(module: str, *args: str, env: dict[str, str] | None = None, timeout: int = 1200) -> dict:
    """Run ``python -m benchmarks.<module> args`` in a fresh process; it prints one JSON line last."""
    out = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    if out.returncode:
        raise RuntimeError(f"benchmarks.{module} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_bandwidth_gb_s() -> float:
    """Copy bandwidth (read + write) of a 256 MiB numpy copy, best of 5."""
    a = np.ones(1 << 28, dtype=np.uint8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - start)
    return 2 * a.nbytes / best / 1e9


def matmul_gflops(threads: int | None = None) -> float:
    """fp32 GEMM throughput (4096 × 8192 @ 8192 × 85: the scoring's shape), best of 3."""
    import torch

    a, b = torch.randn(4096, 8192), torch.randn(8192, 85)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 4096 * 8192 * 85 / best / 1e9


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, library versions, measured bandwidth and GEMM speed, load average."""
    import accelerate
    import peft
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kb = 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gb": round(mem_kb / 1024**2, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "memory_bandwidth_gb_s": round(memory_bandwidth_gb_s(), 1),
        "fp32_gemm_gflops": round(matmul_gflops(), 1),
        "load_average_at_start": os.getloadavg()[0],
    }
