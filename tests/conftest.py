"""Shared fixtures: a tiny random Llama with a real (locally trained) fast tokenizer and a ChatML template, and a
small synthetic pool in chat format. Everything is built offline in well under a second."""

from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

WORDS = (
    "the a of to and is in what which name capital country city add plus minus number answer question "
    "reverse word letter first last red blue green cat dog sun moon river mountain one two three four five "
    "six seven eight nine ten paris rome tokyo lima oslo cairo sum list sort colour animal"
).split()


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [" ".join(random.Random(i).choices(WORDS, k=12)) + " 0123456789 ?:.,\n" for i in range(300)]
    tok.train_from_iterator(corpus, trainer)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    return fast


def make_model(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=1,
        eos_token_id=3,
        bos_token_id=2,
    )
    return LlamaForCausalLM(config)


def make_pool(n: int = 48, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = ["add", "capital", "reverse"][i % 3]
        if kind == "add":
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            q, ans = f"what is {a} plus {b} ?", str(a + b)
        elif kind == "capital":
            q, ans = f"name the capital city of country {rng.choice(WORDS)}", rng.choice(["paris", "rome", "lima"])
        else:
            w = rng.sample(WORDS, 3)
            q, ans = "reverse the words " + " ".join(w), " ".join(reversed(w))
        rows.append(
            {
                "id": f"{kind}-{i}",
                "source": kind,
                "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ans}],
            }
        )
    return Dataset.from_list(rows)


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny_llama")
    make_model(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def pool():
    return make_pool()


def tiny_warmup_config(**overrides):
    """A WarmupConfig for the tiny model: LoRA r=4, lr 1e-3, no accumulation; overrides replace any field."""
    from less_hf import WarmupConfig

    fields = dict(
        num_rows=12,
        epochs=2,
        learning_rate=1e-3,
        per_device_batch_size=4,
        gradient_accumulation_steps=1,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.1,
        max_length=64,
        logging_steps=1,
        seed=0,
    )
    fields.update(overrides)
    return WarmupConfig(**fields)


@pytest.fixture(scope="session")
def warmup_dir(tmp_path_factory, tiny_model_dir, pool):
    """A real warmup: Trainer + peft LoRA + AdamW + GradientCaptureCallback, 2 epochs on 12 rows."""
    from less_hf import warmup

    out = tmp_path_factory.mktemp("warmup")
    warmup(tiny_model_dir, pool, out, tiny_warmup_config(), use_cpu=True, disable_tqdm=True)
    return out


@pytest.fixture(autouse=True, scope="session")
def _less_hf_logs_reach_caplog():
    """less_hf logs like transformers (its own handler, no propagation); tests capture records at the root."""
    import logging

    import less_hf  # noqa: F401  (configures the less_hf logger)

    logging.getLogger("less_hf").propagate = True
    yield


@pytest.fixture(autouse=True, scope="session")
def _private_datasets_cache(tmp_path_factory):
    """`datasets.load_dataset` caches local files by path and modification time; pytest reuses temp-folder names
    across runs (and concurrent runs), so a shared cache could hand one run another run's rows. Each session gets its
    own."""
    import datasets

    previous = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = tmp_path_factory.mktemp("hf_datasets_cache")
    yield
    datasets.config.HF_DATASETS_CACHE = previous
