"""Wall time of a real LESS warmup with and without `GradientCaptureCallback`, side by side in one run.

SmolLM2-135M-Instruct, LoRA r=128/α=512 on q,k,v,o (D = 14.7M, so each save writes 118 MB of moments), rows of the
built-in pool at ≤128 tokens, batch 4, one save per epoch. Runs alternate (without, with, without, with) and the best
of each is reported. The overhead is per save, so it shrinks as epochs get longer: see the steps per epoch.

    python benchmarks/callback_overhead.py [--rows 64] [--epochs 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, set_seed

from less_hf import GradientCaptureCallback
from less_hf.assets import load_pool, smollm2_path
from less_hf.modeling import load_tokenizer
from less_hf.tokenization import tokenize_dataset
from less_hf.warmup import _Collator, lora_config


def run(path: str, rows, tokenizer, epochs: int, capture: bool) -> float:
    set_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = lora_config()  # LESS's LoRA: r=128, alpha=512, dropout 0.1 on q/k/v/o
    out = tempfile.mkdtemp(prefix="less_cb_")
    args = TrainingArguments(
        output_dir=out,
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
    trainer = Trainer(
        model=get_peft_model(model, lora),
        args=args,
        train_dataset=rows,
        data_collator=_Collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[GradientCaptureCallback()] if capture else [],
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    path = str(smollm2_path())
    tokenizer = load_tokenizer(path)
    rows = tokenize_dataset(load_pool(max_rows=400, seed=0).select(range(args.rows)), tokenizer, max_length=128)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(2):
        for capture in (False, True):
            times[capture].append(run(path, rows, tokenizer, args.epochs, capture))
    without, with_cb = min(times[False]), min(times[True])
    steps = -(-args.rows // 4)
    print(f"{args.rows} rows, {steps} optimizer steps per epoch, {args.epochs} epochs (one save each)\n")
    print("| warmup | wall time (best of 2) |")
    print("|---|---|")
    print(f"| without GradientCaptureCallback | {without:.1f} s |")
    print(f"| with GradientCaptureCallback | {with_cb:.1f} s |")
    overhead = 100 * (with_cb - without) / without
    print(f"| overhead | {overhead:+.1f}% ({(with_cb - without) / args.epochs:.2f} s per save) |")


if __name__ == "__main__":
    main()
