"""LESS inside an ordinary TRL `SFTTrainer` script: three added lines (marked `# LESS`).

1. Warm up with `GradientCaptureCallback` attached (LoRA, AdamW, one checkpoint per epoch).
2. Build a `LESSSelector` from the warmup's output dir.
3. Select the top 5% of the pool for the target task and train on it with `SFTTrainer`.

Runs offline on the built-in SmolLM2-135M-Instruct and data (small sizes by default so it finishes on a laptop CPU):

    python examples/sft_trainer_less.py --pool-size 200 --output-dir sft_less_out

Under several processes, the same script runs with `accelerate launch examples/sft_trainer_less.py ...`.
"""

from __future__ import annotations

import argparse

import torch
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

from less_hf import GradientCaptureCallback, GradientConfig, LESSSelector, ProjectionConfig
from less_hf.assets import load_pool, load_target, smollm2_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool-size", type=int, default=200)
    parser.add_argument("--target", default="mmlu", choices=["mmlu", "bbh", "csqa"])
    parser.add_argument("--output-dir", default="sft_less_out")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    model = str(smollm2_path())
    pool = load_pool(max_rows=args.pool_size, seed=0)
    target = load_target(args.target, "validation", per_subtask=1)  # one few-shot row per subtask: quick
    device_args = {
        "bf16": torch.cuda.is_available(),
        "use_cpu": not torch.cuda.is_available(),
    }  # SFTConfig defaults to bf16
    lora = LoraConfig(
        r=128,
        lora_alpha=512,
        lora_dropout=0.1,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )

    # Warmup: an ordinary SFTTrainer run on a random 5% of the pool (prompt/completion => completion-only loss).
    warm = pool.shuffle(seed=0).select(range(max(4, len(pool) // 20)))
    warm = warm.map(
        lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]}, remove_columns=["messages"]
    )
    warmup_args = SFTConfig(
        output_dir=f"{args.output_dir}/warmup",
        num_train_epochs=args.epochs,
        learning_rate=2e-5,
        per_device_train_batch_size=4,
        save_strategy="epoch",
        logging_steps=1,
        report_to=[],
        max_length=args.max_length,
        optim="adamw_torch",
        seed=0,
        **device_args,
    )
    trainer = SFTTrainer(
        model=model, args=warmup_args, train_dataset=warm, peft_config=lora, callbacks=[GradientCaptureCallback()]
    )  # LESS (1): keep Adam moments at every save
    trainer.train()

    selector = LESSSelector(
        f"{args.output_dir}/warmup",  # LESS (2): per-checkpoint Adam updates of every pool row
        gradient_config=GradientConfig(max_length=args.max_length),
        projection_config=ProjectionConfig(dims=[8192]),
    )
    subset = selector.select(pool, target, fraction=0.05)  # LESS (3): the top 5% as a datasets.Dataset
    print(subset.select_columns(["id", "source", "less_score"]).to_pandas().head(10).to_string())

    # Train on the selection with SFTTrainer, as usual.
    train_args = SFTConfig(
        output_dir=f"{args.output_dir}/final",
        num_train_epochs=1,
        learning_rate=2e-5,
        per_device_train_batch_size=4,
        save_strategy="no",
        report_to=[],
        max_length=args.max_length,
        **device_args,
    )
    SFTTrainer(
        model=model,
        args=train_args,
        train_dataset=subset.remove_columns(["less_score", "less_score_rank"]),
        peft_config=lora,
    ).train()
    subset.save_to_disk(f"{args.output_dir}/selected_{args.target}")


if __name__ == "__main__":
    main()
