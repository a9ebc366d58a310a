"""The one loop that stores computed features: the pool's and every target's."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import ConfigError
from .store import FeatureWriter

__all__ = ["write_features"]


def write_features(
    writer: FeatureWriter,
    batches: Iterable[tuple[np.ndarray, dict[int, np.ndarray]]],
    flush_every: int,
    expect_finite: np.ndarray | None = None,
) -> list[int]:
    """Store ``(rows, {dim: features})`` batches with ``writer``, durably every ``flush_every`` batches, then
    finalize the folder.

    Returns:
        The rows whose features were not finite (see :meth:`FeatureWriter.finalize`).
    """
    if writer.complete:
        return writer.finalize()
    if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
        raise ConfigError(f"flush_every must be a whole number >= 1, got {flush_every!r} (--flush_every).")
    for n, (rows, features) in enumerate(batches, start=1):
        writer.write(rows, features)
        if n % flush_every == 0:
            writer.flush()
    return writer.finalize(expect_finite)
