"""Per-example gradients the slow way: one row at a time, ``torch.autograd.grad`` over the LoRA parameters.

Each row's loss is its own mean next-token cross-entropy over its supervised (label != -100) tokens, computed here
from the logits with ``F.cross_entropy`` (not with less_hf's loss), so nothing is shared with the batched path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lora_parameters(model: torch.nn.Module, adapter_name: str = "default") -> list[tuple[str, torch.nn.Parameter]]:
    """Trainable parameters, keyed by the adapter-free name (``...q_proj.lora_A.weight``)."""
    return [(name.replace(f".{adapter_name}.", "."), p) for name, p in model.named_parameters() if p.requires_grad]


def loop_gradients(
    model: torch.nn.Module, rows: list[dict]
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """``({name: (N, *shape) gradient}, (N,) losses, (N,) supervised counts)`` with batch size 1.

    A row with no supervised token (after the causal shift) gets a zero gradient, loss 0 and count 0.
    """
    params = lora_parameters(model)
    grads: dict[str, list[torch.Tensor]] = {name: [] for name, _ in params}
    losses, counts = [], []
    device = next(model.parameters()).device
    for row in rows:
        ids = torch.as_tensor(row["input_ids"], device=device)[None]
        labels = torch.as_tensor(row["labels"], device=device)[None]
        target = labels[0, 1:]
        count = int((target != -100).sum())
        counts.append(count)
        if count == 0:
            losses.append(0.0)
            for name, p in params:
                grads[name].append(torch.zeros_like(p, dtype=torch.float32))
            continue
        with torch.enable_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
            loss = F.cross_entropy(logits, target, ignore_index=-100, reduction="mean")
            g = torch.autograd.grad(loss, [p for _, p in params])
        losses.append(float(loss.detach()))
        for (name, _), gi in zip(params, g):
            grads[name].append(gi.detach().float())
    stacked = {name: torch.stack(gs) for name, gs in grads.items()}
    return stacked, torch.tensor(losses), torch.tensor(counts)


def flatten(grads: dict[str, torch.Tensor], names: list[str] | None = None) -> torch.Tensor:
    """``(N, D)``: the per-parameter gradients concatenated in ``names`` order (default: sorted names)."""
    names = sorted(grads) if names is None else names
    return torch.cat([grads[n].flatten(start_dim=1) for n in names], dim=1)
