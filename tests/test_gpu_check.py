"""benchmarks/gpu_check.py runs on the CPU with --tiny, without the packages the lent GPU machine lacks, so the
script is ready the day a GPU is lent (it cannot rot unnoticed)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

# The device machine has torch, transformers, peft, accelerate, safetensors and numpy, but not these.
RUN_WITHOUT_MISSING_PACKAGES = """
import runpy, sys
for name in ("datasets", "trl", "faiss"):
    sys.modules[name] = None  # `import datasets` now raises ImportError, as on the device machine
sys.argv = ["benchmarks/gpu_check.py", *sys.argv[1:]]
runpy.run_path("benchmarks/gpu_check.py", run_name="__main__")
"""


def test_tiny_run_writes_every_section_and_parity_passes(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_MISSING_PACKAGES, "--tiny", "--device", "cpu", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["tiny"] is True and data["environment"]["device"] == "cpu"
    sections = data["sections"]
    assert {k: v["status"] for k, v in sections.items()} == dict.fromkeys(
        ["parity", "bf16", "throughput", "scoring"], "ok"
    )

    parity = sections["parity"]
    assert parity["compared"] == "cpu-cpu"
    assert parity["hashes_bit_equal"] is True
    for key in ("gradient_rel_error", "feature_rel_error", "target_feature_rel_error"):
        assert parity[key] <= 1e-4, key
    assert parity["scores_spearman"] >= 0.9999
    assert parity["passed"] is True

    bf16 = sections["bf16"]
    for key in ("feature_rel_error", "scores_spearman", "top5_overlap", "bf16_repeat_rel_error"):
        assert math.isfinite(bf16[key]), key
    assert 0 < bf16["feature_rel_error"] < 0.5  # bf16 really ran (not fp32 twice), and is close to fp32
    assert 0 <= bf16["top5_overlap"] <= 1

    build = sections["throughput"]
    assert build["shape"] == "tiny" and build["D"] > 0 and build["rows_timed"] >= 1
    for key in ("plain_rows_s", "build_rows_s", "paper_rows_s", "paper_gradients_rows_s"):
        assert build[key] > 0, key
    assert build["paper_rows_s"] < build["paper_gradients_rows_s"]  # the projection costs something

    scoring = sections["scoring"]
    assert scoring["copy_gb_s"] > 0
    assert set(scoring["by_directions"]) == {"85", "1"}
    assert all(r["gb_s"] > 0 for r in scoring["by_directions"].values())

    markdown = (out / "gpu_check.md").read_text()
    for title in ("1. Parity, CPU vs CPU", "2. bf16 vs fp32", "3. Build throughput", "4. Scoring"):
        assert title in markdown


@pytest.fixture
def gpu_sections():
    """The script as a module, with one torch thread (as --tiny runs) while the test lasts."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import gpu_sections

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield gpu_sections
    torch.set_num_threads(threads)


def test_throughput_falls_back_to_smaller_batches_then_shapes(gpu_sections, monkeypatch):
    """Out of memory halves the batch, then moves to the next shape; too slow moves to the next shape at once."""

    real = gpu_sections.throughput_one
    tried = []

    def fake(shape, sizes, device, deadline, last):
        tried.append((shape, sizes.batch_size))
        if shape == "8b":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        if shape == "3b":
            raise gpu_sections.TooSlow("3b: one batch took 99 s (simulated)")
        return real("tiny", sizes, device, deadline, last)  # "1b" runs, on the tiny shape

    monkeypatch.setattr(gpu_sections, "throughput_one", fake)
    sizes = gpu_sections.replace(gpu_sections.TINY, batch_size=4)
    section = gpu_sections.throughput(sizes, torch.device("cpu"), float("inf"), "8b")
    assert tried == [("8b", 4), ("8b", 2), ("8b", 1), ("3b", 4), ("1b", 4)]
    assert len(section.data["shapes_skipped"]) == 4
    assert "out of memory" in section.data["shapes_skipped"][0] and "simulated" in section.data["shapes_skipped"][3]
    assert section.data["build_rows_s"] > 0


def test_throughput_reraises_other_errors(gpu_sections, monkeypatch):
    def broken(shape, sizes, device, deadline, last):
        raise ValueError("a bug, not a resource limit")

    monkeypatch.setattr(gpu_sections, "throughput_one", broken)
    with pytest.raises(ValueError, match="a bug"):
        gpu_sections.throughput(gpu_sections.TINY, torch.device("cpu"), float("inf"), "8b")
