"""Never silently wrong: everything that changes a number is in a content key; outputs are atomic and checked; bad
inputs are refused before any work. One test per class of failure that once gave a different selection with exit 0."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file

from less_hf import GradientConfig, LESSSelector, ProjectionConfig, build_datastore, warmup
from less_hf.datastore.keys import dataset_digest, diff_keys, file_digest
from less_hf.datastore.store import FeatureWriter
from less_hf.errors import (
    DatastoreMismatchError,
    InputError,
    LessHFError,
    NonFiniteFeaturesError,
    OptimizerStateError,
    SelectionFolderError,
    UnsafeNameError,
)
from less_hf.output.hub import export_selection
from less_hf.output.provenance import load_selection, save_selection

from conftest import make_pool, tiny_warmup_config

GRAD = GradientConfig(max_length=64, batch_size=4, device="cpu")
PROJ = ProjectionConfig(dims=[32], seed=5)


@pytest.fixture(autouse=True)
def private_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LESS_HF_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def warm(warmup_dir, tmp_path):
    """A private copy of the session warmup (tests here overwrite or poison its checkpoints)."""
    copy = tmp_path / "warm"
    shutil.copytree(warmup_dir, copy, ignore=shutil.ignore_patterns("less_datastore*"))
    return copy


def features(directory: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(directory)): np.load(p) for p in sorted(directory.glob("pool/*/d*.npy"))}


def fresh_scores(warm_dir: Path, pool, target, tmp_path: Path, name: str) -> np.ndarray:
    """Scores from a clean copy of the warmup (no datastore at all): what any cached answer must equal."""
    clean = tmp_path / name
    shutil.copytree(warm_dir, clean, ignore=shutil.ignore_patterns("less_datastore*"))
    selector = LESSSelector(clean, gradient_config=GRAD, projection_config=PROJ)
    selector.select(pool, target, n=3)
    return selector.scores_["target"]


# ------------------------------------------------------------------------------------------------------- keys


def test_dataset_digest_is_content_only():
    pool = make_pool(20)
    same = Dataset.from_list(pool.to_list())
    assert dataset_digest(pool, ["messages", "id"]) == dataset_digest(same, ["messages", "id"])
    assert dataset_digest(make_pool(30).select(range(20)), ["messages"]) == dataset_digest(pool, ["messages"])
    rows = pool.to_list()
    rows[7]["messages"][1]["content"] += "!"
    assert dataset_digest(Dataset.from_list(rows), ["messages"]) != dataset_digest(pool, ["messages"])
    assert dataset_digest(pool.select(range(19, -1, -1)), ["messages"]) != dataset_digest(pool, ["messages"])


def test_file_digest_is_cached_and_follows_the_content(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    first = file_digest(path)
    assert json.loads((tmp_path / "cache" / "file_hashes.json").read_text())[str(path.resolve())]["sha256"] == first
    path.write_bytes(b"b" * 1000)  # same size, new content: the signature (mtime/ctime) changes
    assert file_digest(path) != first
    path.write_bytes(b"a" * 1000)
    assert file_digest(path) == first


def test_diff_keys_names_each_leaf():
    old = {"batch_size": 8, "base_model": {"files": {"w": "a" * 64}, "source": {"path": "/x"}}}
    new = {"batch_size": 4, "base_model": {"files": {"w": "b" * 64}, "source": {"path": "/y"}}}
    assert diff_keys(old, new) == [f"base_model.files.w: {'a' * 12} → {'b' * 12}", "batch_size: 8 → 4"]


# --------------------------------------------------------------------------------------------- identity classes


def test_rewarm_into_the_same_folder_gives_the_scores_of_a_fresh_build(warm, tiny_model_dir, pool, tmp_path):
    target = pool.select([0, 3])
    selector = LESSSelector(warm, gradient_config=GRAD, projection_config=PROJ)
    selector.select(pool, target, n=3)
    old = selector.scores_["target"]
    explicit = tmp_path / "explicit_ds"
    build_datastore(warm, pool, explicit, GRAD, PROJ)
    warmup(tiny_model_dir, pool, warm, tiny_warmup_config(learning_rate=3e-3), use_cpu=True, disable_tqdm=True)
    again = LESSSelector(warm, gradient_config=GRAD, projection_config=PROJ)
    again.select(pool, target, n=3)
    assert not np.allclose(again.scores_["target"], old)
    assert np.array_equal(again.scores_["target"], fresh_scores(warm, pool, target, tmp_path, "clean"))
    assert len(list(warm.glob("less_datastore/*/manifest.json"))) == 2  # built beside the old one, never reused
    with pytest.raises(DatastoreMismatchError, match=r"checkpoint\.files\.adapter_model\.safetensors: \w+ → \w+"):
        build_datastore(warm, pool, explicit, GRAD, PROJ)


def test_lost_manifest_never_makes_old_features_valid_for_a_new_pool(warm, pool, tmp_path):
    out = tmp_path / "ds"
    build_datastore(warm, pool, out, GRAD, PROJ)
    reference = features(out)
    (out / "manifest.json").unlink()
    other = pool.map(lambda r: {"messages": [{**m, "content": m["content"] + " ?"} for m in r["messages"]]})
    with pytest.raises(DatastoreMismatchError, match=r"pool\.content: \w+ → \w+.*--pool.*--datastore_dir"):
        build_datastore(warm, other, out, GRAD, PROJ)
    with pytest.raises(DatastoreMismatchError, match=r"projectors\[0\]\.seed: 5 → 6"):
        build_datastore(warm, pool, out, GRAD, ProjectionConfig(dims=[32], seed=6))
    store = build_datastore(warm, pool, out, GRAD, PROJ)  # same inputs: the finished folders are adopted
    store.verify()
    got = features(out)
    assert got.keys() == reference.keys() and all(np.array_equal(got[k], reference[k]) for k in got)


def test_damaged_manifest_is_rebuilt_from_the_folders_keys(warm, pool, tmp_path, caplog):
    out = tmp_path / "ds"
    build_datastore(warm, pool, out, GRAD, PROJ)
    text = (out / "manifest.json").read_text()
    (out / "manifest.json").write_text(text[: len(text) // 2])
    with caplog.at_level("WARNING"):
        store = build_datastore(warm, pool, out, GRAD, PROJ)
    assert "manifest.json is damaged" in caplog.text
    store.verify()
    assert store.manifest.status == "complete"


def interrupt_build(warm, pool, out, grad, monkeypatch) -> None:
    """Kill a build partway through its first checkpoint (an exception in the writer after two batches)."""
    original = FeatureWriter.write
    calls = {"n": 0}

    def crashing(self, rows, feats):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, rows, feats)

    monkeypatch.setattr(FeatureWriter, "write", crashing)
    with pytest.raises(KeyboardInterrupt):
        build_datastore(warm, pool, out, grad, PROJ)
    monkeypatch.setattr(FeatureWriter, "write", original)


@pytest.mark.parametrize(
    "other, field",
    [
        (GradientConfig(max_length=64, batch_size=2, device="cpu"), r"batch_size: 4 → 2.*--batch_size"),
        (GradientConfig(max_length=64, batch_size=4, device="cpu", dtype="bf16"), r"model_dtype: float32 → bfloat16"),
    ],
)
def test_resume_with_other_settings_is_refused_or_fresh(warm, pool, tmp_path, monkeypatch, other, field):
    out = tmp_path / "ds"
    interrupt_build(warm, pool, out, GRAD, monkeypatch)
    assert (out / "pool" / "checkpoint-3.part").is_dir()
    with pytest.raises(DatastoreMismatchError, match=field):
        build_datastore(warm, pool, out, other, PROJ)
    # the default location keys the folder by content: the other settings get a fresh build of their own
    interrupt_build(warm, pool, None, GRAD, monkeypatch)
    store = build_datastore(warm, pool, None, other, PROJ)
    fresh = build_datastore(warm, pool, tmp_path / "fresh", other, PROJ)
    got, want = features(store.directory), features(fresh.directory)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)
    assert len(list(warm.glob("less_datastore/*/manifest.json"))) == 2


# ---------------------------------------------------------------------------------------------- inputs checked


def first_checkpoint_optimizer(warm: Path) -> Path:
    """Make checkpoint-3 use the Trainer's optimizer.pt (drop the capture) and return that file."""
    shutil.rmtree(warm / "checkpoint-3" / "less_hf")
    return warm / "checkpoint-3" / "optimizer.pt"


@pytest.mark.parametrize("poison", ["sgd", "amsgrad", "negative_v", "inf_m", "missing_state", "no_step"])
def test_unusable_optimizer_state_is_refused_before_any_work(warm, pool, tmp_path, poison):
    path = first_checkpoint_optimizer(warm)
    saved = torch.load(path, weights_only=True)
    first = next(iter(saved["state"]))
    if poison == "sgd":
        saved = {"state": {}, "param_groups": [{**g, "betas": None} for g in saved["param_groups"]]}
        for g in saved["param_groups"]:
            del g["betas"]
    elif poison == "amsgrad":
        for state in saved["state"].values():
            state["max_exp_avg_sq"] = state["exp_avg_sq"].clone()
    elif poison == "negative_v":
        saved["state"][first]["exp_avg_sq"][0, 0] = -1.0
    elif poison == "inf_m":
        saved["state"][first]["exp_avg"][0, 0] = float("inf")
    elif poison == "missing_state":
        del saved["state"][first]
    elif poison == "no_step":
        del saved["state"][first]["step"]
    torch.save(saved, path)
    with pytest.raises(InputError, match=r"optimizer\.pt"):
        build_datastore(warm, pool, tmp_path / "ds", GRAD, PROJ)
    assert not list((tmp_path / "ds").rglob("*.npy"))


def test_captured_moments_with_negative_second_moment_are_refused(warm, pool, tmp_path):
    moments = warm / "checkpoint-6" / "less_hf" / "moments.safetensors"
    tensors = load_file(str(moments))
    name = next(k for k in tensors if k.endswith("::exp_avg_sq"))
    tensors[name][0, 0] = -0.5
    save_file(tensors, str(moments))
    with pytest.raises(OptimizerStateError, match="negative"):
        build_datastore(warm, pool, tmp_path / "ds", GRAD, PROJ)
    assert not list((tmp_path / "ds").rglob("*.npy"))


def test_nan_adapter_is_refused_and_the_fixed_checkpoint_selects_correctly(warm, pool, tmp_path):
    adapter = warm / "checkpoint-6" / "adapter_model.safetensors"
    backup = tmp_path / "adapter.bak"
    shutil.copy2(adapter, backup)
    tensors = load_file(str(adapter))
    name = sorted(tensors)[0]
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(adapter))
    target = pool.select([0, 3])
    selector = LESSSelector(warm, tmp_path / "ds", GRAD, PROJ)
    with pytest.raises(InputError, match=r"checkpoint-6.*NaN/inf"):
        selector.select(pool, target, n=3)
    assert not (tmp_path / "ds" / "manifest.json").exists() and not list((tmp_path / "ds").rglob("*.npy"))
    shutil.copy(backup, adapter)  # fixed
    fixed = LESSSelector(warm, tmp_path / "ds", GRAD, PROJ)
    fixed.select(pool, target, n=3)
    assert np.array_equal(fixed.scores_["target"], fresh_scores(warm, pool, target, tmp_path, "clean"))


def test_checkpoint_whose_every_row_is_nonfinite_is_never_finished(warm, pool, tmp_path, monkeypatch):
    from less_hf.gradients.featurizer import GradientFeaturizer

    original = GradientFeaturizer.features

    def nan_at_checkpoint_6(self, checkpoint, tokenized, done, transform, desc="Gradients"):
        for rows, feats in original(self, checkpoint, tokenized, done, transform, desc):
            if checkpoint.name == "checkpoint-6":
                feats = {d: np.full_like(f, np.nan) for d, f in feats.items()}
            yield rows, feats

    monkeypatch.setattr(GradientFeaturizer, "features", nan_at_checkpoint_6)
    with pytest.raises(NonFiniteFeaturesError, match="checkpoint-6"):
        build_datastore(warm, pool, tmp_path / "ds", GRAD, PROJ)
    assert not (tmp_path / "ds" / "pool" / "checkpoint-6").exists()
    assert not (tmp_path / "ds" / "pool" / "checkpoint-6.part").exists()
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["status"] == "building"
    monkeypatch.setattr(GradientFeaturizer, "features", original)
    build_datastore(warm, pool, tmp_path / "ds", GRAD, PROJ).verify()


def test_half_written_checkpoint_folder_gets_advice(warm, pool, tmp_path):
    broken = warm / "checkpoint-9"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{}")
    with pytest.raises(LessHFError, match=r"checkpoint-9 .*interrupted.*Delete that folder"):
        build_datastore(warm, pool, tmp_path / "ds", GRAD, PROJ)


# ----------------------------------------------------------------------------------------------- output folders


@pytest.fixture
def selected(pool):
    subset = pool.select(range(4)).add_column("less_score", [4.0, 3.0, 2.0, 1.0])
    subset = subset.add_column("less_score_rank", [0, 1, 2, 3])
    scores = np.linspace(1, 0, len(pool)).astype(np.float32)
    meta = {
        "schema_version": 2,
        "method": "less",
        "settings": {},
        "pool": {"spec": None, "n_rows": len(pool), "fingerprint": "x", "counts_per_source": None},
    }
    return subset, scores, meta


def metadata_for(meta, names, n=4):
    return {**meta, "targets": {k: {"n_selected": n, "scores_file": f"scores/{k}.npy"} for k in names}}


@pytest.mark.parametrize("name", ["..", "../../evil", "a/b", ".hidden", "selection.json", "scores", "my task", ""])
def test_unsafe_target_names_are_refused_and_nothing_outside_is_touched(tmp_path, selected, name):
    subset, scores, meta = selected
    out = tmp_path / "sel"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UnsafeNameError):
        save_selection(out, {name: subset}, {name: scores}, metadata_for(meta, [name]))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_names_equal_ignoring_case_are_refused(tmp_path, selected):
    subset, scores, meta = selected
    with pytest.raises(UnsafeNameError, match="ignoring case"):
        save_selection(tmp_path / "s", {"MMLU": subset, "mmlu": subset}, {"MMLU": scores, "mmlu": scores}, meta)


def test_tampered_selection_json_cannot_reach_outside(tmp_path, selected):
    subset, scores, meta = selected
    out = tmp_path / "deep" / "sel"
    save_selection(out, {"t": subset}, {"t": scores}, metadata_for(meta, ["t"]))
    data = json.loads((out / "selection.json").read_text())
    data["targets"]["../../evil"] = data["targets"].pop("t")
    (out / "selection.json").write_text(json.dumps(data))
    with pytest.raises(UnsafeNameError):
        export_selection(out, tmp_path / "export")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "export").exists()


def test_selection_folder_is_replaced_whole_or_not_at_all(tmp_path, selected, monkeypatch):
    subset, scores, meta = selected
    out = tmp_path / "sel"
    save_selection(out, {"t": subset}, {"t": scores}, metadata_for(meta, ["t"]))
    import less_hf.output.provenance as provenance

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(provenance, "write_atomic", crash)  # killed before selection.json of the new run
    with pytest.raises(KeyboardInterrupt):
        save_selection(out, {"t": subset.select(range(2)), "u": subset}, {"t": scores, "u": scores}, meta)
    monkeypatch.undo()
    assert len(load_selection(out)["targets"]) == 1  # still the old, complete selection, and it verifies
    save_selection(out, {"u": subset}, {"u": scores}, metadata_for(meta, ["u"]))  # a rerun cleans up the .part
    assert set(load_selection(out)["targets"]) == {"u"} and not (tmp_path / "sel.part").exists()
    assert not (out / "t").exists()


def test_inconsistent_selection_folder_is_refused_by_export_and_report(tmp_path, selected):
    from less_hf.output.report import write_report

    subset, scores, meta = selected
    out = tmp_path / "sel"
    save_selection(out, {"t": subset}, {"t": scores}, metadata_for(meta, ["t"]))
    shutil.rmtree(out / "t")
    subset.select(range(2)).save_to_disk(str(out / "t"))  # a subset of another run under the same name
    with pytest.raises(SelectionFolderError, match="inconsistent|differs"):
        export_selection(out, tmp_path / "export")
    with pytest.raises(SelectionFolderError):
        write_report(out)
    assert not (tmp_path / "export").exists()


def test_output_dir_holding_user_files_is_never_replaced(tmp_path, selected):
    subset, scores, meta = selected
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(SelectionFolderError, match="not a less_hf selection folder"):
        save_selection(out, {"t": subset}, {"t": scores}, metadata_for(meta, ["t"]))
    assert (out / "notes.txt").read_text() == "keep me"
    with pytest.raises(SelectionFolderError, match="'.' or '/'"):
        save_selection(Path(os.curdir), {"t": subset}, {"t": scores}, metadata_for(meta, ["t"]))


# ------------------------------------------------------------------------------------ more ways to break it


def test_moved_warmup_folder_reuses_its_datastore_without_recomputing(warm, pool, tmp_path, monkeypatch):
    from less_hf.gradients.featurizer import GradientFeaturizer

    target = pool.select([0, 3])
    selector = LESSSelector(warm, gradient_config=GRAD, projection_config=PROJ)
    selector.select(pool, target, n=3)
    moved = tmp_path / "moved" / "warm"
    moved.parent.mkdir()
    shutil.move(str(warm), str(moved))

    def refuse(*args, **kwargs):
        raise AssertionError("a moved warmup's datastore and target features must be reused")

    monkeypatch.setattr(GradientFeaturizer, "load", refuse)
    again = LESSSelector(moved, gradient_config=GRAD, projection_config=PROJ)
    again.select(pool, target, n=3)
    assert np.array_equal(again.scores_["target"], selector.scores_["target"])


def test_unrelated_pool_column_keeps_the_datastore_and_a_changed_row_does_not(warm, pool, tmp_path):
    out = tmp_path / "ds"
    created = build_datastore(warm, pool, out, GRAD, PROJ).manifest.created
    relabelled = pool.map(lambda r: {"source": r["source"].upper()})
    assert build_datastore(warm, relabelled, out, GRAD, PROJ).manifest.created == created  # features unaffected
    rows = pool.to_list()
    rows[10]["id"] = "renamed-10"
    with pytest.raises(DatastoreMismatchError, match=r"pool\.content"):
        build_datastore(warm, Dataset.from_list(rows), out, GRAD, PROJ)


def test_changed_target_rows_or_labels_get_new_features(warm, pool, tmp_path):
    from less_hf.datastore import build_target_features

    selector = LESSSelector(warm, tmp_path / "ds", GRAD, PROJ)
    store = selector.build_datastore(pool)
    target = pool.select(range(4))
    first = build_target_features(store, "t", target, selector.featurizer)
    labelled = target.add_column("subtask", ["a", "a", "b", "b"])
    second = build_target_features(store, "t", labelled, selector.featurizer)
    rows = target.to_list()
    rows[0]["messages"][1]["content"] = "something else"
    third = build_target_features(store, "t", Dataset.from_list(rows), selector.featurizer)
    assert len({first.directory, second.directory, third.directory}) == 3
    assert second.subtasks == ["a", "a", "b", "b"]
    assert not np.array_equal(first.features("checkpoint-3", 32)[0], third.features("checkpoint-3", 32)[0])


def test_stale_part_folder_of_other_inputs_is_discarded(warm, pool, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    interrupt_build(warm, pool, out, GRAD, monkeypatch)
    key_file = out / "pool" / "checkpoint-3.part" / "key.json"
    key = json.loads(key_file.read_text())
    key["checkpoint"]["files"]["adapter_model.safetensors"] = "0" * 64  # made from another adapter
    key_file.write_text(json.dumps(key))
    store = build_datastore(warm, pool, out, GRAD, PROJ)
    fresh = build_datastore(warm, pool, tmp_path / "fresh", GRAD, PROJ)
    got, want = features(store.directory), features(fresh.directory)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_corrupted_hash_cache_is_ignored(warm, pool, tmp_path):
    build_datastore(warm, pool, tmp_path / "ds", GRAD, PROJ)
    (tmp_path / "cache" / "file_hashes.json").write_text("{not json")
    assert build_datastore(warm, pool, tmp_path / "ds", GRAD, PROJ).manifest.status == "complete"


def test_flipped_npy_header_is_named_with_the_fix(warm, pool, tmp_path, capsys):
    from less_hf.cli import main

    from test_cli_errors import run_error

    pool.to_json(str(tmp_path / "pool.jsonl"))
    pool.select([0, 3]).to_json(str(tmp_path / "t.jsonl"))
    argv = ["select", "--warmup-dir", str(warm), "--pool", str(tmp_path / "pool.jsonl"), "--target"]
    argv += [f"t={tmp_path / 't.jsonl'}", "--datastore-dir", str(tmp_path / "ds"), "--max-length", "64"]
    argv += ["--batch-size", "4", "--dims", "32", "--seed", "5", "--n", "3", "--device", "cpu"]
    assert main([*argv, "--output-dir", str(tmp_path / "a")]) == 0
    path = tmp_path / "ds" / "pool" / "checkpoint-3" / "d32.npy"
    data = bytearray(path.read_bytes())
    data[8:12] = b"\xff\xff\xff\xff"  # the header length and its first bytes
    path.write_bytes(bytes(data))
    message = run_error([*argv, "--output-dir", str(tmp_path / "b")], capsys)
    assert "d32.npy" in message and "Delete" in message and "checkpoint-3" in message
    assert not (tmp_path / "b").exists()


def test_damaged_manifest_is_a_one_line_error_for_readers(warm, pool, tmp_path, capsys):
    from less_hf.cli import main

    from test_cli_errors import run_error

    build_datastore(warm, pool, tmp_path / "ds", GRAD, PROJ)
    (tmp_path / "ds" / "manifest.json").write_text('{"schema_version": 2, "checkpoints": [')
    assert "manifest.json is damaged" in run_error(["info", str(tmp_path / "ds")], capsys)
    assert main(["info", str(warm)]) == 0


def test_modified_selection_files_are_refused(tmp_path, selected):
    subset, scores, meta = selected
    out = tmp_path / "sel"
    save_selection(out, {"t": subset}, {"t": scores}, metadata_for(meta, ["t"]))
    np.save(out / "scores" / "t.npy", scores[::-1].copy())
    with pytest.raises(SelectionFolderError, match=r"t\.npy differs"):
        load_selection(out)
    save_selection(out, {"t": subset}, {"t": scores}, metadata_for(meta, ["t"]))
    (out / "t" / "extra.arrow").write_bytes(b"x")
    with pytest.raises(SelectionFolderError, match="inconsistent"):
        load_selection(out)


def test_selection_of_an_older_schema_is_refused(tmp_path, selected):
    subset, scores, meta = selected
    out = tmp_path / "sel"
    save_selection(out, {"t": subset}, {"t": scores}, metadata_for(meta, ["t"]))
    data = json.loads((out / "selection.json").read_text())
    data["schema_version"] = 1
    (out / "selection.json").write_text(json.dumps(data))
    with pytest.raises(SelectionFolderError, match="schema_version 1.*select"):
        load_selection(out)


def test_model_identity_ignores_files_that_cannot_change_a_gradient(tiny_model_dir, tmp_path):
    from less_hf.datastore.keys import model_identity

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    before = model_identity(str(copy))
    (copy / "README.md").write_text("# my model")
    (copy / "generation_config.json").write_text("{}")
    assert model_identity(str(copy))["files"] == before["files"]
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ messages }}"
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    assert diff_keys(before, model_identity(str(copy))) == [
        f"files.tokenizer_config.json: {before['files']['tokenizer_config.json'][:12]} → "
        f"{model_identity(str(copy))['files']['tokenizer_config.json'][:12]}"
    ]


def test_demo_refuses_a_warmup_left_with_other_settings(tmp_path):
    from less_hf.config import WarmupConfig
    from less_hf.datastore.atomic import write_json_atomic
    from less_hf.demo import DEMO_WARMUP_FILE, _check_reused_warmup

    (tmp_path / "checkpoint-5").mkdir()
    write_json_atomic(tmp_path / DEMO_WARMUP_FILE, {"warmup": WarmupConfig(epochs=2).to_dict(), "pool_size": 400})
    _check_reused_warmup(tmp_path, WarmupConfig(epochs=2), 400)  # same settings: reused
    with pytest.raises(InputError, match=r"other settings \(warmup\.epochs: 2 → 4\).*--output_dir"):
        _check_reused_warmup(tmp_path, WarmupConfig(epochs=4), 400)
    (tmp_path / DEMO_WARMUP_FILE).unlink()
    with pytest.raises(InputError, match="unknown"):
        _check_reused_warmup(tmp_path, WarmupConfig(epochs=2), 400)
