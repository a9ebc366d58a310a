"""LESS-T (transfer): select with a small model, train a different, larger architecture on the subset.

LESS's gradient features come from a cheap model; the selected rows are plain data, so any model can train on
them (the paper selects with Llama-2-7B and trains Llama-2-13B and Mistral-7B). Here, fully offline:

1. SmolLM2-135M-Instruct (Llama architecture) warms up with LoRA on 5% of the pool and selects the top 5% for the
   target task with `LESSSelector`.
2. Gemma-3-270M (Gemma-3 architecture, 2x the parameters, a 262k-token vocabulary; base model, trained with
   plain-text User:/Assistant: turns) is fine-tuned with LoRA on that subset with TRL's `SFTTrainer`.
3. The Gemma model's completion loss on the target's held-out test rows is printed before and after, and, with
   ``--random-baseline``, after training on a random subset of the same size instead.

    python examples/less_transfer.py --pool-size 200 --target csqa --output-dir less_t_out

Status: its parts ran (selection; Gemma loading, scoring and a LoRA step), the whole script not yet, on a machine
too loaded to finish it; see the README's LESS-T section.

The default sizes are small so it finishes on a 2-core CPU; with so few rows the before/after losses show that the
pipeline works, not how much LESS helps (that needs thousands of pool rows). Under several processes or GPUs run it
with ``accelerate launch examples/less_transfer.py ...``.
"""

from __future__ import annotations

import argparse
import time

import torch
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

from less_hf import GradientConfig, LESSSelector, ProjectionConfig, WarmupConfig, warmup
from less_hf.assets import load_pool, load_target, smollm2_path
from less_hf.assets.gemma import gemma3_270m_path


def to_prompt_completion(dataset):
    """Chat rows → conversational prompt/completion, so SFTTrainer supervises only the answer."""
    return dataset.map(
        lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
        remove_columns=[c for c in dataset.column_names if c != "id"],
    )


def sft_args(output_dir: str, max_length: int, **overrides) -> SFTConfig:
    cuda = torch.cuda.is_available()
    args = dict(
        output_dir=output_dir,
        num_train_epochs=2,
        learning_rate=2e-4,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        max_length=max_length,
        bf16=cuda,
        use_cpu=not cuda,
        seed=0,
    )
    args.update(overrides)
    return SFTConfig(**args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool-size", type=int, default=200, help="Rows of the built-in pool (stratified).")
    parser.add_argument("--target", default="csqa", choices=["mmlu", "bbh", "csqa"])
    parser.add_argument("--fraction", type=float, default=0.05, help="Share of the pool to select.")
    parser.add_argument("--eval-rows", type=int, default=32, help="Held-out target test rows for the loss.")
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--output-dir", default="less_t_out")
    parser.add_argument("--random-baseline", action="store_true", help="Also train on a random subset of equal size.")
    args = parser.parse_args()
    started = time.perf_counter()

    pool = load_pool(max_rows=args.pool_size, seed=0)
    target = load_target(args.target, "validation", per_subtask=1)
    test = load_target(args.target, "test").shuffle(seed=0).select(range(args.eval_rows))

    # 1. Select with the small model (SmolLM2-135M).
    small = str(smollm2_path())
    warm_cfg = WarmupConfig(
        fraction=0.05, epochs=2, per_device_batch_size=4, gradient_accumulation_steps=1, lora_r=128, lora_alpha=512,
        max_length=args.max_length, logging_steps=1,
    )  # fmt: skip
    warmup(small, pool, f"{args.output_dir}/smollm2_warmup", warm_cfg, disable_tqdm=True)
    selector = LESSSelector(
        f"{args.output_dir}/smollm2_warmup",
        gradient_config=GradientConfig(max_length=args.max_length),
        projection_config=ProjectionConfig(dims=[8192]),
    )
    subset = selector.select(pool, {args.target: target}, fraction=args.fraction)[args.target]
    subset.save_to_disk(f"{args.output_dir}/selected_{args.target}")
    print(f"Selected {len(subset)} of {len(pool)} rows with SmolLM2; sources: {sorted(set(subset['source']))}")

    # 2. Train a different architecture (Gemma-3-270M) on the subset.
    large = str(gemma3_270m_path())
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )  # fmt: skip
    eval_set = to_prompt_completion(test)
    train_sets = {"less": subset}
    if args.random_baseline:
        train_sets["random"] = pool.shuffle(seed=1).select(range(len(subset)))
    losses = {}
    for name, rows in train_sets.items():
        trainer = SFTTrainer(
            model=large,
            args=sft_args(f"{args.output_dir}/gemma_{name}", args.max_length),
            train_dataset=to_prompt_completion(rows),
            eval_dataset=eval_set,
            peft_config=lora,
        )
        if "before" not in losses:
            losses["before"] = trainer.evaluate()["eval_loss"]
        trainer.train()
        losses[f"after {name}"] = trainer.evaluate()["eval_loss"]

    print(f"\nGemma-3-270M completion loss on {len(eval_set)} held-out {args.target} test rows:")
    for name, loss in losses.items():
        print(f"  {name:<14} {loss:.4f}")
    print(f"Done in {time.perf_counter() - started:.0f} s; outputs in {args.output_dir}/")


if __name__ == "__main__":
    main()
