"""LESS step 1: LoRA warmup on a random slice of the pool, one checkpoint per epoch, with the capture callback."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, set_seed
from transformers.utils import logging

from .capture import GradientCaptureCallback
from .config import WarmupConfig
from .errors import InputError
from .gradients import collate
from .modeling import load_tokenizer
from .tokenization import tokenize_dataset

logger = logging.get_logger(__name__)


def warmup_indices(n_rows: int, config: WarmupConfig) -> np.ndarray:
    """The seeded random slice of the pool to warm up on (the seed is honoured, unlike the reference code)."""
    k = config.num_rows if config.num_rows is not None else max(1, round(config.fraction * n_rows))
    if not 1 <= k <= n_rows:
        raise InputError(f"Warmup wants {k} rows but the pool has {n_rows}.")
    return np.sort(np.random.default_rng(config.seed).choice(n_rows, size=k, replace=False))


def lora_config(config: WarmupConfig | None = None):
    """The peft `LoraConfig` of a warmup (paper defaults: r=128, alpha=512, dropout 0.1 on q/k/v/o)."""
    from peft import LoraConfig

    config = config or WarmupConfig()
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


class _Collator:
    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows):
        return collate(rows, self.pad_token_id)


def warmup(
    model_name_or_path: str, pool, output_dir: str | os.PathLike, config: WarmupConfig | None = None, **training_kwargs
) -> Path:
    """Run LESS's warmup and return ``output_dir`` (holding ``checkpoint-N`` folders, one per epoch).

    Trains a peft LoRA adapter (paper defaults: r=128, alpha=512, dropout 0.1 on q/k/v/o, AdamW lr 2e-5, linear
    decay, 3% warmup, 4 epochs, effective batch 32) on a random ``config.fraction`` of ``pool``, with
    :class:`GradientCaptureCallback` attached. Works under ``accelerate launch`` like any HF training.

    Args:
        model_name_or_path: base model (folder or Hub name available offline).
        pool: the candidate rows (`datasets.Dataset` in a TRL format).
        output_dir: where checkpoints go.
        config: warmup settings.
        training_kwargs: extra `TrainingArguments` fields (they override the derived ones).
    """
    from peft import get_peft_model

    config = config or WarmupConfig()
    output_dir = Path(output_dir)
    tokenizer = load_tokenizer(model_name_or_path)
    subset = pool.select(warmup_indices(len(pool), config).tolist())
    tokenized = tokenize_dataset(subset, tokenizer, config.max_length, desc="Tokenizing warmup rows")
    tokenized = tokenized.filter(lambda r: r["num_supervised"] > 0)
    if len(tokenized) == 0:
        raise InputError("No warmup row keeps a supervised token within max_length; raise max_length.")
    steps_per_epoch = -(-len(tokenized) // (config.per_device_batch_size * config.gradient_accumulation_steps))
    if steps_per_epoch < 2:
        logger.warning(
            "The warmup trains on %d rows: %d optimizer step per epoch (batch %d x accumulation %d), so its learning "
            "rate schedule barely starts and a checkpoint may get η̄ near 0. Warm up on more rows (--fraction / "
            "--num_rows) or use a smaller --gradient_accumulation_steps.",
            len(tokenized),
            steps_per_epoch,
            config.per_device_batch_size,
            config.gradient_accumulation_steps,
        )
    bf16 = (
        config.bf16 if config.bf16 is not None else bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    )
    set_seed(config.seed)  # the LoRA init below draws from torch's RNG: seed it, or each run starts elsewhere
    model = AutoModelForCausalLM.from_pretrained(model_name_or_path, dtype=torch.float32)
    model = get_peft_model(model, lora_config(config))
    args = dict(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a ratio
        weight_decay=0.0,
        optim="adamw_torch",
        save_strategy="epoch",
        logging_steps=config.logging_steps,
        seed=config.seed,
        bf16=bf16,
        report_to=[],
        remove_unused_columns=False,
        save_only_model=False,
        dataloader_pin_memory=torch.cuda.is_available(),  # on CPU torch warns about pin_memory every epoch
    )
    args.update(training_kwargs)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**args),
        train_dataset=tokenized,
        data_collator=_Collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[GradientCaptureCallback(base_model_name_or_path=str(model_name_or_path))],
    )
    trainer.train()
    logger.info("Warmup done: %d rows, checkpoints in %s", len(tokenized), output_dir)
    return output_dir
