"""Exact per-example gradients of LoRA weights from one batched forward/backward.

For a linear layer ``y = x Wᵀ`` the gradient of ``Σᵢ Lᵢ`` w.r.t. ``W`` is ``Σᵢ Σₜ ∂Lᵢ/∂yᵢₜ ⊗ xᵢₜ``. Because rows of
a batch do not interact (eval mode, right padding, causal attention), ``∂(Σⱼ Lⱼ)/∂yᵢₜ = ∂Lᵢ/∂yᵢₜ``, so keeping the
batch index in that sum gives every row's own gradient exactly. Hooks record each LoRA layer's input and output
gradient; an ``einsum`` per layer does the rest. No per-example backward, no Python loop over rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..capture.optimizer_state import canonical_name
from ..errors import InputError
from ..tokenization import IGNORE_INDEX
from .losses import per_example_loss


def trainable_linear_modules(model: nn.Module, adapter_name: str = "default") -> dict[str, nn.Linear]:
    """Map canonical weight names to the ``nn.Linear`` modules that own every trainable parameter.

    Raises:
        ValueError: if a trainable parameter is not the weight of a plain ``nn.Linear`` (e.g. a LoRA embedding,
            DoRA magnitudes, ``modules_to_save`` norms or trainable biases), which the hook path cannot cover.
    """
    modules: dict[str, nn.Linear] = {}
    covered: set[str] = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.weight.requires_grad:
            modules[canonical_name(f"{mod_name}.weight", adapter_name)] = module
            covered.add(f"{mod_name}.weight")
    uncovered = [n for n, p in model.named_parameters() if p.requires_grad and n not in covered]
    if uncovered:
        raise InputError(
            f"less_hf computes per-example gradients for LoRA linear weights only, but these parameters are also "
            f"trainable: {uncovered[:4]} ({len(uncovered)} in all). Use a LoRA config without bias, DoRA, "
            "embedding targets or modules_to_save, or freeze those parameters."
        )
    if not modules:
        raise InputError("The model has no trainable nn.Linear weights; wrap it with a peft LoRA adapter first.")
    return modules


# Causal LMs whose logits are exactly ``lm_head(last hidden state)`` (no scaling or soft-capping after the head).
_PLAIN_HEAD_MODELS = {"llama", "mistral", "qwen2", "qwen3", "phi3", "olmo", "olmo2", "smollm3"}


def _decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(decoder, lm_head)`` when the head can be applied to supervised positions only, else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if getattr(config, "model_type", None) not in _PLAIN_HEAD_MODELS:
        return None
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings()
    if decoder is None or head is None:
        return None
    return decoder, head


class PerExampleGradients:
    """Callable that returns ``{name: (B, out, in) gradient}`` for a batch, plus per-row losses and token counts.

    Args:
        model: a peft LoRA model in eval mode (dropout off).
        adapter_name: the adapter whose weights are differentiated.
    """

    def __init__(self, model: nn.Module, adapter_name: str = "default") -> None:
        self.model = model
        self.modules = trainable_linear_modules(model, adapter_name)
        self.shapes = {name: m.weight.shape for name, m in self.modules.items()}
        self._decoder_and_head = _decoder_and_head(model)

    def _losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row mean completion losses; the LM head runs only where a label is supervised when that is safe."""
        split = self._decoder_and_head
        if split is None:
            logits = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
            ).logits
            return per_example_loss(logits, batch["labels"])
        decoder, head = split
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)[0]
        targets = batch["labels"][:, 1:]
        supervised = targets != IGNORE_INDEX
        logits = head(hidden[:, :-1][supervised]).float()  # (n_supervised, V) instead of (B, T, V)
        token_loss = F.cross_entropy(logits, targets[supervised], reduction="none")
        rows = supervised.nonzero()[:, 0]
        counts = supervised.sum(dim=1)
        sums = token_loss.new_zeros(len(counts)).index_add(0, rows, token_loss)
        return sums / counts.clamp(min=1), counts

    @property
    def num_params(self) -> int:
        """D: the number of differentiated parameters."""
        return sum(s.numel() for s in self.shapes.values())

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        inputs: dict[str, torch.Tensor] = {}
        out_grads: dict[str, torch.Tensor] = {}
        handles = []

        def make_hook(name: str):
            def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
                inputs[name] = args[0].detach()

                def grad_hook(grad: torch.Tensor) -> None:
                    out_grads[name] = grad.detach()

                output.register_hook(grad_hook)

            return hook

        for name, module in self.modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        try:
            losses, counts = self._losses(batch)
            params = [m.weight for m in self.modules.values()]
            torch.autograd.grad(losses.sum(), params)
        finally:
            for handle in handles:
                handle.remove()
        grads = {}
        for name in self.modules:
            x, gy = inputs.pop(name), out_grads.pop(name)
            grads[name] = torch.einsum("bto,bti->boi", gy.float(), x.float())
        return grads, losses.detach(), counts
