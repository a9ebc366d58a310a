"""The quality benchmark's multiple-choice scorer: the prefix-cached fast path equals one full pass per option."""

from __future__ import annotations

import random

import pytest
import torch

from less_hf.evaluation.choices import encode_options, evaluate, option_logprobs, option_logprobs_reference

from conftest import make_model


def random_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words = "the cat dog sat ran on a mat blue red green sum of two and three is".split()
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(3, 40)))
        choices = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(2, 5))]
        choices = list(dict.fromkeys(choices)) + [f"option {i}"]  # distinct; lengths differ
        rows.append(
            {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": choices[0]}],
             "choices": choices, "answer": rng.randrange(len(choices))}
        )  # fmt: skip
    return rows


@pytest.mark.parametrize("max_length", [256, 24])  # 24 truncates long prompts (a different cut per option)
def test_prefix_cached_scores_equal_full_passes(tokenizer, max_length):
    model = make_model(len(tokenizer), seed=3).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for row in random_rows(12, seed=max_length):
        encs = encode_options(row, tokenizer, max_length)
        fast = option_logprobs(model, encs, pad)
        slow = option_logprobs_reference(model, encs)
        assert [n for _, n in fast] == [n for _, n in slow] and all(n > 0 for _, n in slow)
        torch.testing.assert_close(
            torch.tensor([s for s, _ in fast]), torch.tensor([s for s, _ in slow]), atol=1e-4, rtol=1e-5
        )


def test_evaluate_matches_reference(tokenizer):
    model = make_model(len(tokenizer), seed=4).eval()
    rows = random_rows(8, seed=1)
    fast, slow = evaluate(model, tokenizer, rows, 256), evaluate(model, tokenizer, rows, 256, reference=True)
    assert fast["accuracy"] == slow["accuracy"]
    assert fast["gold_loss"] == pytest.approx(slow["gold_loss"], abs=1e-5)
