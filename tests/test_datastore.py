"""The gradient datastore: manifest, storage, reuse, refusal, resume, invalid rows, end-to-end values."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from less_hf import Datastore, GradientConfig, ProjectionConfig, build_datastore, find_checkpoints
from less_hf.capture import OptimizerMoments, checkpoint_weights
from less_hf.capture.optimizer_state import CAPTURE_DIR
from less_hf.datastore import Manifest, build_target_features, load_target_features
from less_hf.datastore.keys import dataset_digest
from less_hf.datastore.store import FeatureWriter
from less_hf.errors import DatastoreMismatchError
from less_hf.gradients.featurizer import GradientFeaturizer
from less_hf.projection import from_config as make_projectors
from less_hf.tokenization import tokenize_dataset

from reference.adam import adam_update
from reference.dense_matrix import dense_matrix
from reference.loop_gradients import flatten, loop_gradients

DIMS = [64, 128]
GRAD = GradientConfig(max_length=64, batch_size=8)
PROJ = ProjectionConfig(dims=DIMS, seed=3)
BAD_ID = "no-assistant"


@pytest.fixture(scope="module")
def pool_with_bad(pool):
    """The pool plus a row with no assistant turn (so no supervised token) in the middle."""
    rows = pool.to_list()
    bad = {"id": BAD_ID, "source": "none", "messages": [{"role": "user", "content": "what is the capital of oslo"}]}
    return Dataset.from_list(rows[:20] + [bad] + rows[20:])


@pytest.fixture(scope="module")
def datastore(warmup_dir, pool_with_bad, tmp_path_factory):
    out = tmp_path_factory.mktemp("datastore") / "ds"
    return build_datastore(warmup_dir, pool_with_bad, out, GRAD, PROJ)


def feature_files(store: Datastore) -> list[Path]:
    return sorted((store.directory / "pool").rglob("*.npy"))


def all_features(directory: Path, checkpoints, dims=DIMS) -> dict:
    store = Datastore.open(directory)
    return {(c, d): np.array(store.pool_features(c, d)) for c in checkpoints for d in dims}


def test_manifest(datastore, warmup_dir, pool_with_bad, tiny_model_dir):
    manifest = Manifest.load(datastore.directory)
    assert manifest.status == "complete"
    infos = find_checkpoints(warmup_dir)
    assert [c.name for c in manifest.checkpoints] == ["checkpoint-3", "checkpoint-6"]
    assert [c.step for c in manifest.checkpoints] == [3, 6]
    assert [c.path for c in manifest.checkpoints] == [str(c.path.resolve()) for c in infos]
    assert [c.weight for c in manifest.checkpoints] == pytest.approx(checkpoint_weights(infos).tolist())
    assert sum(c.weight for c in manifest.checkpoints) == pytest.approx(1.0)
    assert [c.mean_lr for c in manifest.checkpoints] == pytest.approx([c.mean_lr for c in infos])
    assert manifest.dims == DIMS
    assert manifest.projectors == [{"kind": "sparse", "dim": d, "seed": 3, "sparsity": 4} for d in DIMS]
    assert manifest.n_rows == len(pool_with_bad) == 49
    assert (
        manifest.dataset_fingerprint
        == manifest.key["pool"]["content"]
        == dataset_digest(pool_with_bad, ["messages", "id"])
    )
    assert manifest.transform == "adam"
    assert manifest.storage_dtype == "float16"
    assert manifest.max_length == 64 and manifest.truncation == "keep_completion"
    assert manifest.base_model == str(tiny_model_dir)
    assert manifest.num_params == 2 * (2 * 4 * 64 + 2 * (4 * 64 + 4 * 32) + 2 * 4 * 64)  # q, k, v, o; 2 layers
    raw = json.loads((datastore.directory / "manifest.json").read_text())
    assert raw["status"] == "complete" and raw["n_rows"] == 49
    assert datastore.row_ids == pool_with_bad["id"]


def test_features_on_disk(datastore):
    for checkpoint in ("checkpoint-3", "checkpoint-6"):
        assert not (datastore.directory / "pool" / f"{checkpoint}.part").exists()
        for dim in DIMS:
            features = datastore.pool_features(checkpoint, dim)
            assert features.dtype == np.float16
            assert features.shape == (49, dim)
            assert np.isfinite(features).all()
            valid = datastore.valid
            assert (np.linalg.norm(features[valid].astype(np.float32), axis=1) > 0).all()
    # the two checkpoints give different features (different weights and moments)
    a = datastore.pool_features("checkpoint-3", 128).astype(np.float32)
    b = datastore.pool_features("checkpoint-6", 128).astype(np.float32)
    assert not np.allclose(a, b, atol=1e-3)
    with pytest.raises(FileNotFoundError):
        datastore.pool_features("checkpoint-3", 256)


def test_row_without_supervised_token_is_reported(datastore, pool_with_bad):
    valid = datastore.valid
    assert valid.dtype == bool and valid.shape == (49,)
    bad = pool_with_bad["id"].index(BAD_ID)
    assert not valid[bad]
    assert valid.sum() == 48
    for checkpoint in ("checkpoint-3", "checkpoint-6"):
        assert not datastore.pool_features(checkpoint, 64)[bad].any()


def test_rebuild_reuses_without_recomputing(datastore, warmup_dir, pool_with_bad, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in feature_files(datastore) + [datastore.directory / "manifest.json"]}

    def refuse(*args, **kwargs):
        raise AssertionError("a complete datastore must be reused, not recomputed")

    monkeypatch.setattr(GradientFeaturizer, "load", refuse)  # loading the model is the first step of any computing
    monkeypatch.setattr(GradientFeaturizer, "features", refuse)
    again = build_datastore(warmup_dir, pool_with_bad, datastore.directory, GRAD, PROJ)
    assert again.manifest.status == "complete"
    assert {p: p.stat().st_mtime_ns for p in before} == before


CHANGES = ["pool", "rows", "dims", "seed", "transform", "max_length", "kind", "dtype", "batch_size", "model_dtype"]


@pytest.mark.parametrize("change", CHANGES)
def test_different_pool_or_config_is_refused(datastore, warmup_dir, pool_with_bad, change):
    pool, grad, proj = pool_with_bad, GRAD, PROJ
    if change == "pool":
        pool = pool_with_bad.map(
            lambda r: {"messages": [{**m, "content": m["content"].upper()} for m in r["messages"]]}
        )
    elif change == "rows":
        pool = pool_with_bad.select(range(40))
    elif change == "dims":
        proj = ProjectionConfig(dims=[64], seed=3)
    elif change == "seed":
        proj = ProjectionConfig(dims=DIMS, seed=4)
    elif change == "kind":
        proj = ProjectionConfig(kind="dense", dims=DIMS, seed=3)
    elif change == "dtype":
        proj = ProjectionConfig(dims=DIMS, seed=3, storage_dtype="float32")
    elif change == "transform":
        grad = GradientConfig(max_length=64, batch_size=8, optimizer_transform="adam_reference")
    elif change == "max_length":
        grad = GradientConfig(max_length=32, batch_size=8)
    elif change == "batch_size":
        grad = GradientConfig(max_length=64, batch_size=4)
    elif change == "model_dtype":
        grad = GradientConfig(max_length=64, batch_size=8, dtype="bf16")
    with pytest.raises(DatastoreMismatchError, match=r"other inputs.* → .*--datastore_dir.*datastore_dir="):
        build_datastore(warmup_dir, pool, datastore.directory, grad, proj)
    assert Manifest.load(datastore.directory).status == "complete"


def test_resume_after_simulated_crash(datastore, warmup_dir, pool_with_bad, tmp_path, monkeypatch):
    """A finished checkpoint folder is put back to `.part` with some rows un-marked (zeroed) and the manifest back to
    'building': the rebuild recomputes exactly those rows and gives the same features."""
    reference = all_features(datastore.directory, ["checkpoint-3", "checkpoint-6"])
    copy = tmp_path / "ds"
    shutil.copytree(datastore.directory, copy)
    final, part = copy / "pool" / "checkpoint-6", copy / "pool" / "checkpoint-6.part"
    final.rename(part)
    done = np.load(part / "done.npy")
    assert done.all()
    redo = np.array([0, 5, 20, 33, 48])
    done[redo] = False
    np.save(part / "done.npy", done)
    for dim in DIMS:
        array = np.lib.format.open_memmap(part / f"d{dim}.npy", mode="r+")
        array[redo] = 0
        array.flush()
        del array
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["status"] = "building"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="incomplete"):
        Datastore.open(copy)
    kept = {p: p.stat().st_mtime_ns for p in (copy / "pool" / "checkpoint-3").glob("*.npy")}
    written = []
    original_write = FeatureWriter.write

    def recording_write(self, rows, features):
        written.extend(int(r) for r in rows)
        return original_write(self, rows, features)

    monkeypatch.setattr(FeatureWriter, "write", recording_write)
    resumed = build_datastore(warmup_dir, pool_with_bad, copy, GRAD, PROJ)
    # only the batches holding un-marked rows were recomputed (whole batches, so every row keeps its batch)
    featurizer = GradientFeaturizer(find_checkpoints(warmup_dir), GRAD, make_projectors(PROJ))
    plan = featurizer.batch_plan(featurizer.tokenize(pool_with_bad))
    expected = sorted([int(r) for b in plan if np.isin(b, redo).any() for r in b] + [20])  # 20: no supervised token
    assert sorted(written) == expected and set(redo.tolist()) <= set(written)
    assert resumed.manifest.status == "complete"
    assert final.is_dir() and not part.exists()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # the finished checkpoint was not touched
    got = all_features(copy, ["checkpoint-3", "checkpoint-6"])
    for key, ref in reference.items():
        assert np.array_equal(got[key], ref), key  # bit-identical: same batches as the first build


def test_resume_after_exception_mid_build(datastore, warmup_dir, pool_with_bad, tmp_path, monkeypatch):
    """A build that dies while writing the second checkpoint resumes to the same datastore."""
    reference = all_features(datastore.directory, ["checkpoint-3", "checkpoint-6"])
    original_write = FeatureWriter.write
    calls = {"n": 0}

    def crashing_write(self, rows, features):
        if self.directory.name == "checkpoint-6":
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt("simulated crash")
        return original_write(self, rows, features)

    monkeypatch.setattr(FeatureWriter, "write", crashing_write)
    out = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        build_datastore(warmup_dir, pool_with_bad, out, GRAD, PROJ)
    assert Manifest.load(out).status == "building"
    assert (out / "pool" / "checkpoint-3").is_dir() and (out / "pool" / "checkpoint-6.part").is_dir()
    monkeypatch.setattr(FeatureWriter, "write", original_write)
    kept = {p: p.stat().st_mtime_ns for p in (out / "pool" / "checkpoint-3").glob("*.npy")}
    resumed = build_datastore(warmup_dir, pool_with_bad, out, GRAD, PROJ)
    assert resumed.manifest.status == "complete"
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    got = all_features(out, ["checkpoint-3", "checkpoint-6"])
    for key, ref in reference.items():
        assert np.array_equal(got[key], ref), key


def test_feature_writer_finalize_needs_every_row(tmp_path):
    writer = FeatureWriter(tmp_path / "x", 4, [8])
    writer.write(np.array([0, 2]), {8: np.ones((2, 8), dtype=np.float32)})
    assert writer.pending().tolist() == [1, 3]
    with pytest.raises(RuntimeError, match="missing"):
        writer.finalize()
    writer.flush()
    again = FeatureWriter(tmp_path / "x", 4, [8])  # a restart sees the flushed rows as done
    assert again.pending().tolist() == [1, 3]
    again.write(np.array([1, 3]), {8: np.full((2, 8), 2, dtype=np.float32)})
    again.finalize()
    assert (tmp_path / "x").is_dir() and not (tmp_path / "x.part").exists()
    stored = np.load(tmp_path / "x" / "d8.npy")
    assert stored.dtype == np.float16
    assert stored[:, 0].tolist() == [1, 2, 1, 2]
    assert FeatureWriter(tmp_path / "x", 4, [8]).pending().size == 0


# ---------------------------------------------------------------- end to end against the slow references


@pytest.fixture(scope="module")
def dense_store(warmup_dir, pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("dense") / "ds"
    grad = GradientConfig(max_length=64, batch_size=5)  # several batches with padding
    proj = ProjectionConfig(kind="dense", dims=[32], seed=11)
    return build_datastore(warmup_dir, pool, out, grad, proj), grad, proj


_MATRICES: dict = {}


def explicit_matrix(projector, sizes: dict[str, int]) -> torch.Tensor:
    """The reference matrix (slow to build, so built once per projector and parameter set)."""
    key = (projector.seed, projector.dim, tuple(sorted(sizes.items())))
    if key not in _MATRICES:
        _MATRICES[key] = dense_matrix(projector, sizes)
    return _MATRICES[key]


def reference_features(checkpoint, tiny_model_dir, tokenized, projector, transform):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(checkpoint.path), is_trainable=True)
    model.eval()
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in tokenized]
    grads, _, _ = loop_gradients(model, rows)
    moments = OptimizerMoments.load(checkpoint.path / CAPTURE_DIR)
    feats = {}
    for name, g in grads.items():
        m, v = moments.exp_avg[name].double().numpy(), moments.exp_avg_sq[name].double().numpy()
        feats[name] = torch.from_numpy(
            adam_update(g.double().numpy(), m, v, moments.step, moments.betas, moments.eps, transform)
        )
    names = sorted(feats)
    matrix = explicit_matrix(projector, {n: feats[n][0].numel() for n in names})
    return (flatten(feats, names) @ matrix).numpy()


def assert_rows_close(got, expected, rtol):
    got, expected = got.astype(np.float64), expected.astype(np.float64)
    err = np.linalg.norm(got - expected, axis=1) / np.linalg.norm(expected, axis=1)
    assert err.max() < rtol, err.max()


def test_pool_features_equal_reference(dense_store, warmup_dir, pool, tiny_model_dir, tokenizer):
    store, grad, proj = dense_store
    (projector,) = make_projectors(proj)
    tokenized = tokenize_dataset(pool, tokenizer, grad.max_length)
    for checkpoint in find_checkpoints(warmup_dir):
        expected = reference_features(checkpoint, tiny_model_dir, tokenized, projector, "adam")
        assert_rows_close(store.pool_features(checkpoint.name, 32), expected, rtol=2e-3)  # fp16 storage


def test_target_features_equal_reference(dense_store, warmup_dir, pool, tiny_model_dir, tokenizer):
    store, grad, proj = dense_store
    target = pool.select(range(5)).add_column("subtask", ["a", "b", "a", "b", "a"])
    featurizer = GradientFeaturizer(find_checkpoints(warmup_dir), grad, make_projectors(proj))
    features = build_target_features(store, "my task", target, featurizer)
    assert features.subtasks == ["a", "b", "a", "b", "a"]
    assert features.valid.all()
    assert features.directory.parent == store.directory / "targets"
    loaded = load_target_features(features.directory)
    assert loaded.subtasks == features.subtasks and loaded.name == "my task"
    (projector,) = featurizer.projectors
    tokenized = tokenize_dataset(target, tokenizer, grad.max_length)
    for checkpoint in find_checkpoints(warmup_dir):
        expected = reference_features(checkpoint, tiny_model_dir, tokenized, projector, "sgd")
        assert_rows_close(features.features(checkpoint.name, 32), expected, rtol=2e-3)


def test_target_without_any_supervised_row_is_refused(dense_store, warmup_dir):
    store, grad, proj = dense_store
    target = Dataset.from_list([{"messages": [{"role": "user", "content": "hello"}]}])
    featurizer = GradientFeaturizer(find_checkpoints(warmup_dir), grad, make_projectors(proj))
    with pytest.raises(ValueError, match="supervised"):
        build_target_features(store, "empty", target, featurizer)


@pytest.mark.parametrize("transform", ["adam_reference", "sgd"])
def test_other_transforms_end_to_end(warmup_dir, pool, tiny_model_dir, tokenizer, tmp_path, transform):
    small = pool.select(range(6))
    grad = GradientConfig(max_length=64, batch_size=4, optimizer_transform=transform)
    proj = ProjectionConfig(kind="dense", dims=[32], seed=11)
    store = build_datastore(warmup_dir, small, tmp_path / "ds", grad, proj)
    assert store.manifest.transform == transform
    (projector,) = make_projectors(proj)
    checkpoint = find_checkpoints(warmup_dir)[0]
    expected = reference_features(
        checkpoint, tiny_model_dir, tokenize_dataset(small, tokenizer, 64), projector, transform
    )
    assert_rows_close(store.pool_features(checkpoint.name, 32), expected, rtol=2e-3)


def test_datastore_from_plain_hf_checkpoints_equals_captured(datastore, warmup_dir, pool_with_bad, tmp_path):
    """Without the callback's capture the optimizer.pt path gives the same datastore."""
    copy = tmp_path / "warmup"
    shutil.copytree(warmup_dir, copy, ignore=shutil.ignore_patterns("less_datastore*"))
    for checkpoint in copy.glob("checkpoint-*"):
        shutil.rmtree(checkpoint / CAPTURE_DIR)
    store = build_datastore(copy, pool_with_bad, tmp_path / "ds", GRAD, PROJ)
    assert store.weights == pytest.approx(datastore.weights)
    for checkpoint in ("checkpoint-3", "checkpoint-6"):
        for dim in DIMS:
            np.testing.assert_array_equal(
                store.pool_features(checkpoint, dim), datastore.pool_features(checkpoint, dim)
            )


def test_quantize_rows_keeps_directions():
    from less_hf.datastore.store import quantize_rows

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 512)).astype(np.float32)
    x[3] = 0.0
    q = quantize_rows(x)
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    assert not q[3].any()
    keep = np.arange(64) != 3
    cos = (
        (q[keep].astype(np.float32) * x[keep]).sum(1)
        / np.linalg.norm(q[keep], axis=1)
        / np.linalg.norm(x[keep], axis=1)
    )
    assert cos.min() > 0.999


def test_int8_storage_selects_like_fp16(warmup_dir, pool, tmp_path):
    from less_hf import LESSSelector

    target = pool.filter(lambda r: r["source"] == "add").select(range(3))
    scores = {}
    for dtype in ("float16", "int8"):
        selector = LESSSelector(
            warmup_dir,
            tmp_path / dtype,
            GradientConfig(max_length=64, batch_size=8),
            ProjectionConfig(dims=[256], storage_dtype=dtype),
        )
        scores[dtype] = selector.score(pool, {"t": target})["t"]
    stored = np.load(tmp_path / "int8" / "pool" / "checkpoint-3" / "d256.npy", mmap_mode="r")
    assert stored.dtype == np.int8
    top = {d: set(np.argsort(-s)[:12].tolist()) for d, s in scores.items()}
    assert len(top["float16"] & top["int8"]) >= 11
    np.testing.assert_allclose(scores["int8"], scores["float16"], atol=0.01)


def test_unknown_storage_dtype_is_refused_before_any_work(warmup_dir, pool, tmp_path):
    with pytest.raises(ValueError, match="storage_dtype"):
        build_datastore(warmup_dir, pool, tmp_path / "x", projection_config=ProjectionConfig(storage_dtype="int3"))
    assert not (tmp_path / "x").exists()


def test_block_reader_matches_the_array_and_detects_truncation(tmp_path):
    from less_hf.datastore.blocks import BlockReader

    rng = np.random.default_rng(0)
    array = rng.standard_normal((37, 16)).astype(np.float16)
    np.save(tmp_path / "d16.npy", array)
    with BlockReader(tmp_path / "d16.npy") as reader:
        assert reader.shape == (37, 16)
        np.testing.assert_array_equal(
            np.concatenate([reader.read(lo, min(37, lo + 10)) for lo in range(0, 37, 10)]), array
        )
    data = (tmp_path / "d16.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-40])
    with BlockReader(tmp_path / "cut.npy") as reader, pytest.raises(ValueError, match="truncated"):
        reader.read(30, 37)
