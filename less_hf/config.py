"""Dataclass configs for every stage, with field help (ready for `transformers.HfArgumentParser`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


class _DictMixin:
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view of the config."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build the config from a dict, ignoring keys this version does not know."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class TokenizationConfig(_DictMixin):
    """How rows become token ids and loss masks (shared by warmup training and gradient features)."""

    max_length: int = _help("Maximum tokens per row (prompt + completion).", default=512)
    truncation: str = _help(
        "'keep_completion' (default): when a row is too long, cut the prompt from the left so the completion "
        "survives, then the completion from the right. 'right': cut from the right like TRL's SFTTrainer.",
        default="keep_completion",
    )


@dataclass
class WarmupConfig(_DictMixin):
    """LESS step 1: LoRA warmup on a random slice of the pool (paper defaults)."""

    fraction: float = _help("Fraction of the pool to warm up on.", default=0.05)
    num_rows: int | None = _help("Exact number of rows to warm up on (overrides fraction).", default=None)
    epochs: int = _help("Warmup epochs; one checkpoint is saved per epoch.", default=4)
    learning_rate: float = _help("Peak learning rate (linear decay).", default=2e-5)
    warmup_ratio: float = _help("Share of steps with linear lr warmup.", default=0.03)
    per_device_batch_size: int = _help("Rows per device per micro-batch.", default=1)
    gradient_accumulation_steps: int = _help("Micro-batches per optimizer step (paper: 32).", default=32)
    lora_r: int = _help("LoRA rank.", default=128)
    lora_alpha: int = _help("LoRA alpha.", default=512)
    lora_dropout: float = _help("LoRA dropout.", default=0.1)
    target_modules: list[str] = _help(
        "Modules that get LoRA adapters.", default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    seed: int = _help("Seed for the warmup subset, LoRA init and data order.", default=0)
    max_length: int = _help("Maximum tokens per row.", default=512)
    bf16: bool | None = _help("Train in bf16 (default: when the device supports it).", default=None)
    logging_steps: int = _help("Log every N optimizer steps.", default=10)


@dataclass
class GradientConfig(_DictMixin):
    """LESS step 2: per-example gradient features at each checkpoint."""

    batch_size: int = _help("Rows per batched forward/backward.", default=16)
    max_length: int = _help("Maximum tokens per row.", default=512)
    truncation: str = _help("See TokenizationConfig.truncation.", default="keep_completion")
    optimizer_transform: str = _help(
        "How pool gradients become features: 'adam' (the paper's bias-corrected update, default), "
        "'adam_reference' (the reference code: no bias correction, eps inside the root), 'adam_torch' "
        "(torch's AdamW step) or 'sgd' (the plain gradient).",
        default="adam",
    )
    flush_every: int = _help(
        "Batches between durable progress saves of the datastore build (a crash loses at most this many).", default=20
    )
    device: str = _help("'auto', 'cpu', 'cuda', 'cuda:1', ...", default="auto")
    dtype: str = _help(
        "Model dtype: 'auto' (bf16 on CUDA that supports it, else fp32), 'fp32', 'bf16', 'fp16'.", default="auto"
    )


@dataclass
class ProjectionConfig(_DictMixin):
    """Random projection of gradient features to d dimensions."""

    kind: str = _help("'sparse' (sparse JL, fast, default) or 'dense' (Rademacher, paper-faithful).", default="sparse")
    dims: list[int] = _help("Output dimensions; several may be built in one pass.", default_factory=lambda: [8192])
    seed: int = _help("Projection seed; the same seed gives the same matrix on every device.", default=0)
    sparsity: int = _help("Non-zeros per input coordinate for the sparse projector.", default=4)
    storage_dtype: str = _help(
        "On-disk feature dtype: 'float16' (default), 'float32', or 'int8' (each row scaled to ±127; half of fp16's "
        "size, and cosine scores ignore the per-row scale).",
        default="float16",
    )


@dataclass
class SelectionConfig(_DictMixin):
    """LESS step 3: scoring and top-k selection."""

    fraction: float | None = _help("Keep this fraction of the pool (default 0.05 when n is unset).", default=None)
    n: int | None = _help("Keep exactly this many rows.", default=None)
    aggregate: str = _help(
        "'mean_of_cosines' (the reference code, default) or 'cosine_of_mean' (the paper's formula).",
        default="mean_of_cosines",
    )
    dim: int | None = _help("Which projected dimension to score with (default: the largest built).", default=None)
    score_column: str = _help("Name of the score column added to the returned dataset.", default="less_score")
    block_rows: int = _help("Pool rows read from disk per scoring block.", default=65536)
