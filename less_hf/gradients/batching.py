"""Length-sorted batches with right padding (short rows never pay for long ones)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ..errors import InputError
from ..tokenization import IGNORE_INDEX


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Yield lists of row indices, longest rows first, ``batch_size`` rows each (the last may be shorter).

    Longest first makes the first batch the most memory-hungry one, so an out-of-memory error shows at once.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def collate(rows: Sequence[dict], pad_token_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids``/``labels`` into tensors with an attention mask.

    Right padding keeps every real token's position and, under causal attention, no real token sees a pad token, so
    each row's loss and gradient are exactly those of the row alone.
    """
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n] = torch.as_tensor(row["input_ids"])
        labels[i, :n] = torch.as_tensor(row["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}
