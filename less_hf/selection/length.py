"""Length baseline: keep the rows with the longest responses (target-independent)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..tokenization import detect_format
from .base import Selector, as_target_dict
from .features import _content, row_text

PARTS = ("completion", "row")
UNITS = ("tokens", "characters")


def completion_text(row: dict[str, Any], fmt: str) -> str:
    """The response part of a row: the assistant turns of ``messages``, the ``completion``, or (for ``text`` rows,
    which have no prompt/response split) the whole text."""
    if fmt == "messages":
        return "\n".join(str(m.get("content", "")) for m in row["messages"] if m.get("role") == "assistant")
    if fmt == "prompt_completion":
        return _content(row["completion"])
    return row_text(row, fmt)


class LongestSelector(Selector):
    """The rows with the longest responses, whatever the target: a strong, cheap baseline.

    Zhao et al. 2024 ("Long Is More for Alignment", arXiv 2402.04833) select the 1,000 rows with the longest
    responses and beat LIMA and AlpaGasus; Xia et al. 2024 ("Rethinking Data Selection at Scale", arXiv 2410.09335)
    find that filtering by token length is a stable improvement over random selection at million-row scale. The
    score is the length, so every target gets the same ranking; ties go to the earlier row.

    Args:
        tokenizer: a tokenizer, or a model folder / Hub id to load one from: length in tokens (no special tokens).
            ``None``: length in characters.
        part: ``"completion"`` (the response: assistant turns or the ``completion`` column; the whole text for
            ``text`` rows; labelled tokens for tokenized rows) or ``"row"`` (prompt and response).
    """

    score_column = "longest_score"

    def __init__(self, tokenizer: Any = None, part: str = "completion") -> None:
        if part not in PARTS:
            raise ConfigError(f"part={part!r}; choose one of {PARTS}.")
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            self.tokenizer_path = str(tokenizer)
            tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
        else:
            self.tokenizer_path = getattr(tokenizer, "name_or_path", None)
        self._tokenizer = tokenizer
        self.part = part
        self.unit = "characters" if tokenizer is None else "tokens"

    def lengths(self, pool) -> np.ndarray:
        """``(len(pool),)`` float lengths of the rows' responses (or whole rows), in :attr:`unit`."""
        fmt = detect_format(pool.column_names)
        if fmt == "tokenized":  # already tokens, whatever the tokenizer
            self.unit = "tokens"
            if self.part == "row" or "labels" not in pool.column_names:
                return np.asarray([len(ids) for ids in pool["input_ids"]], dtype=np.float64)
            return np.asarray([sum(t != -100 for t in labels) for labels in pool["labels"]], dtype=np.float64)
        self.unit = "characters" if self._tokenizer is None else "tokens"
        texts = [completion_text(r, fmt) if self.part == "completion" else row_text(r, fmt) for r in pool]
        if self._tokenizer is None:
            return np.asarray([len(t) for t in texts], dtype=np.float64)
        ids = self._tokenizer(texts, add_special_tokens=False)["input_ids"]
        return np.asarray([len(i) for i in ids], dtype=np.float64)

    def score(self, pool, targets: Any) -> dict[str, np.ndarray]:
        named, _ = as_target_dict(targets)
        lengths = self.lengths(pool)
        return {name: lengths.copy() for name in named}
