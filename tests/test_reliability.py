"""Reliability: SIGKILL at several points then resume to the same bytes; checksums catch corruption; one writer at a
time; disk full leaves nothing corrupt; non-finite gradients are reported and never selected."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from less_hf import Datastore, GradientConfig, ProjectionConfig, build_datastore
from less_hf.datastore.lock import DatastoreLockedError, WriterLock
from less_hf.datastore.store import CorruptFileError

from reliability_helpers import CRASH_GRAD, CRASH_PROJ, crash_points, crash_pool, datastore_digest, run_and_kill


@pytest.fixture(scope="module")
def reference(warmup_dir, tmp_path_factory):
    """An uninterrupted build."""
    out = tmp_path_factory.mktemp("reference") / "ds"
    build_datastore(warmup_dir, crash_pool(), out, CRASH_GRAD, CRASH_PROJ)
    return out


def assert_same_bytes(out: Path, reference: Path) -> None:
    got, want = datastore_digest(out), datastore_digest(reference)
    differ = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    assert not differ, differ


def resume(warmup_dir, out: Path) -> Datastore:
    return build_datastore(warmup_dir, crash_pool(), out, CRASH_GRAD, CRASH_PROJ)


@pytest.mark.slow
@pytest.mark.parametrize("point", list(crash_points(Path("x"))))
def test_sigkill_then_resume_gives_the_same_bytes(warmup_dir, reference, tmp_path, point):
    out = tmp_path / "ds"
    outcome = run_and_kill(warmup_dir, out, crash_points(out)[point])
    assert outcome == "killed", "the build finished before the crash point"
    assert (out / ".lock").exists()  # a killed build leaves its lock file; the kernel dropped the flock: no blocking
    assert not (out / "manifest.json").exists() or json.loads((out / "manifest.json").read_text())["status"] in (
        "building",
        "complete",
    )
    store = resume(warmup_dir, out)
    store.verify()
    assert_same_bytes(out, reference)
    assert not list(out.rglob("*.part")) and not list(out.rglob(".*.tmp*"))


def test_second_writer_fails_fast_and_readers_are_fine(warmup_dir, reference, tmp_path):
    out = tmp_path / "ds"
    with WriterLock(out):  # another writer holds the datastore (flock conflicts across open files, even in-process)
        with pytest.raises(DatastoreLockedError, match="Another process .* is writing"):
            resume(warmup_dir, out)
        with pytest.raises(DatastoreLockedError):
            with WriterLock(out):
                pass
    with WriterLock(reference):  # a complete datastore is read without a lock
        assert resume(warmup_dir, reference).manifest.status == "complete"
        Datastore.open(reference).verify()
    resume(warmup_dir, out)
    assert_same_bytes(out, reference)


@pytest.fixture
def copy_of(reference, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    return out


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_corrupted_shard_is_caught_on_read_and_only_that_part_rebuilt(warmup_dir, reference, copy_of):
    target = copy_of / "pool" / "checkpoint-6" / "d128.npy"
    flip_byte(target, target.stat().st_size - 7)
    store = Datastore.open(copy_of)  # same size: the cheap check passes
    with pytest.raises(CorruptFileError, match="d128.npy is corrupted") as err:
        store.pool_features("checkpoint-6", 128)
    assert "Delete" in str(err.value) and "checkpoint-6" in str(err.value)
    with store.pool_reader("checkpoint-6", 128) as reader, pytest.raises(CorruptFileError, match="corrupted"):
        for lo in range(0, 48, 10):
            reader.read(lo, min(48, lo + 10))
    with pytest.raises(CorruptFileError):
        store.verify()
    store.pool_features("checkpoint-3", 128)  # other parts read fine
    kept = (copy_of / "pool" / "checkpoint-3" / "d128.npy").stat().st_mtime_ns
    shutil.rmtree(copy_of / "pool" / "checkpoint-6")  # what the error says to do
    resume(warmup_dir, copy_of).verify()
    assert (copy_of / "pool" / "checkpoint-3" / "d128.npy").stat().st_mtime_ns == kept
    assert_same_bytes(copy_of, reference)


def test_truncated_shard_is_caught_on_open(copy_of):
    path = copy_of / "pool" / "checkpoint-3" / "d64.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptFileError, match=r"d64.npy has \d+ bytes but \d+ were written"):
        Datastore.open(copy_of)


def test_corrupted_valid_mask_is_caught(copy_of):
    flip_byte(copy_of / "valid.npy", (copy_of / "valid.npy").stat().st_size - 1)
    with pytest.raises(CorruptFileError, match="valid.npy is corrupted"):
        _ = Datastore.open(copy_of).valid


# ---------------------------------------------------------------- disk full


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return result.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(mount, "1m"):
        pytest.skip("needs root and permission to mount a tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill the disk up to ``leave`` free bytes."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.parametrize("leave_kb", [0, 12, 20])
def test_disk_full_leaves_nothing_corrupt(warmup_dir, reference, small_disk, leave_kb):
    """A real ENOSPC (a 1 MB tmpfs filled up) while a checkpoint is rebuilt: the error is clear, no temp or partial
    file is left that could be taken for a finished one, the finished parts still verify, and once space is freed the
    same command ends with the same bytes."""
    out = small_disk / "ds"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "pool" / "checkpoint-6")
    filler = fill(small_disk, leave_kb * 1024)
    try:
        resume(warmup_dir, out)
        completed = True
    except OSError as err:
        completed = False
        assert "space" in str(err) or err.errno == 28, err
    if not completed:
        assert not list(out.rglob(".*.tmp*"))
        manifest = json.loads((out / "manifest.json").read_text())  # still whole JSON
        assert manifest["n_rows"] == 16
        for checkpoint in ("checkpoint-3", "checkpoint-6"):  # a final folder is always whole (else still .part)
            if (out / "pool" / checkpoint).exists():
                for path in (reference / "pool" / checkpoint).iterdir():
                    assert path.read_bytes() == (out / "pool" / checkpoint / path.name).read_bytes()
    filler.unlink()
    resume(warmup_dir, out).verify()
    assert_same_bytes(out, reference)


def test_not_writable_output_is_a_clear_error(warmup_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="Cannot write the datastore to"):
        build_datastore(warmup_dir, crash_pool(), blocker / "ds", CRASH_GRAD, CRASH_PROJ)
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o555)
        with pytest.raises(OSError, match="Cannot write the datastore to"):
            build_datastore(warmup_dir, crash_pool(), locked / "ds", CRASH_GRAD, CRASH_PROJ)


def test_not_enough_space_is_refused_before_any_work(warmup_dir, small_disk):
    fill(small_disk, 4096)
    with pytest.raises(OSError, match="needs .* GB more"):
        build_datastore(warmup_dir, crash_pool(), small_disk / "ds", CRASH_GRAD, CRASH_PROJ)
    assert not list((small_disk / "ds").rglob("*.npy"))


# ---------------------------------------------------------------- non-finite gradients


@pytest.fixture(scope="module")
def overflowing_model(tiny_model_dir, tokenizer, tmp_path_factory):
    """The tiny model with untied embeddings whose input embedding of the bytes of '€' is inf: a row containing '€'
    overflows to NaN in its forward pass (like an fp16 overflow), every other row is unaffected."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    euro = tokenizer("€", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        model.get_input_embeddings().weight[euro] = float("inf")
    out = tmp_path_factory.mktemp("overflow")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def test_nonfinite_gradient_rows_are_reported_and_never_selected(warmup_dir, overflowing_model, tmp_path, caplog):
    from datasets import Dataset

    from less_hf import LESSSelector

    rows = crash_pool().to_list()[:12]
    rows[5]["messages"][0]["content"] += " price in €"
    pool = Dataset.from_list(rows)
    target = crash_pool().select([0, 3])
    selector = LESSSelector(
        warmup_dir,
        tmp_path / "ds",
        GradientConfig(max_length=64, batch_size=4, device="cpu"),
        ProjectionConfig(dims=[64], storage_dtype="int8"),
        base_model=overflowing_model,
    )
    with caplog.at_level("WARNING"):
        selected = selector.select(pool, target, fraction=1.0, allow_fewer=True)
    assert "non-finite" in caplog.text and rows[5]["id"] in caplog.text
    store = Datastore.open(tmp_path / "ds")
    assert store.manifest.invalid_rows["nonfinite_features"] == {"count": 1, "ids": [rows[5]["id"]]}
    assert store.valid.tolist() == [i != 5 for i in range(12)]
    assert not store.pool_features("checkpoint-3", 64)[5].any()  # stored as zeros, not garbage
    assert np.isneginf(selector.scores_["target"][5]) and np.isfinite(np.delete(selector.scores_["target"], 5)).all()
    assert rows[5]["id"] not in selected["id"] and len(selected) == 11
