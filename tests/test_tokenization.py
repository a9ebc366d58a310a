"""Tokenization: TRL formats → token ids with completion-only labels."""

from __future__ import annotations

import copy

import pytest
from datasets import Dataset

from less_hf.tokenization import IGNORE_INDEX, detect_format, tokenize_dataset, tokenize_row

END = "<|im_end|>"


def supervised_runs(ids, labels):
    """Contiguous runs of supervised positions, as lists of token ids (checks labels == ids where supervised)."""
    runs, current = [], []
    for tok, lab in zip(ids, labels):
        if lab == IGNORE_INDEX:
            if current:
                runs.append(current)
                current = []
        else:
            assert lab == tok, "a supervised label must be the token itself (unshifted)"
            current.append(tok)
    if current:
        runs.append(current)
    return runs


def first_supervised(labels):
    return next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)


def assert_turn(text: str, content: str):
    """A supervised turn is the assistant content plus the end token (plus only the template's trailing newline)."""
    assert text.removesuffix("\n") == content + END, repr(text)


def test_detect_format():
    assert detect_format(["messages", "id"]) == "messages"
    assert detect_format(["prompt", "completion", "text"]) == "prompt_completion"
    assert detect_format(["text", "prompt"]) == "text"
    with pytest.raises(ValueError) as err:
        detect_format(["question", "answer"])
    for word in ("messages", "prompt", "completion", "text"):
        assert word in str(err.value)


def test_messages_single_turn(tokenizer):
    messages = [{"role": "user", "content": "what is 2 plus 3 ?"}, {"role": "assistant", "content": "five"}]
    out = tokenize_row({"messages": messages}, tokenizer, "messages", max_length=512)
    ids, labels = out["input_ids"], out["labels"]
    assert len(ids) == len(labels)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(ids) == full
    first = first_supervised(labels)
    # everything before the completion is masked, and that prefix is exactly the prompt with the generation prompt
    assert all(lab == IGNORE_INDEX for lab in labels[:first])
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(ids[:first]) == prompt
    runs = supervised_runs(ids, labels)
    assert len(runs) == 1
    assert_turn(tokenizer.decode(runs[0]), "five")
    assert out["num_supervised"] == len(runs[0])


def test_messages_multi_turn_supervises_every_assistant_turn(tokenizer):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is 2 plus 3 ?"},
        {"role": "assistant", "content": "five"},
        {"role": "user", "content": "and 4 plus 4 ?"},
        {"role": "assistant", "content": "eight"},
        {"role": "user", "content": "reverse the words red blue"},
        {"role": "assistant", "content": "blue red"},
    ]
    out = tokenize_row({"messages": messages}, tokenizer, "messages")
    runs = supervised_runs(out["input_ids"], out["labels"])
    assert len(runs) == 3
    for run, content in zip(runs, ["five", "eight", "blue red"]):
        assert_turn(tokenizer.decode(run), content)
    # nothing of the system/user turns is supervised
    masked = tokenizer.decode([t for t, lab in zip(out["input_ids"], out["labels"]) if lab == IGNORE_INDEX])
    for text in ("be brief", "what is 2 plus 3 ?", "and 4 plus 4 ?", "reverse the words red blue"):
        assert text in masked
    assert out["num_supervised"] == sum(len(r) for r in runs)


def test_leading_assistant_turn_supervises_only_its_content(tokenizer):
    """A chat that opens with the assistant: its role header is template, not completion."""
    messages = [
        {"role": "assistant", "content": "hello there"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yes"},
    ]
    out = tokenize_row({"messages": messages}, tokenizer, "messages")
    runs = supervised_runs(out["input_ids"], out["labels"])
    assert len(runs) == 2
    assert_turn(tokenizer.decode(runs[0]), "hello there")
    assert_turn(tokenizer.decode(runs[1]), "yes")
    # the same through conversational prompt/completion with an empty prompt
    out = tokenize_row({"prompt": [], "completion": messages[:1]}, tokenizer, "prompt_completion")
    (run,) = supervised_runs(out["input_ids"], out["labels"])
    assert_turn(tokenizer.decode(run), "hello there")


def test_prompt_completion_strings(tokenizer):
    row = {"prompt": "question: what is 2 plus 3 ?\nanswer:", "completion": " five"}
    out = tokenize_row(row, tokenizer, "prompt_completion")
    ids, labels = out["input_ids"], out["labels"]
    first = first_supervised(labels)
    assert tokenizer.decode(ids[:first]) == row["prompt"]
    assert all(lab == IGNORE_INDEX for lab in labels[:first])
    assert all(lab != IGNORE_INDEX for lab in labels[first:])
    assert tokenizer.decode(ids[first:]) == row["completion"] + tokenizer.eos_token
    assert out["num_supervised"] == len(ids) - first


def test_conversational_prompt_completion(tokenizer):
    prompt = [
        {"role": "system", "content": "answer with a number"},
        {"role": "user", "content": "what is 1 plus 1 ?"},
        {"role": "assistant", "content": "two"},  # a few-shot turn inside the prompt: never supervised
        {"role": "user", "content": "what is 2 plus 3 ?"},
    ]
    completion = [{"role": "assistant", "content": "five"}]
    out = tokenize_row({"prompt": prompt, "completion": completion}, tokenizer, "prompt_completion")
    ids, labels = out["input_ids"], out["labels"]
    first = first_supervised(labels)
    assert tokenizer.decode(ids[:first]) == tokenizer.apply_chat_template(
        prompt, tokenize=False, add_generation_prompt=True
    )
    runs = supervised_runs(ids, labels)
    assert len(runs) == 1
    assert_turn(tokenizer.decode(runs[0]), "five")


def test_conversational_prompt_needs_conversational_completion(tokenizer):
    with pytest.raises(ValueError, match="completion"):
        tokenize_row(
            {"prompt": [{"role": "user", "content": "hi"}], "completion": "hello"}, tokenizer, "prompt_completion"
        )


def test_text_supervises_everything(tokenizer):
    out = tokenize_row({"text": "the cat and the dog"}, tokenizer, "text")
    ids, labels = out["input_ids"], out["labels"]
    assert labels == ids
    assert tokenizer.decode(ids) == "the cat and the dog" + tokenizer.eos_token
    assert out["num_supervised"] == len(ids) - 1  # the first label has no context


def long_prompt_row(n_words: int = 60):
    prompt = " ".join(["the red cat and the blue dog"] * (n_words // 7 + 1))
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": "seven"}]}


def test_truncation_keep_completion_keeps_the_completion(tokenizer):
    row = long_prompt_row()
    full = tokenize_row(row, tokenizer, "messages", max_length=10_000)
    assert len(full["input_ids"]) > 40
    out = tokenize_row(row, tokenizer, "messages", max_length=24, truncation="keep_completion")
    assert len(out["input_ids"]) == 24
    # the prompt is cut from the left: what is left is a suffix of the full row
    assert out["input_ids"] == full["input_ids"][-24:]
    assert out["labels"] == full["labels"][-24:]
    runs = supervised_runs(out["input_ids"], out["labels"])
    assert len(runs) == 1
    assert_turn(tokenizer.decode(runs[0]), "seven")
    assert out["num_supervised"] == full["num_supervised"] > 0


def test_truncation_keep_completion_long_completion(tokenizer):
    """A completion longer than max_length: the prompt goes entirely, the completion is cut from the right."""
    answer = " ".join(["one two three four five"] * 8)
    row = {"prompt": "count:", "completion": " " + answer}
    full = tokenize_row(row, tokenizer, "prompt_completion", max_length=10_000)
    first = first_supervised(full["labels"])
    out = tokenize_row(row, tokenizer, "prompt_completion", max_length=16, truncation="keep_completion")
    assert out["input_ids"] == full["input_ids"][first : first + 16]
    assert all(lab != IGNORE_INDEX for lab in out["labels"])
    assert out["num_supervised"] == 15


def test_truncation_right_can_remove_the_completion(tokenizer):
    row = long_prompt_row()
    full = tokenize_row(row, tokenizer, "messages", max_length=10_000)
    out = tokenize_row(row, tokenizer, "messages", max_length=24, truncation="right")
    assert out["input_ids"] == full["input_ids"][:24]
    assert all(lab == IGNORE_INDEX for lab in out["labels"])
    assert out["num_supervised"] == 0


def test_truncation_right_partial_completion(tokenizer):
    row = {"prompt": "count:", "completion": " one two three four five six seven"}
    full = tokenize_row(row, tokenizer, "prompt_completion", max_length=10_000)
    first = first_supervised(full["labels"])
    out = tokenize_row(row, tokenizer, "prompt_completion", max_length=first + 3, truncation="right")
    assert out["input_ids"] == full["input_ids"][: first + 3]
    assert out["num_supervised"] == 3


def test_short_rows_are_not_truncated(tokenizer):
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    a = tokenize_row(row, tokenizer, "messages", max_length=512, truncation="keep_completion")
    b = tokenize_row(row, tokenizer, "messages", max_length=512, truncation="right")
    assert a == b


def test_unknown_truncation_mode(tokenizer):
    with pytest.raises(ValueError, match="truncation"):
        tokenize_row({"text": "a"}, tokenizer, "text", truncation="left")


def test_chat_without_assistant_turn_has_no_supervised_token(tokenizer):
    out = tokenize_row({"messages": [{"role": "user", "content": "hello"}]}, tokenizer, "messages")
    assert out["num_supervised"] == 0
    assert all(lab == IGNORE_INDEX for lab in out["labels"])


def test_empty_assistant_content_still_supervises_the_end_token(tokenizer):
    out = tokenize_row(
        {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": ""}]},
        tokenizer,
        "messages",
    )
    (run,) = supervised_runs(out["input_ids"], out["labels"])
    assert_turn(tokenizer.decode(run), "")
    assert out["num_supervised"] == len(run) >= 1


def test_tokenize_dataset_formats(tokenizer, pool):
    out = tokenize_dataset(pool, tokenizer, max_length=64)
    assert sorted(out.column_names) == ["input_ids", "labels", "num_supervised", "truncated"]
    assert len(out) == len(pool)
    for row, tok in zip(pool, out):
        assert tok == tokenize_row(row, tokenizer, "messages", max_length=64)
        assert tok["num_supervised"] > 0
    pc = Dataset.from_list([{"prompt": "a ", "completion": "b"}, {"prompt": "what is", "completion": " red"}])
    assert len(tokenize_dataset(pc, tokenizer)) == 2
    text = Dataset.from_list([{"text": "the sun"}])
    assert tokenize_dataset(text, tokenizer)[0]["labels"] == tokenize_dataset(text, tokenizer)[0]["input_ids"]


def test_tokenize_dataset_unknown_columns(tokenizer):
    ds = Dataset.from_list([{"question": "q", "answer": "a"}])
    with pytest.raises(ValueError) as err:
        tokenize_dataset(ds, tokenizer)
    message = str(err.value)
    for word in ("messages", "prompt", "completion", "text"):
        assert word in message


def test_chat_row_without_chat_template(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    ds = Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}])
    with pytest.raises(ValueError, match="chat template"):
        tokenize_dataset(ds, plain)
    # string formats still work without a template
    assert tokenize_dataset(Dataset.from_list([{"prompt": "a", "completion": " b"}]), plain)[0]["num_supervised"] > 0


def test_pre_tokenized_rows_give_the_same_features_as_their_text(warmup_dir, pool, tokenizer, tmp_path):
    """Rows as plain-Trainer scripts make them (input_ids, attention_mask, labels with -100) are a pool like any
    other: the same tokens and loss mask give bit-identical LESS features."""
    import numpy as np
    from datasets import Dataset

    from less_hf import GradientConfig, ProjectionConfig, build_datastore

    grad, proj = GradientConfig(max_length=64, batch_size=4, device="cpu"), ProjectionConfig(dims=[32])
    text = pool.select(range(12))
    tokenized = tokenize_dataset(text, tokenizer, max_length=64)
    padded = []
    for row in tokenized:  # right-padded to one length, as a collator would
        pad = 40 - len(row["input_ids"])
        padded.append(
            {
                "input_ids": row["input_ids"] + [tokenizer.pad_token_id] * pad,
                "attention_mask": [1] * len(row["input_ids"]) + [0] * pad,
                "labels": row["labels"] + [-100] * pad,
            }
        )
    a = build_datastore(warmup_dir, text, tmp_path / "text", grad, proj)
    b = build_datastore(warmup_dir, Dataset.from_list(padded), tmp_path / "ids", grad, proj)
    for checkpoint in ("checkpoint-3", "checkpoint-6"):
        assert np.array_equal(a.pool_features(checkpoint, 32), b.pool_features(checkpoint, 32))
    assert np.array_equal(a.valid, b.valid)


def test_tokenized_rows_without_labels_supervise_every_token(tokenizer):
    from datasets import Dataset

    out = tokenize_dataset(Dataset.from_list([{"input_ids": [5, 6, 7, 8]}]), tokenizer, max_length=16)
    assert out[0]["labels"] == [5, 6, 7, 8] and out[0]["num_supervised"] == 3


def test_tokenized_rows_of_another_tokenizer_are_refused(tokenizer):
    from datasets import Dataset

    from less_hf.errors import InputError

    with pytest.raises(InputError, match=r"row 0: token id 99999 is outside the vocabulary .*another tokenizer"):
        tokenize_dataset(Dataset.from_list([{"input_ids": [5, 99999]}]), tokenizer, max_length=16)
    with pytest.raises(InputError, match="'labels' has 1 entries but 'input_ids' has 2"):
        tokenize_dataset(Dataset.from_list([{"input_ids": [5, 6], "labels": [5]}]), tokenizer, max_length=16)
