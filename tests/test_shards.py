"""Machines that share no filesystem: 2 processes each build their shard into their own folder
(`less-hf build --shard K/2`), `less-hf merge-shards` combines them, and the result equals, byte for byte and key for
key, the datastore one process builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from less_hf.cli import main
from less_hf.datastore import merge_shards
from less_hf.datastore.distributed import Shard, parse_shard
from less_hf.errors import ConfigError, LessHFError

BUILD = ["--max_length", "64", "--batch_size", "4", "--device", "cpu", "--dims", "256"]


@pytest.fixture(scope="module")
def split_build(tmp_path_factory, warmup_dir):
    from conftest import make_pool

    root = tmp_path_factory.mktemp("shards")
    pool = root / "pool.jsonl"
    make_pool().to_json(pool)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    common = ["build", "--warmup_dir", str(warmup_dir), "--pool", str(pool), *BUILD]
    jobs = [  # two separate processes, two folders, no process group between them
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "less_hf.cli",
                *common,
                "--datastore_dir",
                str(root / f"shard{k}"),
                "--shard",
                f"{k}/2",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    for job in jobs:
        out, err = job.communicate(timeout=600)
        assert job.returncode == 0, err[-3000:]
        assert "merge-shards" in out
    assert main([*common, "--datastore_dir", str(root / "single")]) == 0
    return root, common


@pytest.mark.slow
def test_merged_shards_equal_a_single_process_build(split_build):
    root, _ = split_build
    for k in range(2):  # each shard folder holds only its own rows, unfinished
        assert json.loads((root / f"shard{k}" / "shard.json").read_text())["rank"] == k
        assert not list((root / f"shard{k}" / "pool").glob("checkpoint-*[0-9]"))
    assert (
        main(["merge-shards", "--output_dir", str(root / "merged"), str(root / "shard1"), str(root / "shard0")]) == 0
    )

    single, merged = root / "single", root / "merged"
    names = sorted(str(p.relative_to(single)) for p in single.rglob("*") if p.is_file() and p.name != ".lock")
    assert names == sorted(str(p.relative_to(merged)) for p in merged.rglob("*") if p.is_file() and p.name != ".lock")
    assert any(n.endswith("d256.npy") for n in names)
    for name in names:
        if name != "manifest.json":
            assert (single / name).read_bytes() == (merged / name).read_bytes(), name
    one, two = (json.loads((d / "manifest.json").read_text()) for d in (single, merged))
    assert one["status"] == two["status"] == "complete"
    for field in ("key", "files", "invalid_rows", "checkpoints", "projectors", "n_rows", "num_params"):
        assert one[field] == two[field], field

    from less_hf.datastore import Datastore

    Datastore.open(merged)  # opens and verifies like any datastore


@pytest.mark.slow
def test_merge_refuses_shards_that_do_not_fit(split_build, tmp_path):
    root, _ = split_build
    shard0, shard1 = str(root / "shard0"), str(root / "shard1")
    for shards, message in (
        ([shard0], "exactly once"),
        ([shard0, shard0], "exactly once"),
        ([shard0, str(root / "single")], "not a finished shard"),
    ):
        with pytest.raises(LessHFError, match=message):
            merge_shards(tmp_path / "out", shards)
    assert main(["merge-shards", "--output_dir", str(tmp_path / "out"), shard0]) == 2
    with pytest.raises(LessHFError, match="already holds a datastore"):
        merge_shards(root / "single", [shard0, shard1])


def test_shard_spec(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert parse_shard("auto") == Shard(3, 4, None, separate=True)  # as `accelerate launch` sets them
    assert parse_shard("1/4") == Shard(1, 4, None, separate=True)
    assert parse_shard("1/4").is_main  # a separate shard creates its own folder's files
    for bad in ("4/4", "0/1", "x", "1/-2"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    assert not Shard(1, 4).is_main


def test_shard_needs_a_datastore_dir(capsys, tmp_path):
    assert main(["build", "--warmup_dir", str(tmp_path), "--pool", str(tmp_path / "p.jsonl"), "--shard", "0/2"]) == 2
    assert "--datastore_dir" in capsys.readouterr().err


@pytest.mark.slow
def test_packed_shards_merge_with_their_scales(split_build):
    """A 1-bit build's shards carry per-row scales beside the packed bytes; the merge copies both."""
    root, common = split_build
    packed = [*common, "--storage_dtype", "int1"]
    for k in range(2):  # one after the other in this process: the split is by rank, not by timing
        assert main([*packed, "--datastore_dir", str(root / f"p_shard{k}"), "--shard", f"{k}/2"]) == 0
    assert (
        main(["merge-shards", "--output_dir", str(root / "p_merged"), str(root / "p_shard0"), str(root / "p_shard1")])
        == 0
    )
    assert main([*packed, "--datastore_dir", str(root / "p_single")]) == 0
    single, merged = root / "p_single", root / "p_merged"
    files = sorted(str(p.relative_to(single)) for p in single.rglob("*.npy"))
    assert any(n.endswith("d256.scales.npy") for n in files)
    for name in files:
        assert (single / name).read_bytes() == (merged / name).read_bytes(), name
