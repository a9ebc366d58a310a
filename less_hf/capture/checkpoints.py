"""Find the warmup's checkpoints and their learning-rate weights η̄ᵢ."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingFileError
from .optimizer_state import (
    CAPTURE_DIR,
    STATE_FILE,
    OptimizerMoments,
    check_state_values,
    moments_from_hf_checkpoint,
)
from .sharded import checkpoint_optimizer_state, is_named_state, moments_from_named_state

_CKPT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class CheckpointInfo:
    """One warmup checkpoint.

    Attributes:
        path: the ``checkpoint-N`` folder.
        step: the optimizer step it was saved at.
        mean_lr: average learning rate over the steps since the previous checkpoint (η̄ᵢ before normalisation).
        captured: whether GradientCaptureCallback wrote its state here (else the plain optimizer file is used).
    """

    path: Path
    step: int
    mean_lr: float
    captured: bool

    @property
    def name(self) -> str:
        return self.path.name


def _mean_lr_from_trainer_state(path: Path, previous_step: int) -> float:
    """Average logged lr over (previous_step, step], from ``trainer_state.json`` (only logged steps are known)."""
    state_file = path / "trainer_state.json"
    if not state_file.exists():
        raise MissingFileError(
            f"{path} has no trainer_state.json (nor a less_hf capture), so its learning rates are unknown: it looks "
            "like a checkpoint whose save was interrupted. Delete that folder (or resume the warmup with "
            "`resume_from_checkpoint`) and run the same command again."
        )
    try:
        history = json.loads(state_file.read_text()).get("log_history", [])
    except ValueError as err:
        raise InputError(f"{state_file} is not valid JSON ({err}): delete {path} (an interrupted save?).") from None
    step = int(_CKPT.match(path.name).group(1))  # type: ignore[union-attr]
    lrs = [h["learning_rate"] for h in history if "learning_rate" in h and previous_step < h.get("step", -1) <= step]
    if not lrs:
        raise InputError(
            f"{state_file} logs no learning rate between steps {previous_step} and {step}: set logging_steps=1 in the "
            "warmup, or train with GradientCaptureCallback, which records every step's learning rate."
        )
    return float(np.mean(lrs))


def find_checkpoints(output_dir: str | os.PathLike) -> list[CheckpointInfo]:
    """List the ``checkpoint-N`` folders under a warmup's output dir, oldest first, with their mean lr."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise MissingFileError(f"Warmup output dir {output_dir} does not exist.")
    found = sorted(
        ((int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))),
    )
    if not found:
        raise MissingFileError(
            f"No checkpoint-N folders in {output_dir}. Run the warmup with save_strategy='epoch' "
            "(less_hf.warmup does)."
        )
    infos, previous = [], 0
    for step, path in found:
        state = path / CAPTURE_DIR / STATE_FILE
        if state.exists():
            try:
                mean_lr = float(json.loads(state.read_text())["mean_lr"])
            except (ValueError, KeyError, TypeError) as err:
                raise InputError(
                    f"{state} is unreadable ({type(err).__name__}: {err}); delete {path / CAPTURE_DIR} (to use the "
                    "Trainer's optimizer.pt) or the whole checkpoint, then run the same command again."
                ) from None
            infos.append(CheckpointInfo(path, step, mean_lr, True))
        else:
            infos.append(CheckpointInfo(path, step, _mean_lr_from_trainer_state(path, previous), False))
        previous = step
    return infos


def checkpoint_weights(checkpoints: list[CheckpointInfo]) -> np.ndarray:
    """η̄ᵢ normalised to sum to 1 (cosine scores are then on the same scale for any schedule)."""
    lrs = np.asarray([c.mean_lr for c in checkpoints], dtype=np.float64)
    if not np.all(np.isfinite(lrs)) or lrs.sum() <= 0:
        raise InputError(
            f"Checkpoint learning rates {lrs.tolist()} cannot be used as weights (they need a positive sum): the "
            "warmup took no step with a positive learning rate. Warm up on more rows or for more epochs."
        )
    return lrs / lrs.sum()


ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def check_checkpoint(checkpoint: CheckpointInfo) -> None:
    """Check, before any work, that a checkpoint holds a LoRA adapter with finite weights and usable Adam state.

    Raises a :class:`~less_hf.errors.LessHFError` naming the file and the fix: a missing adapter (a full fine-tune or
    an interrupted save), NaN/inf adapter weights, or optimizer state that is not plain Adam (SGD, AMSGrad, NaN/inf
    moments, a negative second moment, no step taken).
    """
    import torch

    path = checkpoint.path
    adapter = next((path / f for f in ADAPTER_FILES if (path / f).is_file()), None)
    if adapter is None or not (path / "adapter_config.json").is_file():
        raise MissingFileError(
            f"{path} has no LoRA adapter (adapter_model.safetensors + adapter_config.json). LESS needs a peft LoRA "
            "warmup; if this save was interrupted, delete the folder and run the same command again."
        )
    if adapter.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            weights = load_file(str(adapter))
        except (SafetensorError, OSError, ValueError) as err:
            raise InputError(f"{adapter} is unreadable ({err}): delete {path} and re-run its save.") from None
    else:
        weights = torch.load(adapter, map_location="cpu", weights_only=True)
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(
                f"{adapter}: {name} holds NaN/inf: the warmup diverged at or before {path.name}. Re-run the warmup "
                "(lower learning rate, fp32), or delete this checkpoint."
            )
    if checkpoint.captured:
        OptimizerMoments.load(path / CAPTURE_DIR)
    else:
        saved, where = checkpoint_optimizer_state(path)
        if is_named_state(saved):
            moments_from_named_state(saved, str(where))
        else:
            check_state_values(saved, where)


def load_moments(checkpoint: CheckpointInfo, model, shapes: dict) -> OptimizerMoments:
    """The checkpoint's Adam moments by parameter name (from the capture, else the Trainer's optimizer file),
    checked against the model's trainable shapes."""
    if checkpoint.captured:
        moments = OptimizerMoments.load(checkpoint.path / CAPTURE_DIR)
    else:
        moments = moments_from_hf_checkpoint(checkpoint.path, model)
    moments.check_matches(shapes)
    return moments
