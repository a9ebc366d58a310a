"""`less-hf` command line on the tiny model, and the lightness of `import less_hf`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk

from less_hf.cli import build_parser, config_from_args, load_data, main
from less_hf.config import GradientConfig, ProjectionConfig, SelectionConfig, WarmupConfig
from less_hf.errors import LessHFError


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
    build = ["build", "--warmup-dir", str(root / "warm"), "--pool", str(root / "pool"), "--dims", "128", "256"]
    assert main([*build, "--max-length", "64"]) == 0
    # select through a YAML config file, with one flag overriding it
    (root / "select.yaml").write_text(
        f"warmup_dir: {root / 'warm'}\npool: {root / 'pool'}\ntarget: ['add={root / 'add.jsonl'}']\n"
        f"n: 7\ndims: [128, 256]\ndim: 128\nmax-length: 64\noutput_dir: {root / 'out'}\n"
    )
    assert main(["select", "--config", str(root / "select.yaml"), "--n", "5"]) == 0
    return root


def only_datastore(warmup_dir):
    """The one datastore in the default location (``less_datastore/<key digest>``)."""
    (manifest,) = list(warmup_dir.glob("less_datastore/*/manifest.json"))
    return manifest.parent


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

    manifest = json.loads((only_datastore(cli_run / "warm") / "manifest.json").read_text())
    assert [p["dim"] for p in manifest["projectors"]] == [128, 256]
    assert (only_datastore(cli_run / "warm") / "pool" / "checkpoint-2" / "d256.npy").exists()


def cli_error(argv, capsys) -> str:
    """Run the CLI on a user error: exit status 2, one `error:` line on stderr, no traceback; returns the line."""
    from test_cli_errors import run_error

    return run_error(argv, capsys)


def test_bad_target_spec_is_a_clear_error(cli_run, capsys):
    assert "NAME=PATH" in cli_error(
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
        ],
        capsys,
    )


def test_load_data_rejects_unknown_paths(tmp_path):
    with pytest.raises(LessHFError, match="does not exist.*save_to_disk"):
        load_data(str(tmp_path / "missing.jsonl"))
    (tmp_path / "rows.txt").write_text("hello")
    with pytest.raises(LessHFError, match="use .json/.jsonl/.parquet/.csv"):
        load_data(str(tmp_path / "rows.txt"))


def test_load_data_reads_files_folders_and_splits(tmp_path, pool):
    from datasets import DatasetDict

    small = pool.select(range(5))
    small.to_parquet(str(tmp_path / "p.parquet"))
    small.to_csv(str(tmp_path / "p.csv"))
    DatasetDict(train=small, test=pool.select(range(2))).save_to_disk(str(tmp_path / "dd"))
    assert load_data(str(tmp_path / "p.parquet")).to_list() == small.to_list()
    assert load_data(str(tmp_path / "p.csv")).num_rows == 5
    assert load_data(str(tmp_path / "dd")).num_rows == 5  # train by default
    assert load_data(f"{tmp_path / 'dd'}:test").num_rows == 2
    with pytest.raises(ValueError, match="splits"):
        load_data(f"{tmp_path / 'dd'}:validation")


def test_hub_dataset_name_offline_is_a_clear_error(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LessHFError, match="Hub dataset"):
        load_data("someone/no-such-dataset-less-hf")


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


def test_build_makes_the_datastore_select_reuses(cli_run):
    from less_hf.datastore.manifest import Manifest

    manifest = Manifest.load(only_datastore(cli_run / "warm"))
    assert manifest.status == "complete" and manifest.n_rows == 48 and manifest.max_length == 64


def test_config_file_values_apply_and_flags_override(cli_run):
    import json

    meta = json.loads((cli_run / "out" / "selection.json").read_text())
    assert meta["settings"]["selection"]["n"] == 5  # the flag beat the file's 7
    assert meta["settings"]["projection"]["dims"] == [128, 256]  # from the file
    assert meta["settings"]["gradient"]["max_length"] == 64  # 'max-length' key in the file


def test_config_file_unknown_key_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "c.json").write_text('{"warmup_dir": "w", "bogus_option": 1}')
    assert "unknown option 'bogus_option'" in cli_error(["select", "--config", str(tmp_path / "c.json")], capsys)


def test_missing_required_option_names_it(tmp_path, capsys):
    assert "--pool" in cli_error(["build", "--warmup-dir", str(tmp_path)], capsys)


def test_every_subcommand_has_help_with_defaults():
    parser = build_parser()
    for name in ("warmup", "build", "select", "report", "export", "push", "info", "demo"):
        text = parser._less_subparsers[name].format_help()
        assert "--config" in text, name
    assert "(default: 0.05)" in parser._less_subparsers["warmup"].format_help()
    assert "(default: less)" in parser._less_subparsers["select"].format_help()


def test_info_describes_datastore_warmup_checkpoint_and_selection(cli_run, capsys):
    import json

    from less_hf.output.info import describe

    ds = describe(only_datastore(cli_run / "warm"))
    assert ds["kind"] == "datastore" and ds["dims"] == [128, 256] and ds["rows"] == 48
    assert 0 < ds["valid_rows"] <= 48 and ds["size_on_disk"] > 48 * 128 * 2
    assert sum(c["weight"] for c in ds["checkpoints"]) == pytest.approx(1.0)
    warm = describe(cli_run / "warm")
    assert Path(warm["base_model"]).is_dir()  # the warmup's base model, resolvable from anywhere
    assert warm["kind"] == "warmup" and [c["step"] for c in warm["checkpoints"]] == [2, 4]
    assert all(c["captured"] for c in warm["checkpoints"])
    ckpt = describe(cli_run / "warm" / "checkpoint-2")
    assert ckpt["kind"] == "checkpoint" and ckpt["step"] == 2
    assert describe(cli_run / "out")["targets"]["add"]["n_selected"] == 5
    assert main(["info", str(only_datastore(cli_run / "warm"))]) == 0
    assert "η̄" in capsys.readouterr().out
    assert main(["info", "--json", str(cli_run / "warm")]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "warmup"
    assert "not a less_hf folder" in cli_error(["info", str(cli_run)], capsys)


def test_export_and_report_commands(cli_run):
    from datasets import load_dataset

    assert main(["export", str(cli_run / "out"), str(cli_run / "export")]) == 0
    exported = load_dataset(str(cli_run / "export"), name="add", split="train", cache_dir=str(cli_run / "hf"))
    assert exported.to_list() == load_from_disk(str(cli_run / "out" / "add")).to_list()
    assert main(["report", str(cli_run / "out")]) == 0
    assert (cli_run / "out" / "report.html").stat().st_size > 10_000
    assert (cli_run / "out" / "report_files" / "add_histogram.png").exists()


def test_example_config_file_uses_only_known_options():
    from pathlib import Path

    import yaml

    data = yaml.safe_load((Path(__file__).parents[1] / "examples" / "select.yaml").read_text())
    sub = build_parser()._less_subparsers["select"]
    known = {o[2:].replace("-", "_") for a in sub._actions for o in a.option_strings if o.startswith("--")}
    assert set(data) <= set(known), set(data) - set(known)


@pytest.mark.parametrize("method", ["random", "bm25", "dsir", "rds", "rds_plus", "longest", "tsds"])
def test_select_every_method_by_name(cli_run, method):
    """`--method` reaches every selector of the registry through the same command and output layout."""
    out = cli_run / f"out-{method}"
    args = ["select", "--pool", str(cli_run / "pool"), "--target", f"add={cli_run / 'add.jsonl'}"]
    args += ["--output-dir", str(out), "--method", method, "--n", "4", "--max-length", "64"]
    if method in ("rds", "rds_plus", "tsds"):
        args += ["--warmup-dir", str(cli_run / "warm")]
    if method == "tsds":
        args += ["--tsds-sampling", "top", "--tsds-k", "16", "--tsds-kde-k", "16", "--dims", "128", "256"]
    assert main(args) == 0
    subset = load_from_disk(str(out / "add"))
    assert len(subset) == 4
    assert f"{method}_score" in subset.column_names
    assert (out / "selection.json").exists() and (out / "scores" / "add.npy").exists()
    settings = json.loads((out / "selection.json").read_text())["settings"]
    if method == "tsds":  # TSDS on LESS features records the warmup's model, checkpoints and projection
        assert settings["model"] and settings["checkpoints"] and settings["projection"]["dims"] == [128, 256]


def test_select_tsds_on_embeddings_needs_no_warmup(cli_run, tiny_model_dir):
    """`--tsds-features embeddings` runs TSDS on a sentence encoder's embeddings, without a warmup."""
    out = cli_run / "out-tsds-emb"
    args = ["select", "--pool", str(cli_run / "pool"), "--target", f"add={cli_run / 'add.jsonl'}"]
    args += ["--output-dir", str(out), "--method", "tsds", "--n", "4", "--tsds-features", "embeddings"]
    args += ["--embedding-model", tiny_model_dir, "--tsds-sampling", "top", "--tsds-k", "16", "--tsds-kde-k", "16"]
    assert main(args) == 0
    subset = load_from_disk(str(out / "add"))
    assert len(subset) == 4 and "tsds_score" in subset.column_names


def test_select_without_warmup_dir_for_less_is_a_clear_error(cli_run, capsys):
    args = ["select", "--pool", str(cli_run / "pool"), "--target", f"add={cli_run / 'add.jsonl'}"]
    args += ["--output-dir", str(cli_run / "out-none"), "--method", "less"]
    assert "needs --warmup_dir" in cli_error(args, capsys)


def test_select_combined_mode_writes_one_subset(cli_run):
    out = cli_run / "out-combined"
    args = ["select", "--pool", str(cli_run / "pool"), "--target", f"add={cli_run / 'add.jsonl'}"]
    args += ["--target", f"again={cli_run / 'add.jsonl'}", "--output-dir", str(out), "--method", "bm25"]
    assert main([*args, "--mode", "combined", "--n", "3"]) == 0
    assert len(load_from_disk(str(out / "combined"))) == 3


def test_select_round_robin_mode_names_each_rows_task(cli_run):
    out = cli_run / "out-rr"
    args = ["select", "--pool", str(cli_run / "pool"), "--target", f"add={cli_run / 'add.jsonl'}"]
    args += ["--target", f"again={cli_run / 'add.jsonl'}", "--output-dir", str(out), "--method", "bm25"]
    assert main([*args, "--mode", "round_robin", "--n", "4"]) == 0
    subset = load_from_disk(str(out / "combined"))
    assert len(subset) == 4 and subset["selected_for"] == ["add", "again", "add", "again"]
    assert json.loads((out / "selection.json").read_text())["policy"] == "round_robin"


def test_load_data_of_a_folder_rewritten_in_place_is_never_stale(tmp_path):
    """`datasets` caches a local data-files folder by its name; load_data must read what is there now."""
    from datasets import Dataset

    for n in (5, 3):
        folder = tmp_path / f"run{n}" / "export"
        (folder / "data").mkdir(parents=True)
        Dataset.from_dict({"text": [str(i) for i in range(n)]}).to_parquet(str(folder / "data" / "t-0.parquet"))
        assert len(load_data(str(folder))) == n
    Dataset.from_dict({"text": ["x"] * 7}).to_parquet(str(folder / "data" / "t-0.parquet"))
    assert len(load_data(str(folder))) == 7


def test_hf_style_flags_are_accepted():
    """Underscore flags as in every HF script, TrainingArguments' names, bare bool flags, one name per concept."""
    parser = build_parser()
    args = parser.parse_args(
        ["warmup", "--model", "/tmp", "--pool", "p.jsonl", "--output_dir", "o", "--num_train_epochs", "1"]
        + ["--per_device_train_batch_size", "2", "--bf16", "--use_cpu", "--learning_rate", "1e-4"]
    )
    assert args.output_dir == "o" and args.use_cpu
    warm = config_from_args(args, WarmupConfig)
    assert (warm.epochs, warm.per_device_batch_size, warm.bf16, warm.learning_rate) == (1, 2, True, 1e-4)
    args = parser.parse_args(
        ["select", "--pool", "p", "--target", "a=b", "--output_dir", "o", "--projection_dims", "64", "128"]
        + ["--score_dim", "64", "--projection_seed", "3", "--selection_seed", "2", "--max_length", "32"]
    )
    assert config_from_args(args, ProjectionConfig).dims == [64, 128]
    assert config_from_args(args, ProjectionConfig).seed == 3 and args.selection_seed == 2
    assert config_from_args(args, SelectionConfig).dim == 64
    assert config_from_args(args, GradientConfig).max_length == 32
    help_text = parser._less_subparsers["select"].format_help()
    assert "--projection_dims" in help_text and "WARMUPCONFIG" not in help_text and "PROJECTIONCONFIG" not in help_text
