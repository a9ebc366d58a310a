"""Row text and mean-pooled hidden states: features of the baselines (BM25, DSIR, RDS) and of TSDS on embeddings."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from .._logging import progress
from ..errors import ConfigError, InputError
from ..tokenization import detect_format, render_row

logger = logging.get_logger(__name__)


def _content(value: Any) -> str:
    if isinstance(value, list):  # chat messages
        return "\n".join(str(m.get("content", "")) for m in value)
    return str(value)


NEEDS_TEXT = (
    "This method reads the rows' text, but these rows are tokenized (input_ids): use method 'less' (or 'random'), "
    "or pass rows in a text format (messages, prompt+completion, text)."
)


def row_text(row: dict[str, Any], fmt: str) -> str:
    """The plain text of a row (every turn's content, no chat markup), for lexical and sentence-embedding methods."""
    if fmt == "messages":
        return _content(row["messages"])
    if fmt == "prompt_completion":
        return _content(row["prompt"]) + "\n" + _content(row["completion"])
    if fmt == "tokenized":
        raise InputError(NEEDS_TEXT)
    return str(row["text"])


def dataset_texts(dataset) -> list[str]:
    """:func:`row_text` of every row of a `datasets.Dataset` in any TRL format."""
    fmt = detect_format(dataset.column_names)
    return [row_text(row, fmt) for row in dataset]


def subtask_labels(dataset, name: str, column: str = "subtask") -> np.ndarray:
    """The target rows' subtask labels (one group named ``name`` when the column is absent)."""
    if column in dataset.column_names:
        return np.asarray([str(s) for s in dataset[column]])
    return np.asarray([name] * len(dataset))


def subtask_max_of_means(similarity: np.ndarray, subtasks: np.ndarray) -> np.ndarray:
    """``(N, M)`` pool × target-example similarities → ``(N,)``: mean over each subtask's examples, max over subtasks.

    The LESS reference code aggregates every kind of feature (gradients and representations) this way.
    """
    best = np.full(similarity.shape[0], -np.inf, dtype=np.float64)
    for name in np.unique(subtasks):
        best = np.maximum(best, similarity[:, subtasks == name].mean(axis=1))
    return best


POOLINGS = ("mean", "weighted_mean")


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(B, T, H)`` hidden states and ``(B, T)`` right-padded attention mask → ``(B, H)`` pooled vectors.

    ``mean``: the plain mean over the row's tokens. ``weighted_mean``: position-weighted mean, token t (0-based)
    weighted ``(t + 1) / Σ_s (s + 1)`` over the row's own tokens, so later tokens, which have attended to more of the
    row, count more (SGPT, Muennighoff 2022; RDS+ of Ivison et al. 2025).
    """
    mask = mask.to(hidden.dtype)
    if pooling == "weighted_mean":
        weights = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype).unsqueeze(0) * mask
    elif pooling == "mean":
        weights = mask
    else:
        raise ConfigError(f"pooling={pooling!r}; choose one of {POOLINGS}.")
    weights = weights / weights.sum(1, keepdim=True).clamp(min=1e-12)
    return (hidden * weights.unsqueeze(-1)).sum(1)


class MeanPoolEncoder:
    """Mean over tokens of a model's final-layer hidden states (plain or position-weighted), L2-normalised.

    With a causal LM and ``chat=True`` (RDS, as in the LESS paper) each row is rendered with the tokenizer's chat
    template, exactly as it is trained; with a sentence encoder (e.g. all-MiniLM-L6-v2) and ``chat=False`` the row's
    plain text is embedded.

    Args:
        model: a model folder or Hub id (``AutoModel`` is loaded: the final hidden states after the last norm).
        chat: render rows with the chat template (causal LMs) rather than as plain text.
        max_length: tokens kept per row (right truncation).
        batch_size: rows per forward pass (rows are sorted by length to limit padding).
        device: ``"cpu"``, ``"cuda"``… (default: CUDA when available).
        pooling: ``"mean"`` or ``"weighted_mean"`` (see :func:`pool_hidden`).
    """

    def __init__(
        self,
        model: str | os.PathLike,
        chat: bool = True,
        max_length: int = 512,
        batch_size: int = 16,
        device: str | None = None,
        pooling: str = "mean",
    ) -> None:
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling={pooling!r}; choose one of {POOLINGS}.")
        self.pooling = pooling
        self.model_path = str(model)
        self.chat = chat
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            self._tokenizer.padding_side = "right"  # pool_hidden's position weights count from each row's start
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            self._model = AutoModel.from_pretrained(self.model_path).to(self.device).eval()

    def texts(self, dataset) -> tuple[list[str], bool]:
        """The strings to encode, and whether the tokenizer should add its special tokens."""
        self._load()
        if not self.chat:
            return dataset_texts(dataset), True
        fmt = detect_format(dataset.column_names)
        if fmt == "tokenized":
            raise InputError(NEEDS_TEXT)
        rendered = [render_row(row, self._tokenizer, fmt) for row in dataset]
        return [text for text, _, _ in rendered], bool(rendered and rendered[0][2])

    @torch.no_grad()
    def __call__(self, dataset) -> np.ndarray:
        """``(len(dataset), hidden)`` float32 unit vectors."""
        texts, add_special = self.texts(dataset)
        lengths = [len(t) for t in texts]
        order = np.argsort(lengths)[::-1]
        out = np.zeros((len(texts), self._model.config.hidden_size), dtype=np.float32)
        for lo in progress(range(0, len(texts), self.batch_size), desc="Encoding", disable=len(texts) < 256):
            idx = order[lo : lo + self.batch_size]
            enc = self._tokenizer(
                [texts[i] for i in idx],
                add_special_tokens=add_special,
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            hidden = self._model(**enc).last_hidden_state.float()
            pooled = pool_hidden(hidden, enc["attention_mask"], self.pooling)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        return out
