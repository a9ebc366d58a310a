"""Completion-only loss, one mean per example."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..tokenization import IGNORE_INDEX


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy over each row's supervised tokens.

    Args:
        logits: ``(B, T, V)``.
        labels: ``(B, T)`` with ``-100`` on prompt and padding tokens (unshifted, as HF models take them).

    Returns:
        ``(losses, counts)``: ``(B,)`` per-row mean losses (0 where a row has no supervised token) and ``(B,)``
        supervised-token counts.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    counts = (shift_labels != IGNORE_INDEX).sum(dim=1)
    losses = token_loss.sum(dim=1) / counts.clamp(min=1)
    return losses, counts
