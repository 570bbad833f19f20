"""A tiny random chat model built from a config, for tests and benchmarks (no hub, a few seconds)."""

from __future__ import annotations

from pathlib import Path

import torch

from synthforge.train.student import chatml_template

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "How can I help you today? I can answer questions, write text and explain ideas.",
    "Please rewrite the response to remove anything harmful, unethical or illegal.",
    "user assistant system critique revision principle response prompt",
    "0123456789 !?.,:;'\"()[]{}<>-_/\\|@#$%^&*+=~`",
]


def build_tiny_model(
    target: Path, seed: int = 0, hidden_size: int = 32, layers: int = 2, chat_template: bool = True
) -> Path:
    """Save a small random Llama and a byte-level BPE tokenizer (with a ChatML template unless told not)."""
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
    tokenizer.chat_template = chatml_template() if chat_template else None
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
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
