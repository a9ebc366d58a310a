# ruff: noqa: E501
"""Every user error on the command line ends in one `error:` line and exit status 2, never a traceback, and writes
nothing. Cases run with the BM25 selector (no model) unless they are about the warmup."""

from __future__ import annotations

import json

import pytest

from less_hf.cli import main

from conftest import make_pool


@pytest.fixture
def files(tmp_path):
    """A pool and a target as JSON Lines, and the base select command over them."""
    pool = make_pool(12)
    pool.to_json(str(tmp_path / "pool.jsonl"))
    pool.select([0, 3]).to_json(str(tmp_path / "target.jsonl"))
    base = ["select", "--method", "bm25", "--pool", str(tmp_path / "pool.jsonl")]
    return tmp_path, base + ["--target", f"t={tmp_path / 'target.jsonl'}", "--output-dir", str(tmp_path / "out")]


def run_error(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in stderr, stderr
    return errors[0]


def write(path, text):
    path.write_text(text)
    return str(path)


CASES = {
    "empty pool file": (lambda d, a: _swap(a, "--pool", write(d / "e.jsonl", "")), "is empty"),
    "blank pool file": (lambda d, a: _swap(a, "--pool", write(d / "b.jsonl", "\n\n  \n")), "is empty"),
    "empty target file": (lambda d, a: _swap(a, "--target", f"t={write(d / 'e.jsonl', '')}"), "is empty"),
    "malformed pool file": (lambda d, a: _swap(a, "--pool", write(d / "m.jsonl", '{"text": "a"}\n{oops\n')), "could not be read"),
    "pool without a known format": (lambda d, a: _swap(a, "--pool", write(d / "c.jsonl", '{"question": "a"}\n')), "Cannot tell the dataset format"),
    "missing pool file": (lambda d, a: _swap(a, "--pool", str(d / "nope.jsonl")), "does not exist"),
    "target name ..": (lambda d, a: _swap(a, "--target", f"..={d / 'target.jsonl'}"), "cannot name a folder"),
    "target name with a separator": (lambda d, a: _swap(a, "--target", f"a/b={d / 'target.jsonl'}"), "cannot name a folder"),
    "target name with a space": (lambda d, a: _swap(a, "--target", f"my task={d / 'target.jsonl'}"), "cannot name a folder"),
    "reserved target name": (lambda d, a: _swap(a, "--target", f"scores={d / 'target.jsonl'}"), "reserved"),
    "duplicate target names": (lambda d, a: a + ["--target", f"t={d / 'target.jsonl'}"], "distinct"),
    "target spec without =": (lambda d, a: _swap(a, "--target", "just-a-name"), "NAME=PATH"),
    "n = 0": (lambda d, a: a + ["--n", "0"], "n must be >= 1"),
    "n larger than the pool": (lambda d, a: a + ["--n", "99"], "larger than the pool"),
    "fraction above 1": (lambda d, a: a + ["--fraction", "1.5"], "fraction must be <= 1"),
    "block rows 0": (lambda d, a: a + ["--block-rows", "0"], "block_rows must be >= 1"),
    "flush every 0 (config file)": (lambda d, a: a + ["--config", write(d / "c.yaml", "flush_every: 0\n")], "flush_every must be >= 1"),
    "YAML list for a scalar": (lambda d, a: a + ["--config", write(d / "c.yaml", "fraction: [0.1]\n")], "takes a single value"),
    "YAML wrong type": (lambda d, a: a + ["--config", write(d / "c.yaml", "n: many\n")], "expected a whole number"),
    "YAML syntax error": (lambda d, a: a + ["--config", write(d / "c.yaml", "n: [1\nfraction: 2\n")], "not valid YAML at line"),
    "YAML not a mapping": (lambda d, a: a + ["--config", write(d / "c.yaml", "- 1\n- 2\n")], "mapping"),
    "JSON syntax error": (lambda d, a: a + ["--config", write(d / "c.json", "{oops")], "not valid JSON"),
    "unknown config key": (lambda d, a: a + ["--config", write(d / "c.json", '{"bogus": 1}')], "unknown option 'bogus'"),
    "missing config file": (lambda d, a: a + ["--config", str(d / "none.yaml")], "does not exist"),
    "config bool not a bool": (lambda d, a: a + ["--config", write(d / "c.json", '{"allow_fewer": "yes please"}')], "true or false"),
    "output dir with user files": (lambda d, a: _user_files(d, a), "not a less_hf selection folder"),
    "output dir is .": (lambda d, a: _swap(a, "--output-dir", "."), "'.' or '/'"),
    "less without warmup dir": (lambda d, a: _swap(a, "--method", "less"), "needs --warmup_dir"),
    "warmup dir missing": (lambda d, a: _swap(a, "--method", "less") + ["--warmup-dir", str(d / "none")], "does not exist"),
    "warmup dir without checkpoints": (lambda d, a: _swap(a, "--method", "less") + ["--warmup-dir", str(d)], "No checkpoint-N"),
}  # fmt: skip


def _swap(argv, flag, value):
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


def _user_files(d, argv):
    (d / "out").mkdir()
    (d / "out" / "mine.txt").write_text("keep")
    return argv


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line_and_writes_nothing(files, capsys, case):
    tmp_path, argv = files
    make, expected = CASES[case]
    message = run_error(make(tmp_path, argv), capsys)
    assert expected in message, message
    out = tmp_path / "out"
    assert not out.exists() or [p.name for p in out.iterdir()] == ["mine.txt"]
    assert not (tmp_path / "out.part").exists()


def test_none_message_content_names_the_row_and_its_id(tokenizer):
    from less_hf.errors import InputError
    from less_hf.tokenization import tokenize_dataset

    rows = make_pool(6).to_list()
    rows[4]["messages"][1]["content"] = None
    from datasets import Dataset

    with pytest.raises(InputError, match=r"row 4 \(id 'capital-4'\).*messages\[1\] \(role 'assistant'\) has content"):
        tokenize_dataset(Dataset.from_list([{**r, "messages": r["messages"]} for r in rows]), tokenizer)


def test_export_and_info_of_something_else_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert "not a selection folder" in run_error(["export", str(tmp_path / "x"), str(tmp_path / "e")], capsys)
    assert "not a less_hf folder" in run_error(["info", str(tmp_path / "x")], capsys)
    assert not (tmp_path / "e").exists()


def test_allow_fewer_takes_every_selectable_row(files, capsys):
    tmp_path, argv = files
    assert main(argv + ["--n", "12", "--allow-fewer"]) == 0
    assert json.loads((tmp_path / "out" / "selection.json").read_text())["targets"]["t"]["n_selected"] == 12
