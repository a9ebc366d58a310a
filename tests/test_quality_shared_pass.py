"""The quality benchmark's shared gradient pass: each transform's datastore equals a separate build of it."""

from __future__ import annotations

import numpy as np

from benchmarks.quality.shared_pass import SharedPassFeaturizer
from less_hf import GradientConfig, ProjectionConfig, build_datastore, find_checkpoints
from less_hf.projection import from_config

TRANSFORMS = ("adam", "adam_reference", "adam_torch", "sgd")


def test_shared_pass_datastores_equal_separate_builds(tmp_path, warmup_dir, pool):
    projection = ProjectionConfig(dims=[64])
    checkpoints = find_checkpoints(warmup_dir)
    shared = SharedPassFeaturizer(checkpoints, GradientConfig(max_length=64, batch_size=8), from_config(projection),
                                  transforms=TRANSFORMS)  # fmt: skip
    for i, transform in enumerate(TRANSFORMS):
        config = GradientConfig(max_length=64, batch_size=8, optimizer_transform=transform)
        together = build_datastore(warmup_dir, pool, tmp_path / f"shared-{transform}", config, projection,
                                   featurizer=shared)  # fmt: skip
        assert shared.replayed == i * len(checkpoints)  # the first build computes, the others replay
        alone = build_datastore(warmup_dir, pool, tmp_path / f"alone-{transform}", config, projection)
        assert together.manifest.key == alone.manifest.key and together.manifest.transform == transform
        for c in checkpoints:
            a, b = together.pool_features(c.name, 64), alone.pool_features(c.name, 64)
            assert np.abs(a).sum() > 0
            np.testing.assert_array_equal(a, b)
    adam = build_datastore(warmup_dir, pool, tmp_path / "shared-adam", GradientConfig(max_length=64, batch_size=8),
                           projection, featurizer=shared).pool_features(checkpoints[-1].name, 64)  # fmt: skip
    torch_ = build_datastore(warmup_dir, pool, tmp_path / "shared-adam_torch",
                             GradientConfig(max_length=64, batch_size=8, optimizer_transform="adam_torch"), projection,
                             featurizer=shared).pool_features(checkpoints[-1].name, 64)  # fmt: skip
    assert not np.allclose(adam, torch_)  # the transforms differ
