"""The `longest` baseline: response length in tokens (with a tokenizer) or characters."""

from __future__ import annotations

import pytest
from datasets import Dataset

from less_hf.errors import ConfigError
from less_hf.selection import LongestSelector, get_selector


def chat(prompt: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


POOL = Dataset.from_list(
    [
        chat("a very very long question that should not count", "one"),
        chat("q", "three words here"),
        chat("q", "a somewhat longer answer of seven words"),
        chat("q", "tie 1"),
        chat("q", "tie 2"),
    ]
)
TARGET = Dataset.from_list([chat("anything", "x")])


def test_longest_by_characters_of_the_response():
    selector = LongestSelector()
    out = selector.select(POOL, TARGET, n=3)
    assert selector.unit == "characters"
    assert selector.scores_["target"].tolist() == [3, 16, 39, 5, 5]
    assert [r["messages"][1]["content"] for r in out] == [
        "a somewhat longer answer of seven words",
        "three words here",
        "tie 1",
    ]
    assert out["longest_score"] == [39, 16, 5]


def test_longest_by_tokens(tokenizer):
    selector = LongestSelector(tokenizer)
    scores = selector.score(POOL, {"t": TARGET})["t"]
    expected = [len(tokenizer(r["messages"][1]["content"], add_special_tokens=False)["input_ids"]) for r in POOL]
    assert selector.unit == "tokens" and scores.tolist() == expected


def test_longest_whole_row_and_other_formats():
    assert LongestSelector(part="row").score(POOL, {"t": TARGET})["t"][0] == len(
        "a very very long question that should not count\none"
    )
    pc = Dataset.from_dict({"prompt": ["long long prompt", "p"], "completion": ["ab", "abcd"]})
    assert LongestSelector().select(pc, TARGET, n=1)["completion"] == ["abcd"]
    tok = Dataset.from_dict({"input_ids": [[1, 2, 3, 4], [1, 2, 3]], "labels": [[-100, -100, -100, 4], [-100, 2, 3]]})
    selector = LongestSelector()
    assert selector.score(tok, {"t": TARGET})["t"].tolist() == [1, 2] and selector.unit == "tokens"
    with pytest.raises(ConfigError, match="part"):
        LongestSelector(part="prompt")
    assert isinstance(get_selector("longest"), LongestSelector)
