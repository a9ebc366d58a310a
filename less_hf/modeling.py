"""Load the base model and swap in each warmup checkpoint's LoRA weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

from .errors import InputError, MissingFileError

logger = logging.get_logger(__name__)

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' → the current CUDA device when there is one, else CPU."""
    if device == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' → bf16 on a CUDA device that supports it, fp32 otherwise."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise InputError(f"Unknown dtype {dtype!r}; choose 'auto' or one of {sorted(_DTYPES)}.")
    return _DTYPES[dtype]


def base_model_of(checkpoint: str | os.PathLike) -> str:
    """The base model a LoRA checkpoint was trained from (from the capture, else adapter_config.json)."""
    checkpoint = Path(checkpoint)
    state = checkpoint / "less_hf" / "state.json"
    if state.exists():
        base = json.loads(state.read_text()).get("base_model_name_or_path")
        if base:
            return base
    config = checkpoint / "adapter_config.json"
    if config.exists():
        base = json.loads(config.read_text()).get("base_model_name_or_path")
        if base:
            return base
    if not config.exists():
        raise InputError(
            f"{checkpoint} holds no LoRA adapter (no adapter_config.json): LESS needs a peft LoRA warmup, not a full "
            "fine-tune. Train with peft_config=LoraConfig(...) (less_hf.warmup does), or, if the save was "
            "interrupted, delete that checkpoint folder."
        )
    raise InputError(
        f"Cannot tell which base model {checkpoint} was trained from: pass base_model=... (--base_model) explicitly."
    )


def load_tokenizer(path: str):
    """Load a fast tokenizer with a pad token (falls back to EOS)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_peft_model(base: str, checkpoint: str | os.PathLike, device: torch.device, dtype: torch.dtype):
    """Base model + the checkpoint's adapter, trainable LoRA weights, eval mode (dropout off)."""
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    try:
        model = PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True)
    except (RuntimeError, ValueError, KeyError) as err:
        raise InputError(
            f"The LoRA adapter in {checkpoint} does not fit the base model {base} ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0][:300]}). Was the warmup run on another model? Pass the warmup's "
            "base model (base_model=... / --base_model)."
        ) from err
    model.to(device)
    model.eval()
    return model


def swap_adapter_weights(model, checkpoint: str | os.PathLike) -> None:
    """Load another checkpoint's LoRA weights into the same peft model (same config), in place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    checkpoint = Path(checkpoint)
    path = checkpoint / "adapter_model.safetensors"
    if not path.exists():
        raise MissingFileError(f"{checkpoint} has no adapter_model.safetensors (is it a peft LoRA checkpoint?).")
    try:
        result = set_peft_model_state_dict(model, load_file(str(path)))
    except RuntimeError as err:
        raise InputError(
            f"{path} does not fit the loaded model ({str(err).strip().splitlines()[0][:300]}): every checkpoint of "
            "a warmup must share one base model and LoRA config."
        ) from err
    if getattr(result, "unexpected_keys", None):
        raise InputError(f"{path} has weights this model's adapter does not: {result.unexpected_keys[:3]}")
    model.eval()
