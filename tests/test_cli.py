"""`less-hf` command line on the tiny model, and the lightness of `import less_hf`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from datasets import load_from_disk

from less_hf.cli import load_data, main


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, tiny_model_dir, pool):
    root = tmp_path_factory.mktemp("cli")
    pool.save_to_disk(str(root / "pool"))
    pool.filter(lambda r: r["source"] == "add").select(range(4)).to_json(str(root / "add.jsonl"))
    assert (
        main(
            [
                "warmup",
                "--model",
                tiny_model_dir,
                "--pool",
                str(root / "pool"),
                "--output-dir",
                str(root / "warm"),
                "--num-rows",
                "8",
                "--epochs",
                "2",
                "--lora-r",
                "4",
                "--lora-alpha",
                "8",
                "--per-device-batch-size",
                "4",
                "--gradient-accumulation-steps",
                "1",
                "--max-length",
                "64",
                "--learning-rate",
                "1e-3",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "select",
                "--warmup-dir",
                str(root / "warm"),
                "--pool",
                str(root / "pool"),
                "--target",
                f"add={root / 'add.jsonl'}",
                "--n",
                "5",
                "--dims",
                "128",
                "256",
                "--dim",
                "128",
                "--max-length",
                "64",
                "--output-dir",
                str(root / "out"),
            ]
        )
        == 0
    )
    return root


def test_warmup_writes_checkpoints_with_capture(cli_run):
    checkpoints = sorted(cli_run.glob("warm/checkpoint-*"))
    assert len(checkpoints) == 2
    assert all((c / "less_hf" / "moments.safetensors").exists() for c in checkpoints)


def test_select_saves_the_subset_with_scores(cli_run, pool):
    subset = load_from_disk(str(cli_run / "out" / "add"))
    assert len(subset) == 5
    assert set(pool.column_names) < set(subset.column_names)
    scores = subset["less_score"]
    assert scores == sorted(scores, reverse=True)
    assert (cli_run / "out" / "selection.json").exists()


def test_select_builds_several_dims_in_one_pass(cli_run):
    import json

    manifest = json.loads((cli_run / "warm" / "less_datastore" / "manifest.json").read_text())
    assert [p["dim"] for p in manifest["projectors"]] == [128, 256]
    assert (cli_run / "warm" / "less_datastore" / "pool" / "checkpoint-2" / "d256.npy").exists()


def test_bad_target_spec_is_a_clear_error(cli_run):
    with pytest.raises(SystemExit, match="NAME=PATH"):
        main(
            [
                "select",
                "--warmup-dir",
                str(cli_run / "warm"),
                "--pool",
                str(cli_run / "pool"),
                "--target",
                "no-equals-sign",
                "--output-dir",
                str(cli_run / "x"),
            ]
        )


def test_load_data_rejects_unknown_paths(tmp_path):
    with pytest.raises(SystemExit, match="save_to_disk"):
        load_data(str(tmp_path / "missing.txt"))


def test_help_lists_config_fields():
    out = subprocess.run([sys.executable, "-m", "less_hf.cli", "select", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--optimizer-transform", "--aggregate", "--dims", "--fraction", "--storage-dtype"):
        assert flag in out.stdout


def test_import_is_light():
    code = (
        "import sys, less_hf; bad = [m for m in ('faiss', 'less_hf.assets', 'less_hf.demo', 'gguf') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
