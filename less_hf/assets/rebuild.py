"""Build a model folder once into the asset cache: atomically, and from a GGUF file where that is the source.

transformers can load a GGUF (with the ``gguf`` package), but the model comes back flagged as quantized: the
Trainer refuses to train it and ``save_pretrained`` fails. :func:`dequantize_gguf` therefore drops
``config.quantization_config``, builds a fresh fp32 model from the config, loads the dequantized weights, ties the
embeddings and saves model and tokenizer. :func:`build_once` runs such a build into a private ``.part`` folder and
renames it into place with a marker file, so an interrupted build is redone and a concurrent one is harmless.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers.utils import logging

from .cache import AssetUnavailableError

logger = logging.get_logger(__name__)

MARKER = "less_hf_asset.json"
"""Written last into a built folder: the folder counts as built only when it exists."""


def dequantize_gguf(gguf: Path, out_dir: Path, chat_template: str | None = None) -> None:
    """Save the model and tokenizer in ``gguf`` as a plain fp32 Hugging Face folder ``out_dir``.

    Args:
        gguf: the GGUF file.
        out_dir: where ``save_pretrained`` writes.
        chat_template: replaces the tokenizer's chat template when given.

    Raises:
        AssetUnavailableError: the ``gguf`` package is missing.
    """
    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read GGUF files)
    except ImportError as exc:
        raise AssetUnavailableError(
            f"Rebuilding {gguf.name} needs the `gguf` package: pip install 'gguf>=0.10'"
        ) from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.tie_weights()
    model.eval()
    del quantized
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    elif not tokenizer.chat_template:
        logger.warning("%s carried no chat template; the rebuilt tokenizer has none", gguf.name)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def build_once(final: Path, build: Callable[[Path], None], marker: dict[str, Any]) -> Path:
    """Return ``final``, running ``build(part_folder)`` first unless ``final`` already holds a finished build.

    ``build`` fills a fresh private folder next to ``final``; the marker (``marker`` plus the build time) is
    written last and the folder renamed to ``final``. Any error removes the partial folder.
    """
    if (final / MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    part = Path(tempfile.mkdtemp(dir=final.parent, prefix=f"{final.name}.", suffix=".part"))
    part.chmod(0o755)  # mkdtemp makes it private; the finished model folder should be readable like any other
    try:
        build(part)
        (part / MARKER).write_text(json.dumps({**marker, "built_unix_time": time.time()}, indent=2) + "\n")
        if final.exists():
            # Left over from an interrupted build (no marker), or built concurrently by another process.
            if (final / MARKER).is_file():
                shutil.rmtree(part, ignore_errors=True)
                return final
            shutil.rmtree(final)
        try:
            os.replace(part, final)
        except OSError:
            if not (final / MARKER).is_file():  # not a concurrent build that won the race
                raise
            shutil.rmtree(part, ignore_errors=True)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    logger.info("Built %s in %.1f s", final.name, time.perf_counter() - start)
    return final
