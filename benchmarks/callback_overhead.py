"""Wall time of a real LESS warmup without the callback, with it writing synchronously (the previous behaviour), and
with it writing in a background thread (the default), side by side in one run.

SmolLM2-135M-Instruct, LoRA r=128/α=512 on q,k,v,o (D = 14.7M, so each save writes 118 MB of moments), rows of the
built-in pool at ≤128 tokens, batch 4, one save per epoch. Runs alternate (none, sync, background, none, …) and the
best of each is reported. The cost is per save, so it shrinks as epochs get longer: see the steps per epoch.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, set_seed

from less_hf import GradientCaptureCallback
from less_hf.warmup import _Collator, lora_config

from .common import Section, smollm2_rows

VARIANTS = {"none": "without the callback", "sync": "callback, synchronous write", "background": "callback (default)"}


def warmup_run(path: str, rows, tokenizer, epochs: int, variant: str, output_dir: str) -> float:
    """One warmup; returns its ``trainer.train()`` wall time (the files are complete when it returns)."""
    set_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=4,
        learning_rate=2e-5,
        save_strategy="epoch",
        optim="adamw_torch",
        report_to=[],
        disable_tqdm=True,
        logging_steps=1000,
        use_cpu=True,
        seed=0,
    )
    callbacks = [] if variant == "none" else [GradientCaptureCallback(background_write=variant == "background")]
    trainer = Trainer(
        model=get_peft_model(model, lora_config()),  # LESS's LoRA: r=128, alpha=512, dropout 0.1 on q/k/v/o
        args=args,
        train_dataset=rows,
        data_collator=_Collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def run(rows: int, epochs: int, repeats: int, keep_warmup: Path | None = None) -> Section:
    """Measure the three variants; the last background run's output is kept at ``keep_warmup`` (for later sections)."""
    path, tokenizer, _, tokenized = smollm2_rows(rows)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for repeat in range(repeats):
        for variant in VARIANTS:
            last = repeat == repeats - 1 and variant == "background" and keep_warmup is not None
            out = str(keep_warmup) if last else tempfile.mkdtemp(prefix="less_cb_")
            times[variant].append(warmup_run(path, tokenized, tokenizer, epochs, variant, out))
            if not last:
                shutil.rmtree(out)
    steps = -(-rows // 4)
    base = min(times["none"])
    section = Section(
        "4. Callback overhead on a warmup",
        ["warmup", f"wall time (best of {repeats})", "overhead", "per save"],
        data={"rows": rows, "epochs": epochs, "steps_per_epoch": steps, "times": times},
    )
    for variant, label in VARIANTS.items():
        best = min(times[variant])
        extra = "" if variant == "none" else f"{(best - base) / epochs:+.2f} s"
        section.rows.append([label, f"{best:.1f} s", f"{100 * (best - base) / base:+.1f}%", extra])
    section.notes.append(
        f"SmolLM2-135M, LoRA r=128/α=512 on q,k,v,o (118 MB of moments per save), {rows} rows, batch 4: {steps} "
        f"optimizer steps per epoch, {epochs} epochs, one save per epoch. Goal: ≤ 3%."
    )
    return section
