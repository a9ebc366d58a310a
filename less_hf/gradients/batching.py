"""Length-sorted batches with right padding (short rows never pay for long ones)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..tokenization import IGNORE_INDEX


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Yield lists of row indices, longest rows first, ``batch_size`` rows each (the last may be shorter).

    Longest first makes the first batch the most memory-hungry one, so an out-of-memory error shows at once.
    """
    for batch in BatchPlan(np.arange(len(lengths)), np.asarray(lengths, dtype=np.int64), batch_size):
        yield batch.tolist()


class BatchPlan:
    """Length-sorted batches of ``rows`` as one permutation (``order``) cut every ``batch_size`` rows: a plan of a
    pool of any size costs 8 bytes per row, not one Python list per batch.

    Args:
        rows: the row numbers to batch.
        lengths: each of those rows' token count.
        batch_size: rows per batch (the last may be shorter).
    """

    def __init__(self, rows: np.ndarray, lengths: np.ndarray, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        rows, lengths = np.asarray(rows, dtype=np.int64), np.asarray(lengths)
        if len(rows) > 1 and not (rows[1:] > rows[:-1]).all():  # ties go by row: sort by row first
            by_row = np.argsort(rows, kind="stable")
            rows, lengths = rows[by_row], lengths[by_row]
        self.order = rows[np.argsort(-lengths.astype(np.int64), kind="stable")]  # longest first, ties by row
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, k: int) -> np.ndarray:
        if not 0 <= k < len(self):
            raise IndexError(k)
        return self.order[k * self.batch_size : (k + 1) * self.batch_size]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[k] for k in range(len(self)))

    def pending(self, done: np.ndarray, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """The batches (numbers) process ``rank`` of ``world_size`` owns (every ``world_size``-th one) that hold a
        row not yet ``done``."""
        if not len(self.order):
            return np.zeros(0, dtype=np.int64)
        starts = np.arange(0, len(self.order), self.batch_size)
        all_done = np.logical_and.reduceat(np.asarray(done, dtype=bool)[self.order], starts)
        batches = np.arange(len(starts))
        return batches[(batches % world_size == rank) & ~all_done]


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
