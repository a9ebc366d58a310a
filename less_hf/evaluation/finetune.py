"""A short, fixed-budget LoRA fine-tune with TRL's `SFTTrainer`: the same recipe for every selection compared."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from ..tokenization import FORMAT_COLUMNS, detect_format


@dataclass
class FinetuneConfig:
    """How each selection is fine-tuned before its held-out evaluation (identical for every method and seed).

    Args:
        epochs: passes over the selection (the budget: same-size selections get the same number of steps).
        learning_rate: peak learning rate, linear decay, no lr warmup (a ratio warmup gives a few-step run a first
            step at lr 0).
        batch_size: rows per optimizer step.
        max_length: tokens kept per row (TRL's ``keep_end`` truncation, so the answer is kept).
        lora_r, lora_alpha, lora_dropout, target_modules: the LoRA adapter.
    """

    epochs: int = 1
    learning_rate: float = 2e-4
    batch_size: int = 4
    max_length: int = 256
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length", "lora_r", "lora_alpha"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"FinetuneConfig.{name} must be a whole number >= 1, got {value!r}.")
        if not self.learning_rate > 0:
            raise ConfigError(f"FinetuneConfig.learning_rate must be > 0, got {self.learning_rate!r}.")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"FinetuneConfig.lora_dropout must be in [0, 1), got {self.lora_dropout!r}.")
        if not self.target_modules:
            raise ConfigError("FinetuneConfig.target_modules must name at least one module (e.g. q_proj).")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def training_rows(rows):
    """Rows in the form `SFTTrainer` trains on the answer only: a chat whose last turn is the assistant's becomes
    ``prompt`` (the turns before) + ``completion`` (that turn); other TRL formats pass through."""
    fmt = detect_format(rows.column_names)
    if fmt != "messages":
        return rows.select_columns([c for c in FORMAT_COLUMNS[fmt] if c in rows.column_names])
    return rows.select_columns(["messages"]).map(
        lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
        remove_columns=["messages"],
    )


def finetune(
    model: str | os.PathLike, rows, output_dir: str | os.PathLike, seed: int, config: FinetuneConfig | None = None
) -> tuple[Any, dict[str, float]]:
    """LoRA fine-tune ``model`` on ``rows`` with `SFTTrainer` (nothing saved); returns ``(model, stats)``.

    ``stats`` holds ``steps`` (optimizer steps) and ``seconds``. The model is returned in memory for evaluation.
    """
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    config = config or FinetuneConfig()
    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        lr_scheduler_type="linear",
        warmup_steps=0,
        save_strategy="no",
        report_to=[],
        logging_steps=5,
        max_length=config.max_length,
        seed=seed,
        bf16=cuda,
        use_cpu=not cuda,
        disable_tqdm=True,
        truncation_mode="keep_end",  # TRL's default cuts from the right and drops rows whose answer is cut away
    )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(model=str(model), args=args, train_dataset=training_rows(rows), peft_config=lora)
    trainer.remove_callback(PrinterCallback)  # no loss dicts on stdout: callers print their own tables
    started = time.perf_counter()
    trainer.train()
    return trainer.model, {"steps": trainer.state.global_step, "seconds": time.perf_counter() - started}
