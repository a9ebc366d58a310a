"""One gradient pass for several LESS transforms: the quality benchmark's Adam-convention comparison.

Each transform (``adam``, ``adam_reference``, ``adam_torch``, ``sgd``) has its own datastore (the transform is part
of the datastore key), and building one costs a forward and backward pass per pool row and checkpoint. The
per-example gradient is the same for all of them; only the elementwise transform differs. :class:`SharedPassFeaturizer`
computes every transform from one pass (:meth:`GradientFeaturizer.features_multi`) the first time it is asked for
a rows × checkpoint combination, keeps the results in memory, and replays them when a later datastore build asks for
the same rows, checkpoint and transform. Each datastore is still written by the library's ordinary
``build_datastore`` under its own key, with the bytes a separate build would write
(``tests/test_quality_shared_pass.py`` checks this against direct builds).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from less_hf.gradients.featurizer import GradientFeaturizer


class SharedPassFeaturizer(GradientFeaturizer):
    """A `GradientFeaturizer` that computes ``transforms`` together and replays what it computed.

    Args:
        *args, **kwargs: as :class:`GradientFeaturizer`.
        transforms: the pool transforms to compute together whenever one of them is asked for.
    """

    def __init__(self, *args, transforms: tuple[str, ...], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.transforms = tuple(transforms)
        self._kept: dict[tuple, list[tuple[np.ndarray, dict[int, np.ndarray]]]] = {}
        self.replayed = 0  # how many (checkpoint, rows, transform) requests came from memory

    def _key(self, checkpoint, tokenized, transform: str) -> tuple:
        return checkpoint.path.name, getattr(tokenized, "fingerprint", None) or id(tokenized), transform

    def features(
        self, checkpoint, tokenized, done: np.ndarray, transform: str, desc: str = "Gradients"
    ) -> Iterator[tuple[np.ndarray, dict[int, np.ndarray]]]:
        kept = self._kept.get(self._key(checkpoint, tokenized, transform))
        wanted = np.flatnonzero(~done)
        if kept is not None and np.isin(wanted, np.concatenate([r for r, _ in kept])).all():
            self.replayed += 1
            for rows, feats in kept:
                keep = ~done[rows]
                if keep.any():
                    yield rows[keep], {d: f[keep] for d, f in feats.items()}
            return
        together = (transform, *[t for t in self.transforms if t != transform]) if transform in self.transforms else (
            transform,
        )  # fmt: skip
        fresh = not done.any()  # only a complete pass is kept (a resumed build computes a part)
        batches: dict[str, list] = {t: [] for t in together}
        for rows, out in self.features_multi(checkpoint, tokenized, done, together, desc):
            if fresh:
                for t in together:  # the requested one is handed to the writer: keep a copy of it
                    batches[t].append((rows.copy(), {d: f.copy() for d, f in out[t].items()} if t == transform
                                       else out[t]))  # fmt: skip
            yield rows, out[transform]
        if fresh:
            for t in together:
                self._kept[self._key(checkpoint, tokenized, t)] = batches[t]
