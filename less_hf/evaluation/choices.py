"""Held-out evaluation: the gold answer's per-token loss, and multiple-choice accuracy by log-likelihood.

Each option is scored as the assistant's answer to the row's prompt: the summed log-probability of its supervised
tokens (the answer and the end-of-turn tokens the chat template adds). :func:`option_logprobs` runs the prompt,
which every option shares, once and then only the options' own tokens from its key/value cache;
:func:`option_logprobs_reference` runs every option's whole sequence (the obviously-correct version the test
compares against). Rows without options (no ``choices``/``answer`` columns) get the gold loss of their own
supervised tokens (the assistant turns, the completion, or every token of a ``text`` row).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..tokenization import IGNORE_INDEX, tokenize_row


def encode_options(row: dict, tokenizer, max_length: int) -> list[dict]:
    """Tokenize the row's prompt with each of ``row["choices"]`` as the assistant's answer."""
    prompt = row["messages"][:-1]
    return [
        tokenize_row({"messages": prompt + [{"role": "assistant", "content": c}]}, tokenizer, "messages",
                     max_length=max_length)
        for c in row["choices"]
    ]  # fmt: skip


def _sum_logprobs(logits: torch.Tensor, ids: list[int], labels: list[int], start: int = 0) -> tuple[float, int]:
    """Summed log-probability of the supervised tokens of one sequence, from its logits at positions
    ``start..len(ids)-1`` (``[len(ids) - start, V]``; positions before ``start`` must predict no supervised token)."""
    target = torch.tensor(labels[start + 1 :], device=logits.device)
    keep = target != IGNORE_INDEX
    logp = torch.log_softmax(logits[:-1][keep].float(), -1)  # only the rows that predict a supervised token
    picked = logp.gather(-1, target[keep].unsqueeze(-1)).squeeze(-1)
    return float(picked.sum()), int(keep.sum())


def _first_needed(labels: list[int]) -> int:
    """The first position whose logits predict a supervised token (``len(labels)`` when there is none)."""
    return next((i - 1 for i, t in enumerate(labels) if i > 0 and t != IGNORE_INDEX), len(labels))


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
    # the prompt's logits are needed only where they predict a supervised token: skip the LM head elsewhere
    start = min(shared - 1, *(_first_needed(e["labels"]) for e in encs))
    prefix = model(input_ids=torch.tensor([ids[0][:shared]], device=device), use_cache=True,
                   logits_to_keep=shared - start)  # fmt: skip
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
        out.append(_sum_logprobs(full, e["input_ids"], e["labels"], start))
    return out


def gold_loss(model, tokenizer, row: dict, max_length: int) -> float:
    """Mean per-token loss of a row's supervised tokens (any TRL format) under ``model``."""
    from ..tokenization import detect_format

    enc = tokenize_row(row, tokenizer, detect_format(list(row)), max_length=max_length)
    total, n = option_logprobs_reference(model, [enc])[0]
    if n == 0:
        raise InputError(
            f"A held-out row has no supervised token within max_length={max_length} (id {row.get('id', '?')!r}): "
            "give it an answer, or raise max_length."
        )
    return -total / n


def has_options(dataset) -> bool:
    """True when the rows carry multiple-choice options (``choices`` list and gold ``answer`` index)."""
    names = dataset.column_names if hasattr(dataset, "column_names") else list(dataset[0])
    return "choices" in names and "answer" in names


def evaluate(model, tokenizer, test, max_length: int, reference: bool = False) -> dict:
    """Gold-answer loss (and accuracy when rows carry options) over ``test``, with the per-row values.

    Returns:
        ``{"gold_loss": mean, "gold_losses": [per row], "accuracy": mean or None, "correct": [0/1 per row] or
        None}``. With options, the gold loss is that of ``choices[answer]`` as the assistant's answer and accuracy is
        the argmax of the summed option log-likelihoods.
    """
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    options = has_options(test)
    correct, gold_losses = [], []
    for row in test:
        if not options:
            gold_losses.append(gold_loss(model, tokenizer, row, max_length))
            continue
        encs = encode_options(row, tokenizer, max_length)
        scores = option_logprobs_reference(model, encs) if reference else option_logprobs(model, encs, pad)
        totals = [s for s, _ in scores]
        correct.append(int(int(np.argmax(totals)) == row["answer"]))
        gold, n = scores[row["answer"]]
        gold_losses.append(-gold / max(1, n))
    return {
        "gold_loss": float(np.mean(gold_losses)),
        "gold_losses": [float(x) for x in gold_losses],
        "accuracy": float(np.mean(correct)) if options else None,
        "correct": correct if options else None,
    }
