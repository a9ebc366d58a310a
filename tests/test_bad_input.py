"""The bad-input catalogue: each case gets a clear error (what, where, how to fix) and leaves nothing half-written."""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from less_hf import GradientConfig, ProjectionConfig, build_datastore
from less_hf.capture import moments_from_hf_checkpoint
from less_hf.capture.optimizer_state import CAPTURE_DIR
from less_hf.datastore import Manifest
from less_hf.tokenization import tokenize_dataset

from conftest import make_model, make_pool

GRAD = GradientConfig(max_length=64, batch_size=4, device="cpu")
PROJ = ProjectionConfig(dims=[16])


@pytest.fixture(scope="module")
def small_store(warmup_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "ds"
    build_datastore(warmup_dir, make_pool(4), out, GRAD, PROJ)
    return out


def test_empty_pool(warmup_dir, tmp_path):
    with pytest.raises(ValueError, match="pool is empty"):
        build_datastore(warmup_dir, make_pool(4).select([]), tmp_path / "ds", GRAD, PROJ)
    assert not (tmp_path / "ds").exists()


def test_duplicate_ids(warmup_dir, tmp_path):
    rows = make_pool(4).to_list()
    rows[3]["id"] = rows[1]["id"]
    with pytest.raises(ValueError, match=r"duplicates, e.g. 'capital-1' \(rows 1 and 3\).*unique"):
        build_datastore(warmup_dir, Dataset.from_list(rows), tmp_path / "ds", GRAD, PROJ)
    assert not (tmp_path / "ds").exists()


def test_long_rows_are_truncated_with_a_counted_warning(tokenizer, caplog):
    rows = [{"prompt": "what is " * 40, "completion": " red"}, {"prompt": "hi", "completion": " blue"}]
    with caplog.at_level(logging.WARNING):
        out = tokenize_dataset(Dataset.from_list(rows), tokenizer, max_length=16)
    assert out["truncated"] == [True, False]
    assert "1 of 2 rows are longer than max_length=16" in caplog.text
    assert out[0]["num_supervised"] > 0  # keep_completion: the prompt was cut, the completion kept


def test_fully_truncated_completion_has_no_loss(tokenizer):
    rows = [{"prompt": "what is " * 40, "completion": " red"}]
    out = tokenize_dataset(Dataset.from_list(rows), tokenizer, max_length=16, truncation="right")
    assert out[0]["num_supervised"] == 0  # marked invalid by the build, refused for a target (test_datastore)


@pytest.mark.parametrize(
    "row,match",
    [
        ({"id": "r7", "prompt": None, "completion": "x"}, r"row 1 \(id 'r7'\): column 'prompt' is empty"),
        ({"id": "r7", "prompt": "p", "completion": 5}, r"row 0 \(id 'r7'\): column 'completion' holds a int"),
    ],
)
def test_bad_row_values_name_the_row(tokenizer, row, match):
    good = {"id": "r0", "prompt": "p", "completion": "x"}
    if isinstance(row["completion"], int):  # arrow needs one type per column: the bad row alone
        ds = Dataset.from_list([row])
    else:
        ds = Dataset.from_list([good, row])
    with pytest.raises(ValueError, match=match):
        tokenize_dataset(ds, tokenizer)


def test_projection_dim_larger_than_the_gradient(warmup_dir, tmp_path):
    with pytest.raises(ValueError, match=r"exceed the gradient's dimension D=3584"):
        build_datastore(warmup_dir, make_pool(4), tmp_path / "ds", GRAD, ProjectionConfig(dims=[16, 4096]))
    assert not list((tmp_path / "ds").rglob("*.npy"))


def test_datastore_from_another_model_is_refused(small_store, warmup_dir, tiny_model_dir, tokenizer, tmp_path):
    """The base model is keyed by its files' content: a moved copy is the same model (reused), other weights in the
    same shape are another model (refused, naming the file that differs)."""
    copy = tmp_path / "copy_of_model"
    shutil.copytree(tiny_model_dir, copy)
    before = Manifest.load(small_store).created
    assert (
        build_datastore(warmup_dir, make_pool(4), small_store, GRAD, PROJ, base_model=str(copy)).manifest.created
        == before
    )
    other = tmp_path / "other_model"
    make_model(len(tokenizer), seed=1).save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(
        ValueError, match=r"other inputs .*base_model\.files\.model\.safetensors: \w+ → \w+.*--base_model"
    ):
        build_datastore(warmup_dir, make_pool(4), small_store, GRAD, PROJ, base_model=str(other))
    assert Manifest.load(small_store).status == "complete"


def test_adapter_that_does_not_fit_the_base_model(warmup_dir, tokenizer, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    base = make_model(len(tokenizer))
    config = LlamaConfig(**{**base.config.to_dict(), "hidden_size": 32, "intermediate_size": 64})
    other = tmp_path / "narrow_model"
    LlamaForCausalLM(config).save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(ValueError, match="does not fit the base model .*another model"):
        build_datastore(warmup_dir, make_pool(4), tmp_path / "ds", GRAD, PROJ, base_model=str(other))
    assert not list((tmp_path / "ds").rglob("*.npy"))


def _uncaptured_copy(warmup_dir, tmp_path) -> Path:
    copy = tmp_path / "warmup"
    shutil.copytree(warmup_dir, copy, ignore=shutil.ignore_patterns("less_datastore*"))
    for checkpoint in copy.glob("checkpoint-*"):
        shutil.rmtree(checkpoint / CAPTURE_DIR)
    return copy


def test_checkpoint_with_neither_capture_nor_optimizer_state(warmup_dir, tmp_path):
    copy = _uncaptured_copy(warmup_dir, tmp_path)
    for checkpoint in copy.glob("checkpoint-*"):
        (checkpoint / "optimizer.pt").unlink()
    with pytest.raises(FileNotFoundError, match="neither a less_hf capture nor optimizer.pt.*GradientCaptureCallback"):
        build_datastore(copy, make_pool(4), tmp_path / "ds", GRAD, PROJ)
    assert not list((tmp_path / "ds").rglob("*.npy"))


def test_optimizer_file_of_a_non_adam_optimizer(warmup_dir, tmp_path):
    copy = _uncaptured_copy(warmup_dir, tmp_path)
    for checkpoint in copy.glob("checkpoint-*"):
        saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
        saved["state"] = {i: {"momentum_buffer": s["exp_avg"]} for i, s in saved["state"].items()}
        torch.save(saved, checkpoint / "optimizer.pt")
    with pytest.raises(ValueError, match="momentum_buffer.*not Adam's.*adamw_torch"):
        build_datastore(copy, make_pool(4), tmp_path / "ds", GRAD, PROJ)


class _Payload:
    """Unpickling this would create a file: a stand-in for code hidden in a downloaded checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_optimizer_file_with_pickled_code_is_never_executed(warmup_dir, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    checkpoint = tmp_path / "checkpoint-1"
    shutil.copytree(next(Path(warmup_dir).glob("checkpoint-*")), checkpoint)
    marker = tmp_path / "pwned"
    with open(checkpoint / "optimizer.pt", "wb") as f:
        pickle.dump({"state": _Payload(str(marker)), "param_groups": []}, f)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True)
    with pytest.raises(ValueError, match="cannot be loaded safely.*never unpickles code"):
        moments_from_hf_checkpoint(checkpoint, model)
    assert not marker.exists()


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["warmup", "--pool", "p.jsonl", "--output-dir", "w", "--model", "/no/such/model"], "--model"),
        (["select", "--pool", "p.jsonl", "--output-dir", "o", "--base-model", "./missing-model"], "--base-model"),
        (["select", "--pool", "p.jsonl", "--output-dir", "o", "--embedding-model", "~/no-such-encoder"],
         "--embedding-model"),
    ],
)  # fmt: skip
def test_missing_model_folder_is_named_on_the_command_line(argv, flag, capsys):
    from less_hf.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "no such folder" in err and "Hub id" in err


def test_model_option_accepts_a_folder_and_a_hub_id_and_refuses_a_file(tiny_model_dir, tmp_path):
    import argparse

    from less_hf.cli import model_ref

    assert model_ref(tiny_model_dir) == tiny_model_dir
    assert model_ref("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(argparse.ArgumentTypeError, match="is a file; give the model's folder"):
        model_ref(str(tmp_path / "weights.bin"))
