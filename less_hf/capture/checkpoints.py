"""Find the warmup's checkpoints and their learning-rate weights η̄ᵢ."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .optimizer_state import CAPTURE_DIR, STATE_FILE

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
        raise FileNotFoundError(f"{path} has no trainer_state.json, so its learning rates are unknown.")
    history = json.loads(state_file.read_text()).get("log_history", [])
    step = int(_CKPT.match(path.name).group(1))  # type: ignore[union-attr]
    lrs = [h["learning_rate"] for h in history if "learning_rate" in h and previous_step < h.get("step", -1) <= step]
    if not lrs:
        raise ValueError(
            f"{state_file} logs no learning rate between steps {previous_step} and {step}: set logging_steps=1 in the "
            "warmup, or train with GradientCaptureCallback, which records every step's learning rate."
        )
    return float(np.mean(lrs))


def find_checkpoints(output_dir: str | os.PathLike) -> list[CheckpointInfo]:
    """List the ``checkpoint-N`` folders under a warmup's output dir, oldest first, with their mean lr."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise FileNotFoundError(f"Warmup output dir {output_dir} does not exist.")
    found = sorted(
        ((int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))),
    )
    if not found:
        raise FileNotFoundError(
            f"No checkpoint-N folders in {output_dir}. Run the warmup with save_strategy='epoch' "
            "(less_hf.warmup does)."
        )
    infos, previous = [], 0
    for step, path in found:
        state = path / CAPTURE_DIR / STATE_FILE
        if state.exists():
            mean_lr = float(json.loads(state.read_text())["mean_lr"])
            infos.append(CheckpointInfo(path, step, mean_lr, True))
        else:
            infos.append(CheckpointInfo(path, step, _mean_lr_from_trainer_state(path, previous), False))
        previous = step
    return infos


def checkpoint_weights(checkpoints: list[CheckpointInfo]) -> np.ndarray:
    """η̄ᵢ normalised to sum to 1 (cosine scores are then on the same scale for any schedule)."""
    lrs = np.asarray([c.mean_lr for c in checkpoints], dtype=np.float64)
    if not np.all(np.isfinite(lrs)) or lrs.sum() <= 0:
        raise ValueError(
            f"Checkpoint learning rates {lrs.tolist()} cannot be used as weights (they need a positive sum): the "
            "warmup took no step with a positive learning rate. Warm up on more rows or for more epochs."
        )
    return lrs / lrs.sum()
