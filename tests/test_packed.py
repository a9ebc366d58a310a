"""Packed 4/2/1-bit features: each format against a float64 reference of the same quantisation (round trip and
scores), its place in the datastore key, and corruption detection (once per Datastore, never skipped on first read)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from less_hf import GradientConfig, ProjectionConfig
from less_hf.datastore import Datastore, Manifest, TargetFeatures, build_datastore
from less_hf.datastore.manifest import CheckpointEntry
from less_hf.datastore.packed import PACKED_BITS, dequantize, pack_rows
from less_hf.datastore.store import FeatureWriter, recorded_checksums
from less_hf.errors import ConfigError, CorruptFileError, DatastoreMismatchError
from less_hf.scoring import score_datastore

FORMATS = sorted(PACKED_BITS)
STEP = {2: 0.9957, 4: 0.3352}  # the documented Gaussian-optimal steps, in units of the row's RMS


def reference_quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """The documented quantisation, value by value in float64: codes, levels, least-squares scale, decoded rows."""
    out = np.zeros_like(x, dtype=np.float64)
    for i, row in enumerate(x.astype(np.float64)):
        levels = np.empty(len(row))
        rms = np.sqrt(np.mean(row**2))
        for j, v in enumerate(row):
            if bits == 1:
                code = 1 if v > 0 else 0
            else:
                step = STEP[bits] * (rms if rms > 0 else 1.0)
                code = min(max(int(np.floor(v / np.float32(step))) + 2 ** (bits - 1), 0), 2**bits - 1)
            levels[j] = 2 * code - (2**bits - 1)
        scale = max(0.0, float(row @ levels / (levels @ levels)))
        out[i] = levels * scale
    return out


def random_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d)) * rng.uniform(0.01, 100, size=(n, 1))).astype(np.float32)
    x[3] = 0.0  # an all-zero row (no supervised token) must decode to zeros
    x[5, :4] = 50 * np.abs(x[5]).max()  # outliers get clipped
    return x


@pytest.mark.parametrize("storage", FORMATS)
def test_pack_unpack_equals_the_float64_reference(storage):
    bits = PACKED_BITS[storage]
    x = random_rows(20, 64)
    packed, scales = pack_rows(x, bits)
    assert packed.dtype == np.uint8 and packed.shape == (20, 64 * bits // 8)
    assert scales.dtype == np.float32 and scales.shape == (20, 1)
    decoded = dequantize(packed, scales, bits)
    expected = reference_quantize(x, bits)
    np.testing.assert_allclose(decoded, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert not decoded[3].any() and scales[3, 0] == 0
    # a Gaussian row keeps most of its direction (not the zero row, nor the one with planted outliers)
    keep = ~np.isin(np.arange(20), [3, 5])
    cos = (decoded[keep] * x[keep]).sum(1) / np.linalg.norm(decoded[keep], axis=1) / np.linalg.norm(x[keep], axis=1)
    assert cos.min() > {1: 0.7, 2: 0.85, 4: 0.98}[bits]


def test_packed_dims_must_be_multiples_of_8(tmp_path):
    with pytest.raises(ConfigError, match="multiples of 8"):
        FeatureWriter(tmp_path / "x", 4, [12], "int1")


CHECKPOINTS, WEIGHTS = ["checkpoint-2", "checkpoint-5"], [0.7, 0.3]


def make_store(
    root: Path, storage: str, n: int = 41, dim: int = 24, seed: int = 0, subtasks=("a", "a", "b", "b", "b", "a")
):
    """A complete datastore of random features in ``storage`` (checksums recorded as the build does) and one target
    with two subtasks; returns ``(datastore, target, {checkpoint: float input})``."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for c in CHECKPOINTS:
        x = random_rows(n, dim, seed=seed + len(inputs))
        inputs[c] = x
        writer = FeatureWriter(root / "pool" / c, n, [dim], storage)
        writer.write(np.arange(n), {dim: x})
        writer.finalize()
    valid = np.ones(n, dtype=bool)
    valid[[3, 7]] = False
    np.save(root / "valid.npy", valid)
    files = {f"pool/{c}/{k}": v for c in CHECKPOINTS for k, v in recorded_checksums(root / "pool" / c).items()}
    Manifest(
        base_model="none",
        checkpoints=[CheckpointEntry(c, "", i + 1, w, w) for i, (c, w) in enumerate(zip(CHECKPOINTS, WEIGHTS))],
        transform="adam",
        projectors=[{"kind": "dense", "dim": dim, "seed": 0}],
        storage_dtype=storage,
        max_length=8,
        truncation="keep_completion",
        n_rows=n,
        dataset_fingerprint="x",
        files=files,
        status="complete",
    ).save(root)
    tdir = root / "targets" / "t"
    for c in CHECKPOINTS:
        writer = FeatureWriter(tdir / c, 6, [dim], "float16")
        writer.write(np.arange(6), {dim: rng.standard_normal((6, dim))})
        writer.finalize()
    target = TargetFeatures("t", tdir, list(subtasks), np.ones(6, dtype=bool))
    return Datastore.open(root), target, inputs


@pytest.mark.parametrize(
    ("storage", "subtasks"),
    [(f, "aabbba") for f in FORMATS]
    + [("int1", "a" * 6), ("int1", "abcdea")],  # 1 bit: byte tables up to 4 directions
)
def test_scores_of_packed_features_equal_a_float64_loop_over_the_dequantised_rows(tmp_path, storage, subtasks):
    datastore, target, inputs = make_store(tmp_path, storage, subtasks=subtasks)
    bits = PACKED_BITS[storage]
    # block_rows=10: several reads, each in several decode chunks, the last one short
    got = score_datastore(datastore, [target], dim=24, block_rows=10)["t"]
    n = datastore.manifest.n_rows
    per_subtask = {}
    for label in sorted(set(subtasks)):
        members = [k for k, s in enumerate(target.subtasks) if s == label]
        total = np.zeros(n)
        for w, c in zip(WEIGHTS, CHECKPOINTS):
            pool = reference_quantize(inputs[c], bits)
            t = np.asarray(target.features(c, 24), dtype=np.float64)
            for z in range(n):
                norm = np.linalg.norm(pool[z])
                if norm > 0:
                    total[z] += w * np.mean([t[k] @ pool[z] / (np.linalg.norm(t[k]) * norm) for k in members])
        per_subtask[label] = total
    expected = np.max(list(per_subtask.values()), axis=0)
    valid = datastore.valid
    assert (got[~valid] == -np.inf).all()
    np.testing.assert_allclose(got[valid], expected[valid], rtol=1e-5, atol=1e-5)
    # pool_features decodes the same values
    np.testing.assert_allclose(
        datastore.pool_features(CHECKPOINTS[0], 24), reference_quantize(inputs[CHECKPOINTS[0]], bits), atol=1e-4
    )


def test_a_file_of_another_bit_width_is_never_decoded_as_this_one(tmp_path):
    datastore, target, _ = make_store(tmp_path / "a", "int4")
    manifest = Manifest.load(tmp_path / "a")
    manifest.storage_dtype = "int2"  # same files, another bit width recorded
    manifest.save(tmp_path / "a")
    store = Datastore.open(tmp_path / "a")
    with pytest.raises(CorruptFileError, match=r"holds a uint8 \(41, 12\) array"):
        score_datastore(store, [target], dim=24)
    with pytest.raises(CorruptFileError, match="int2"):
        store.pool_features(CHECKPOINTS[0], 24)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["d24.npy", "d24.scales.npy"])
def test_corrupt_packed_file_fails_the_first_scoring_pass(tmp_path, name):
    store, target, _ = make_store(tmp_path / "ds", "int1")
    clean = score_datastore(store, [target], dim=24)["t"]
    # both files of both checkpoints were checked by the first pass, and remembered
    assert {f"pool/{c}/{f}" for c in CHECKPOINTS for f in ("d24.npy", "d24.scales.npy")} <= store._verified
    path = tmp_path / "ds" / "pool" / CHECKPOINTS[1] / name
    flip_byte(path, path.stat().st_size - 3)  # same size: only the CRC can tell
    # a new Datastore object checks again: the first pass fails before its scores can be used
    with pytest.raises(CorruptFileError, match=f"{name} is corrupted"):
        score_datastore(Datastore.open(tmp_path / "ds"), [target], dim=24)
    with pytest.raises(CorruptFileError, match="corrupted"):
        Datastore.open(tmp_path / "ds").verify()
    # the object that verified the clean files does not re-read checksums on later passes
    assert score_datastore(store, [target], dim=24)["t"].shape == clean.shape


def test_verify_once_then_scoring_skips_the_crc(tmp_path):
    store, target, _ = make_store(tmp_path / "ds", "float16")
    store.verify()
    assert set(store._verified) == set(store.manifest.files)
    with store.pool_reader(CHECKPOINTS[0], 24) as reader:
        assert reader.data.expected is None  # size checked, CRC already known good
    fresh = Datastore.open(tmp_path / "ds")
    with fresh.pool_reader(CHECKPOINTS[0], 24) as reader:
        assert reader.data.expected is not None


def test_only_the_bit_width_changes_the_key(warmup_dir, pool, tmp_path):
    small = pool.select(range(12))
    cfg = GradientConfig(max_length=32, batch_size=4)
    a = build_datastore(
        warmup_dir,
        small,
        tmp_path / "ds",
        gradient_config=cfg,
        projection_config=ProjectionConfig(dims=[32], storage_dtype="int4"),
    )
    stored = np.load(tmp_path / "ds" / "pool" / a.manifest.checkpoints[0].name / "d32.npy", mmap_mode="r")
    assert stored.dtype == np.uint8 and stored.shape == (12, 16)
    with pytest.raises(DatastoreMismatchError, match="storage_dtype: int4 → int2"):
        build_datastore(
            warmup_dir,
            small,
            tmp_path / "ds",
            gradient_config=cfg,
            projection_config=ProjectionConfig(dims=[32], storage_dtype="int2"),
        )
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "ds", copy)
    b = build_datastore(
        warmup_dir,
        small,
        copy,
        gradient_config=cfg,
        projection_config=ProjectionConfig(dims=[32], storage_dtype="int4"),
    )
    assert b.manifest.key == a.manifest.key  # the same settings reuse it


def test_weighted_features_read_packed_rows_dequantised(tmp_path):
    from less_hf.scoring.weighted import weighted_features

    datastore, target, inputs = make_store(tmp_path, "int2")
    pool, valid, targets = weighted_features(datastore, [target], dim=24)
    scale = np.sqrt(np.asarray(WEIGHTS) / sum(WEIGHTS))
    for i, (c, s) in enumerate(zip(CHECKPOINTS, scale)):
        rows = reference_quantize(inputs[c], 2)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        unit = np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
        np.testing.assert_allclose(pool[:, 24 * i : 24 * (i + 1)], unit * s, atol=1e-5)
    assert targets["t"].shape == (6, 48)


def test_selector_end_to_end_on_1_bit_features_keeps_targets_in_fp16(warmup_dir, pool, tmp_path):
    from less_hf import LESSSelector

    target = pool.filter(lambda r: r["source"] == "add").select(range(3))
    selector = LESSSelector(
        warmup_dir,
        tmp_path / "ds",
        GradientConfig(max_length=32, batch_size=8),
        ProjectionConfig(dims=[64], storage_dtype="int1"),
    )
    scores = selector.score(pool, {"t": target})["t"]
    store = Datastore.open(tmp_path / "ds")
    assert store.manifest.storage_dtype == "int1"
    stored = np.load(tmp_path / "ds" / "pool" / store.manifest.checkpoints[0].name / "d64.npy", mmap_mode="r")
    assert stored.dtype == np.uint8 and stored.shape == (len(pool), 8)
    target_files = list((tmp_path / "ds" / "targets").glob("*/checkpoint-*/d64.npy"))
    assert target_files and all(np.load(p, mmap_mode="r").dtype == np.float16 for p in target_files)
    valid = store.valid
    assert np.isfinite(scores[valid]).all() and (scores[~valid] == -np.inf).all()
    assert np.abs(scores[valid]).max() <= 1.0 + 1e-6
