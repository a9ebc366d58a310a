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


@dataclass
class TSDSConfig(_DictMixin):
    """TSDS (Liu et al. 2024): optimal-transport alignment to the targets plus a KDE diversity regulariser.

    Defaults are the authors' code's (α = 0.5, C = 5, σ = 0.75, up to 5,000 neighbours per target, 1,000 for the
    KDE; IVF-Flat with nlist ≈ √N/2 and nprobe = 10 on large pools).
    """

    alpha: float = _help(
        "Weight of the transport (alignment) term, in (0, 1); the diversity term gets 1 - alpha. Smaller alpha "
        "spreads the mass over more candidates (other published runs use 0.01).",
        default=0.5,
    )
    C: float = _help("Distance scale dividing the transport cost.", default=5.0)
    sigma: float = _help(
        "KDE bandwidth on unit vectors (kernel max(0, 1 - |x - x'|^2 / sigma^2)). 0 turns the KDE off (KNN-Uniform, "
        "the paper's G-infinity regulariser).",
        default=0.75,
    )
    k: int = _help("Nearest candidates per target example (the water-filling's horizon).", default=5000)
    kde_k: int = _help(
        "Nearest candidates per candidate for its KDE density (memory: 1024 x kde_k per block).", default=1000
    )
    sampling: str = _help(
        "'with_replacement' (the authors': n draws from p, duplicates possible), 'without_replacement' "
        "(Gumbel top-k on log p), or 'top' (the n highest-probability rows).",
        default="with_replacement",
    )
    exact_max_rows: int = _help(
        "Pools up to this size get an exact (flat) index; larger ones IVF-Flat.", default=50_000
    )
    nprobe: int = _help("IVF cells probed per query (large pools only).", default=10)
    features: str = _help(
        "'less' (the LESS gradient datastore of a warmup: pool Adam updates vs target gradients) or 'embeddings' "
        "(a sentence encoder, e.g. all-MiniLM-L6-v2).",
        default="less",
    )
    checkpoints: str = _help(
        "LESS features: 'all' (every checkpoint's unit features scaled by sqrt of its lr weight and concatenated, so "
        "the cosine is the LESS-weighted sum of per-checkpoint cosines) or 'last'.",
        default="all",
    )
    score_column: str = _help("Name of the probability column added to the returned dataset.", default="tsds_score")
