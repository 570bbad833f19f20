"""For tests and benchmarks: a tiny random chat model built from a config (no hub, a few seconds) and a seeded
near-duplicate corpus (the scripted teacher tests use is ``synthforge.teachers.scripted``)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from synthforge.models import chatml_template

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "How can I help you today? I can answer questions, write text and explain ideas.",
    "Please rewrite the response to remove anything harmful, unethical or illegal.",
    "user assistant system critique revision principle response prompt",
    "0123456789 !?.,:;'\"()[]{}<>-_/\\|@#$%^&*+=~`",
]


THINKING_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


def build_tiny_model(
    target: Path,
    seed: int = 0,
    hidden_size: int = 32,
    layers: int = 2,
    chat_template: bool | str = True,
    context: int = 2048,
    thinking: bool = False,
) -> Path:
    """Save a small random Llama and a byte-level BPE tokenizer: with a ChatML template (``chat_template``: True),
    none (False) or the one given; ``context``: its context window in tokens. ``thinking``: a reasoning model's
    layout, as Qwen3 has it — ``<think>`` and ``</think>`` are tokens of their own and the template opens the
    thinking block for the answer (the random model rarely closes it: a thinking budget does)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
    )
    tokenizer.chat_template = chatml_template() if chat_template is True else (chat_template or None)
    if thinking:
        tokenizer.add_tokens(["<think>", "</think>"])
        tokenizer.chat_template = THINKING_CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def near_duplicate_corpus(n_docs: int, seed: int, words: int = 100) -> tuple[list[str], list[int]]:
    """Documents and the group (base text) each came from; about 30 % are edited copies of a base."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(50000)]
    zipf = np.minimum(np_rng.zipf(1.3, size=n_docs * words * 2), len(vocab)) - 1
    stream = iter(zipf.tolist())
    docs, groups = [], []
    group = 0
    while len(docs) < n_docs:
        base = [vocab[next(stream)] for _ in range(rng.randint(words // 2, words * 3 // 2))]
        docs.append(" ".join(base))
        groups.append(group)
        if rng.random() < 0.12:  # this base gets 1-5 near-duplicate variants
            for _ in range(rng.randint(1, 5)):
                if len(docs) < n_docs:
                    docs.append(" ".join(_edit(base, rng, vocab)))
                    groups.append(group)
        group += 1
    return docs, groups


def _edit(words: list[str], rng: random.Random, vocab: list[str]) -> list[str]:
    """A copy with each word deleted, substituted or followed by an insertion at rate q/3 each, some
    adjacent swaps, and sometimes the tail cut; q is drawn in [0, 0.25] so similarities span the threshold."""
    q = rng.uniform(0.0, 0.25)
    out: list[str] = []
    for word in words:
        roll = rng.random()
        if roll < q / 3:
            continue
        out.append(rng.choice(vocab) if roll < 2 * q / 3 else word)
        if roll > 1 - q / 3:
            out.append(rng.choice(vocab))
    for i in range(len(out) - 1):
        if rng.random() < q / 4:
            out[i], out[i + 1] = out[i + 1], out[i]
    if rng.random() < 0.2:
        out = out[: max(1, int(len(out) * rng.uniform(0.8, 1.0)))]
    return out
