"""Multiple-choice evaluation for the quality benchmark: accuracy by log-likelihood and the gold answer's loss.

Each option is scored as the assistant's answer to the row's prompt: the summed log-probability of its supervised
tokens (the answer and the end-of-turn tokens the chat template adds). :func:`option_logprobs` runs the prompt,
which every option shares, once and then only the options' own tokens from its key/value cache;
:func:`option_logprobs_reference` runs every option's whole sequence (the obviously-correct version the test
compares against).
"""

from __future__ import annotations

import numpy as np
import torch

from less_hf.tokenization import IGNORE_INDEX, tokenize_row


def encode_options(row: dict, tokenizer, max_length: int) -> list[dict]:
    """Tokenize the row's prompt with each of ``row["choices"]`` as the assistant's answer."""
    prompt = row["messages"][:-1]
    return [
        tokenize_row({"messages": prompt + [{"role": "assistant", "content": c}]}, tokenizer, "messages",
                     max_length=max_length)
        for c in row["choices"]
    ]  # fmt: skip


def _sum_logprobs(logits: torch.Tensor, ids: list[int], labels: list[int]) -> tuple[float, int]:
    """Summed log-probability of the supervised tokens of one sequence, from its logits ``[len(ids), V]``."""
    target = torch.tensor(labels[1:], device=logits.device)
    logp = torch.log_softmax(logits[:-1].float(), -1)
    keep = target != IGNORE_INDEX
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return float((picked * keep).sum()), int(keep.sum())


@torch.no_grad()
def option_logprobs_reference(model, encs: list[dict]) -> list[tuple[float, int]]:
    """(summed log-prob, supervised tokens) per option, one full forward pass per option."""
    device = next(model.parameters()).device
    out = []
    for e in encs:
        logits = model(input_ids=torch.tensor([e["input_ids"]], device=device)).logits[0]
        out.append(_sum_logprobs(logits, e["input_ids"], e["labels"]))
    return out


@torch.no_grad()
def option_logprobs(model, encs: list[dict], pad_id: int = 0) -> list[tuple[float, int]]:
    """Same as :func:`option_logprobs_reference`, running the shared prefix once (cached) and the options batched."""
    device = next(model.parameters()).device
    ids = [e["input_ids"] for e in encs]
    shared = 0
    while all(len(s) > shared + 1 for s in ids) and len({s[shared] for s in ids}) == 1:
        shared += 1  # every option keeps at least one token of its own after the shared prefix
    if shared == 0:
        return option_logprobs_reference(model, encs)
    prefix = model(input_ids=torch.tensor([ids[0][:shared]], device=device), use_cache=True)
    cache = prefix.past_key_values
    cache.batch_repeat_interleave(len(encs))
    tails = [s[shared:] for s in ids]
    width = max(len(t) for t in tails)
    tail_ids = torch.tensor([t + [pad_id] * (width - len(t)) for t in tails], device=device)
    mask = torch.tensor([[1] * (shared + len(t)) + [0] * (width - len(t)) for t in tails], device=device)
    logits = model(input_ids=tail_ids, attention_mask=mask, past_key_values=cache).logits
    out = []
    for i, e in enumerate(encs):
        full = torch.cat([prefix.logits[0], logits[i, : len(tails[i])]])
        out.append(_sum_logprobs(full, e["input_ids"], e["labels"]))
    return out


def evaluate(model, tokenizer, test, max_length: int, reference: bool = False) -> dict:
    """Accuracy (argmax of summed option log-likelihood) and mean per-token loss of the gold answer over ``test``."""
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    correct, gold_losses = 0, []
    for row in test:
        encs = encode_options(row, tokenizer, max_length)
        scores = option_logprobs_reference(model, encs) if reference else option_logprobs(model, encs, pad)
        totals = [s for s, _ in scores]
        correct += int(int(np.argmax(totals)) == row["answer"])
        gold, n = scores[row["answer"]]
        gold_losses.append(-gold / max(1, n))
    return {"accuracy": correct / len(test), "gold_loss": float(np.mean(gold_losses))}
