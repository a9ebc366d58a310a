"""Rows in TRL's dataset formats → token ids and completion-only labels.

The same function feeds the warmup training and the gradient features, so the loss whose gradient LESS takes is
exactly the loss the warmup optimised. Supported formats (as TRL names them):

- ``messages``: a chat; every assistant turn (content plus the template's end-of-turn tokens) is supervised.
- ``prompt`` + ``completion``: strings, or lists of chat messages (conversational); the completion is supervised.
- ``text``: plain text; every token is supervised (language modelling).

Chat rows go through the tokenizer's chat template. Supervised spans are found on the rendered string and mapped to
tokens through the fast tokenizer's offsets, so BPE merges across a turn boundary cannot shift the mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging

from .errors import InputError

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100
FORMATS = ("messages", "prompt_completion", "text", "tokenized")
TRUNCATIONS = ("keep_completion", "right")
_SENTINEL = "LESSHFCONTENTSENTINEL"


def detect_format(column_names: Sequence[str]) -> str:
    """Return which TRL format a dataset uses, from its column names.

    Raises:
        ValueError: when no supported column set is present; the message lists what is accepted.
    """
    cols = set(column_names)
    if "messages" in cols:
        return "messages"
    if {"prompt", "completion"} <= cols:
        return "prompt_completion"
    if "text" in cols:
        return "text"
    if "input_ids" in cols:
        return "tokenized"
    raise InputError(
        f"Cannot tell the dataset format from its columns {sorted(cols)}. less_hf accepts TRL's formats: a "
        "'messages' column (chat), 'prompt' + 'completion' columns, or a 'text' column; or tokenized rows "
        "('input_ids', optional 'labels' with -100 on unsupervised tokens, optional 'attention_mask'). Rename your "
        "columns (e.g. `dataset.rename_column('conversations', 'messages')`)."
    )


FORMAT_COLUMNS = {
    "messages": ["messages"],
    "prompt_completion": ["prompt", "completion"],
    "text": ["text"],
    "tokenized": ["input_ids", "labels", "attention_mask"],
}


def feature_columns(dataset, extra: Sequence[str] = ()) -> list[str]:
    """The columns whose content decides a row's tokens (its format's columns), plus ``id`` and any ``extra`` ones
    present: what a content key of the rows must cover."""
    columns = [c for c in FORMAT_COLUMNS[detect_format(dataset.column_names)] if c in dataset.column_names]
    return columns + [c for c in ("id", *extra) if c in dataset.column_names and c not in columns]


def row_ids(dataset) -> list[str]:
    """Row ids: the dataset's ``id`` column when it has one, else the row index."""
    if "id" in dataset.column_names:
        return [str(i) for i in dataset["id"]]
    return [str(i) for i in range(len(dataset))]


def iter_row_ids(dataset, batch_size: int = 1 << 16):
    """:func:`row_ids` a batch at a time (lists of at most ``batch_size`` ids): a large pool's ids are never all
    held as Python strings at once."""
    n = len(dataset)
    if "id" not in dataset.column_names:
        for lo in range(0, n, batch_size):
            yield [str(i) for i in range(lo, min(n, lo + batch_size))]
        return
    for batch in dataset.select_columns(["id"]).with_format("arrow").iter(batch_size=batch_size):
        yield [str(i) for i in batch.column(0).to_pylist()]


def ids_at(dataset, rows) -> list[str]:
    """The :func:`row_ids` of the given rows only."""
    rows = [int(i) for i in rows]
    if "id" not in dataset.column_names or not rows:
        return [str(i) for i in rows]
    return [str(i) for i in dataset.select_columns(["id"])[rows]["id"]]


def _render_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(
            "This row is a chat (list of messages) but the tokenizer has no chat template. Set "
            "`tokenizer.chat_template`, or give the data as plain 'prompt'/'completion' strings or 'text'."
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _chat_spans(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], supervised_from: int = 0
) -> tuple[str, list[tuple[int, int]]]:
    """Render a chat; return the string and the character spans of supervised assistant turns.

    Only assistant turns at index >= ``supervised_from`` are supervised.
    """
    spans: list[tuple[int, int]] = []
    for k, message in enumerate(messages):
        if message.get("role") != "assistant" or k < supervised_from:
            continue
        upto = _render_chat(tokenizer, messages[: k + 1], generation_prompt=False)
        if k:
            before = _render_chat(tokenizer, messages[:k], generation_prompt=True)
        else:  # a leading assistant turn: chat templates refuse an empty conversation, so find its header instead
            probe = _render_chat(tokenizer, [{**message, "content": _SENTINEL}], generation_prompt=False)
            before = probe[: max(probe.find(_SENTINEL), 0)]
            before = before if upto.startswith(before) else ""
        if not upto.startswith(before):
            raise InputError(
                "The chat template does not render a conversation as a prefix of its continuation, so the assistant "
                "turns cannot be located. Give the data as 'prompt'/'completion' instead."
            )
        spans.append((len(before), len(upto)))
    full = _render_chat(tokenizer, messages, generation_prompt=False)
    return full, spans


def render_row(
    row: dict[str, Any], tokenizer: PreTrainedTokenizerBase, fmt: str
) -> tuple[str, list[tuple[int, int]], bool]:
    """Render one row to text; return (text, supervised character spans, add_special_tokens)."""
    eos = tokenizer.eos_token or ""
    if fmt == "messages":
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise InputError(
                f"'messages' must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r:.80}"
            )
        text, spans = _chat_spans(tokenizer, messages)
        return text, spans, False
    if fmt == "prompt_completion":
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, list):
            if not isinstance(completion, list):
                raise InputError("Conversational 'prompt' (a list of messages) needs a conversational 'completion'.")
            text, spans = _chat_spans(tokenizer, prompt + completion, supervised_from=len(prompt))
            return text, spans, False
        text = prompt + completion
        if eos and not text.endswith(eos):
            text += eos
        return text, [(len(prompt), len(text))], True
    if fmt == "text":
        text = row["text"]
        if eos and not text.endswith(eos):
            text += eos
        return text, [(0, len(text))], True
    raise InputError(f"Unknown format {fmt!r}; expected one of {FORMATS}.")


def _tokenized_row(row: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[bool]]:
    """Token ids and supervision of an already tokenized row: ``labels`` != -100 (every token without ``labels``);
    positions with ``attention_mask`` 0 (padding) are dropped."""
    ids = list(row["input_ids"])
    labels = row.get("labels")
    supervised = [True] * len(ids) if labels is None else [int(label) != IGNORE_INDEX for label in labels]
    if len(supervised) != len(ids):
        raise InputError(f"'labels' has {len(supervised)} entries but 'input_ids' has {len(ids)}.")
    mask = row.get("attention_mask")
    if mask is not None:
        if len(mask) != len(ids):
            raise InputError(f"'attention_mask' has {len(mask)} entries but 'input_ids' has {len(ids)}.")
        keep = [i for i, m in enumerate(mask) if m]
        ids, supervised = [ids[i] for i in keep], [supervised[i] for i in keep]
    vocab = len(tokenizer)
    bad = next((t for t in ids if not 0 <= int(t) < vocab), None)
    if bad is not None:
        raise InputError(
            f"token id {bad} is outside the vocabulary of the warmup's tokenizer ({vocab} tokens): these rows were "
            "tokenized with another tokenizer. Tokenize them with the base model's tokenizer, or pass text rows."
        )
    return [int(t) for t in ids], supervised


def tokenize_row(
    row: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    fmt: str,
    max_length: int = 512,
    truncation: str = "keep_completion",
) -> dict[str, Any]:
    """Tokenize one row into ``input_ids``, ``labels`` (prompt tokens = -100), ``num_supervised`` and ``truncated``.

    ``num_supervised`` counts the labels the model can actually predict (a label at position 0 has no context and
    is dropped by the causal shift). A row with ``num_supervised == 0`` has no loss and must never be selected.
    ``truncated`` says whether the row was longer than ``max_length``.
    """
    if truncation not in TRUNCATIONS:
        raise InputError(f"truncation={truncation!r} is not one of {TRUNCATIONS}.")
    if fmt == "tokenized":
        ids, supervised = _tokenized_row(row, tokenizer)
    else:
        text, spans, add_special = render_row(row, tokenizer, fmt)
        enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        # special tokens added by the tokenizer (e.g. BOS) have empty (0, 0) offsets: never supervised
        supervised = [end > start and any(s <= start < e for s, e in spans) for start, end in enc["offset_mapping"]]
    truncated = len(ids) > max_length
    if truncated:
        if truncation == "keep_completion":
            first = next((i for i, s in enumerate(supervised) if s), len(ids))
            cut = min(len(ids) - max_length, first)
            ids, supervised = ids[cut:], supervised[cut:]
        ids, supervised = ids[:max_length], supervised[:max_length]
    labels = [tok if sup else IGNORE_INDEX for tok, sup in zip(ids, supervised)]
    num_supervised = sum(1 for lab in labels[1:] if lab != IGNORE_INDEX)
    return {"input_ids": ids, "labels": labels, "num_supervised": num_supervised, "truncated": truncated}


def _check_fields(row: dict[str, Any], fmt: str) -> None:
    """A clear error for a row whose format columns are missing or of the wrong type."""
    if fmt == "tokenized":
        ids = row.get("input_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(t, int) for t in ids):
            raise InputError(f"'input_ids' must be a non-empty list of token ids, got {str(ids)[:80]}.")
        return
    fields = {"messages": ("messages",), "prompt_completion": ("prompt", "completion"), "text": ("text",)}[fmt]
    for name in fields:
        value = row.get(name)
        if value is None:
            raise InputError(f"column {name!r} is empty (None); every row needs it in the {fmt!r} format.")
        if not isinstance(value, (str, list)):
            raise InputError(
                f"column {name!r} holds a {type(value).__name__}; expected a string or a list of messages."
            )
        if isinstance(value, list):
            for i, message in enumerate(value):
                if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                    raise InputError(f"{name}[{i}] is not a message with a 'role' string: {str(message)[:80]}")
                if not isinstance(message.get("content"), str):
                    raise InputError(
                        f"{name}[{i}] (role {message['role']!r}) has content {message.get('content')!r}; every "
                        "message needs a string content (use '' for an empty one)."
                    )


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase, truncation: str) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(
            "less_hf needs a fast tokenizer (offsets); load it with `AutoTokenizer.from_pretrained(...)`."
        )
    if truncation not in TRUNCATIONS:
        raise InputError(f"truncation={truncation!r} is not one of {TRUNCATIONS}.")


def _row_tokenizer(dataset, tokenizer, max_length: int, truncation: str, desc: str):
    """``one(row, index)``: :func:`tokenize_row` of one row of ``dataset``, with a bad row named in the error."""
    fmt = detect_format(dataset.column_names)
    _check_tokenizer(tokenizer, truncation)
    has_id = "id" in dataset.column_names

    def one(row: dict[str, Any], index: int) -> dict[str, Any]:
        try:
            _check_fields(row, fmt)
            return tokenize_row(row, tokenizer, fmt, max_length=max_length, truncation=truncation)
        except (ValueError, TypeError, KeyError) as err:
            where = f"row {index}" + (f" (id {row['id']!r})" if has_id else "")
            raise InputError(f"{desc}: {where}: {err}") from err

    return one


def _warn_truncated(desc: str, n_truncated: int, n_rows: int, max_length: int, truncation: str) -> None:
    if n_truncated:
        how = "the prompt was cut from the left" if truncation == "keep_completion" else "cut from the right"
        logger.warning(
            "%s: %d of %d rows are longer than max_length=%d tokens and were truncated (%s); raise max_length to "
            "keep them whole.",
            desc,
            n_truncated,
            n_rows,
            max_length,
            how,
        )


def tokenize_dataset(
    dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 512,
    truncation: str = "keep_completion",
    desc: str = "Tokenizing",
):
    """Tokenize a `datasets.Dataset` in any TRL format; returns a new in-memory dataset with only the token columns
    (for the warmup's rows and target tasks; a pool of any size goes through :class:`TokenizedRows`)."""
    one = _row_tokenizer(dataset, tokenizer, max_length, truncation, desc)
    out = dataset.map(
        one,
        with_indices=True,
        remove_columns=dataset.column_names,
        keep_in_memory=True,  # no cache file: safe when several processes tokenize the same dataset
        desc=desc,
    )
    n_truncated = int(sum(out["truncated"])) if len(out) else 0
    _warn_truncated(desc, n_truncated, len(out), max_length, truncation)
    return out


def check_map_style(dataset, what: str = "pool") -> None:
    """A clear error for a dataset without random access (an `IterableDataset`): features are stored by row number
    and a selection is returned as ``dataset.select(indices)``."""
    from datasets import Dataset, IterableDataset

    if isinstance(dataset, Dataset):
        return
    if isinstance(dataset, IterableDataset):
        raise InputError(
            f"The {what} is an IterableDataset, but selection needs random access to the rows (features are stored "
            "by row number; the selection is returned as dataset.select(indices)). Write it to an Arrow file once "
            "(memory stays flat and the result is memory-mapped, not held in RAM): "
            "`Dataset.from_generator(lambda: (yield from iterable), features=iterable.features)`, or load it without "
            "streaming=True."
        )
    raise InputError(f"The {what} must be a datasets.Dataset, got {type(dataset).__name__}.")


class TokenizedRows:
    """The rows of a `datasets.Dataset` as tokens, for a pool of any size: one streaming pass records three numbers
    per row (token count, supervised-label count, whether it was truncated); :meth:`rows` tokenizes any rows again
    on demand. Memory stays ``O(rows)`` small integers, never the tokens of the whole pool, and nothing is written to
    disk (an Arrow-backed dataset stays memory-mapped; only the rows of one batch are read at a time).

    Args:
        dataset: the rows (`datasets.Dataset`, in memory or memory-mapped).
        tokenizer, max_length, truncation: as for :func:`tokenize_row`.
        desc: progress-bar label, also used in error messages.
        batch_size: rows read per step of the streaming pass.
    """

    def __init__(
        self,
        dataset,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 512,
        truncation: str = "keep_completion",
        desc: str = "Tokenizing",
        batch_size: int = 1024,
    ) -> None:
        from ._logging import progress

        check_map_style(dataset, "dataset")
        self._one = _row_tokenizer(dataset, tokenizer, max_length, truncation, desc)
        self._source = dataset.select_columns(feature_columns(dataset)).with_format(None)
        self.fingerprint = f"{getattr(dataset, '_fingerprint', id(dataset))}-{max_length}-{truncation}"
        """Names these rows and settings (the dataset's fingerprint, ``max_length``, ``truncation``) for caches."""
        n = len(dataset)
        self.lengths = np.zeros(n, dtype=np.int32)
        self.num_supervised = np.zeros(n, dtype=np.int32)
        n_truncated = 0
        bar = progress(total=n, desc=desc, unit="row", disable=n < 10_000)
        try:
            for lo, batch in zip(range(0, n, batch_size), self._source.iter(batch_size=batch_size)):
                for j, row in enumerate(_rows_of(batch)):
                    out = self._one(row, lo + j)
                    self.lengths[lo + j] = len(out["input_ids"])
                    self.num_supervised[lo + j] = out["num_supervised"]
                    n_truncated += bool(out["truncated"])
                bar.update(len(next(iter(batch.values()))))
        finally:
            bar.close()
        self.n_truncated = n_truncated
        _warn_truncated(desc, n_truncated, n, max_length, truncation)

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self, indices) -> list[dict[str, Any]]:
        """Tokenized rows (``input_ids``, ``labels``, ``num_supervised``, ``truncated``) at ``indices``, in order."""
        indices = [int(i) for i in indices]
        batch = self._source[indices]
        out = [self._one(row, i) for row, i in zip(_rows_of(batch), indices)]
        for row, i in zip(out, indices):
            if len(row["input_ids"]) != self.lengths[i]:
                raise InputError(f"row {i} tokenized to another length than before: the dataset changed meanwhile.")
        return out


def _rows_of(batch: dict[str, list]) -> list[dict[str, Any]]:
    """A batch's ``{column: values}`` as a list of row dicts."""
    names = list(batch)
    return [dict(zip(names, values)) for values in zip(*(batch[c] for c in names))]
