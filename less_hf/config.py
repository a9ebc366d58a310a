"""Dataclass configs for every stage, with field help (ready for `transformers.HfArgumentParser`)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigError

Truncation = Literal["keep_completion", "right"]


def _help(
    text: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    aliases: tuple[str, ...] = (),
    **kwargs: Any,
) -> Any:
    """A dataclass field with help text, an optional range ``low ≤ value ≤ high`` (``open_*``: strict) and other
    names the CLI accepts for it (e.g. the `TrainingArguments` name of the same setting)."""
    metadata = {"help": text, "low": low, "high": high, "open_low": open_low, "open_high": open_high}
    metadata["aliases"] = aliases
    return field(metadata=metadata, **kwargs)


def _check_value(name: str, value: Any, hint: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` fits the annotation ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                _check_value(name, value, a)
                return
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{name}={value!r} fits none of {inner}.")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}={value!r}; choose one of {list(args)}.")
        return
    if origin is list:
        if not isinstance(value, list) or not value:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"{name} must be a non-empty list, got {value!r} (e.g. {name}=[{value!r}] / {flag} A B)."
            )
        for item in value:
            _check_value(f"{name} item", item, args[0] if args else Any)
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}.")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be a whole number, got {value!r}.")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}.")
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}.")


def _check_range(name: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if v is None or isinstance(v, (bool, str)):
            continue
        low, high = meta.get("low"), meta.get("high")
        if low is not None and (v <= low if meta.get("open_low") else v < low):
            raise ConfigError(f"{name} must be {'>' if meta.get('open_low') else '>='} {low}, got {v!r}.")
        if high is not None and (v >= high if meta.get("open_high") else v > high):
            raise ConfigError(f"{name} must be {'<' if meta.get('open_high') else '<='} {high}, got {v!r}.")


def check_config(config: Any) -> None:
    """Check every field of a config dataclass against its annotation (types, ``Literal`` choices) and range."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        _check_value(f.name, value, hints[f.name])
        _check_range(f.name, value, f.metadata)


class _DictMixin:
    def __post_init__(self) -> None:
        check_config(self)

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

    max_length: int = _help("Maximum tokens per row (prompt + completion).", default=512, low=1)
    truncation: Truncation = _help(
        "'keep_completion' (default): when a row is too long, cut the prompt from the left so the completion "
        "survives, then the completion from the right. 'right': cut from the right like TRL's SFTTrainer.",
        default="keep_completion",
    )


@dataclass
class WarmupConfig(_DictMixin):
    """LESS step 1: LoRA warmup on a random slice of the pool (paper defaults)."""

    fraction: float = _help("Fraction of the pool to warm up on.", default=0.05, low=0, high=1, open_low=True)
    num_rows: int | None = _help("Exact number of rows to warm up on (overrides fraction).", default=None, low=1)
    epochs: int = _help(
        "Warmup epochs; one checkpoint is saved per epoch.", default=4, low=1, aliases=("num_train_epochs",)
    )
    learning_rate: float = _help("Peak learning rate (linear decay).", default=2e-5, low=0, open_low=True)
    warmup_ratio: float = _help("Share of steps with linear lr warmup.", default=0.03, low=0, high=1, open_high=True)
    per_device_batch_size: int = _help(
        "Rows per device per micro-batch.", default=1, low=1, aliases=("per_device_train_batch_size",)
    )
    gradient_accumulation_steps: int = _help("Micro-batches per optimizer step (paper: 32).", default=32, low=1)
    lora_r: int = _help("LoRA rank.", default=128, low=1)
    lora_alpha: int = _help("LoRA alpha.", default=512, low=1)
    lora_dropout: float = _help("LoRA dropout.", default=0.1, low=0, high=1, open_high=True)
    target_modules: list[str] = _help(
        "Modules that get LoRA adapters.", default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    seed: int = _help("Seed for the warmup subset, LoRA init and data order.", default=0)
    max_length: int = _help("Maximum tokens per row.", default=512, low=1)
    bf16: bool | None = _help("Train in bf16 (default: when the device supports it).", default=None)
    logging_steps: int = _help("Log every N optimizer steps.", default=10, low=1)


@dataclass
class GradientConfig(_DictMixin):
    """LESS step 2: per-example gradient features at each checkpoint."""

    batch_size: int = _help("Rows per batched forward/backward.", default=16, low=1)
    max_length: int = _help("Maximum tokens per row.", default=512, low=1)
    truncation: Truncation = _help("See TokenizationConfig.truncation.", default="keep_completion")
    optimizer_transform: Literal["adam", "adam_reference", "adam_torch", "sgd"] = _help(
        "How pool gradients become features: 'adam' (the paper's bias-corrected update, eps inside the root: "
        "m̂/sqrt(v̂+eps), default), 'adam_reference' (the reference code: no bias correction, eps inside the root), "
        "'adam_torch' (torch's AdamW step, eps outside the root: m̂/(sqrt(v̂)+eps)) or 'sgd' (the plain gradient).",
        default="adam",
    )
    flush_every: int = _help(
        "Batches between durable progress saves of the datastore build (a crash loses at most this many).",
        default=20,
        low=1,
    )
    device: str = _help("'auto', 'cpu', 'cuda', 'cuda:1', ...", default="auto")
    dtype: Literal["auto", "fp32", "bf16", "fp16", "float32", "bfloat16", "float16"] = _help(
        "Model dtype: 'auto' (bf16 on CUDA that supports it, else fp32), 'fp32', 'bf16', 'fp16'.", default="auto"
    )


@dataclass
class ProjectionConfig(_DictMixin):
    """Random projection of gradient features to d dimensions."""

    kind: Literal["sparse", "dense"] = _help(
        "'sparse' (sparse JL, fast, default) or 'dense' (Rademacher, paper-faithful).", default="sparse"
    )
    dims: list[int] = _help(
        "Output dimensions; several may be built in one pass.",
        default_factory=lambda: [8192],
        low=1,
        aliases=("projection_dims",),
    )
    seed: int = _help(
        "Projection seed; the same seed gives the same matrix on every device.",
        default=0,
        aliases=("projection_seed",),
    )
    sparsity: int = _help("Non-zeros per input coordinate for the sparse projector.", default=4, low=1)
    storage_dtype: Literal["float16", "float32", "int8"] = _help(
        "On-disk feature dtype: 'float16' (default), 'float32', or 'int8' (each row scaled to ±127; half of fp16's "
        "size, and cosine scores ignore the per-row scale).",
        default="float16",
    )


@dataclass
class SelectionConfig(_DictMixin):
    """LESS step 3: scoring and top-k selection."""

    fraction: float | None = _help(
        "Keep this fraction of the pool (default 0.05 when n is unset).", default=None, low=0, high=1, open_low=True
    )
    n: int | None = _help("Keep exactly this many rows.", default=None, low=1)
    aggregate: Literal["mean_of_cosines", "cosine_of_mean"] = _help(
        "'mean_of_cosines' (the reference code, default) or 'cosine_of_mean' (the paper's formula).",
        default="mean_of_cosines",
    )
    dim: int | None = _help(
        "Which projected dimension to score with (default: the largest built).",
        default=None,
        low=1,
        aliases=("score_dim",),
    )
    score_column: str = _help("Name of the score column added to the returned dataset.", default="less_score")
    block_rows: int = _help("Pool rows read from disk per scoring block.", default=65536, low=1)


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
        low=0,
        high=1,
        open_low=True,
        open_high=True,
    )
    C: float = _help("Distance scale dividing the transport cost.", default=5.0, low=0, open_low=True)
    sigma: float = _help(
        "KDE bandwidth on unit vectors (kernel max(0, 1 - |x - x'|^2 / sigma^2)). 0 turns the KDE off (KNN-Uniform, "
        "the paper's G-infinity regulariser).",
        default=0.75,
        low=0,
    )
    k: int = _help("Nearest candidates per target example (the water-filling's horizon).", default=5000, low=1)
    kde_k: int = _help(
        "Nearest candidates per candidate for its KDE density (memory: 1024 x kde_k per block).", default=1000, low=1
    )
    sampling: Literal["with_replacement", "without_replacement", "top"] = _help(
        "'with_replacement' (the authors': n draws from p, duplicates possible), 'without_replacement' "
        "(Gumbel top-k on log p), or 'top' (the n highest-probability rows).",
        default="with_replacement",
    )
    exact_max_rows: int = _help(
        "Pools up to this size get an exact (flat) index; larger ones IVF-Flat.", default=50_000, low=1
    )
    nprobe: int = _help("IVF cells probed per query (large pools only).", default=10, low=1)
    features: Literal["less", "embeddings"] = _help(
        "'less' (the LESS gradient datastore of a warmup: pool Adam updates vs target gradients) or 'embeddings' "
        "(a sentence encoder, e.g. all-MiniLM-L6-v2).",
        default="less",
    )
    checkpoints: Literal["all", "last"] = _help(
        "LESS features: 'all' (every checkpoint's unit features scaled by sqrt of its lr weight and concatenated, so "
        "the cosine is the LESS-weighted sum of per-checkpoint cosines) or 'last'.",
        default="all",
    )
    score_column: str = _help("Name of the probability column added to the returned dataset.", default="tsds_score")
