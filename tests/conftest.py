"""Shared fixtures: a tiny random Llama with a ChatML tokenizer, built from a config (no hub, seconds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "How can I help you today? I can answer questions, write text and explain ideas.",
    "Please rewrite the response to remove anything harmful, unethical or illegal.",
    "user assistant system critique revision principle response prompt",
    "0123456789 !?.,:;'\"()[]{}<>-_/\\|@#$%^&*+=~`",
]


def build_tiny_model(target: Path, seed: int = 0) -> Path:
    """Save a 2-layer random Llama and a byte-level BPE tokenizer with a ChatML template to ``target``."""
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
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def tiny_teacher(tiny_model_dir):
    from synthforge.teachers.loading import load_teacher

    return load_teacher(str(tiny_model_dir), batch_size=4, device="cpu")


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the repo's prompts/, constitutions/ and pipelines/ in a temp dir (tests may edit it)."""
    for name in ("prompts", "constitutions", "pipelines"):
        shutil.copytree(REPO / name, tmp_path / name)
    return tmp_path


def write_pipeline(project: Path, teacher: Path | str, max_new_tokens: int = 6, **extra: str) -> Path:
    """A small CAI pipeline over the project's seeds, fast on the tiny model."""
    text = f"""
name: tiny-cai
seed: 7
teacher: {{model: "{teacher}", batch_size: 4}}
seeds: {{path: seeds/red-team.jsonl}}
stages:
  - respond:
      sampling: {{temperature: 0.8, max_new_tokens: {max_new_tokens}}}
  - critique_revise:
      constitution: harmless
      rounds: {extra.get("rounds", 1)}
      sampling: {{temperature: 0.8, max_new_tokens: {max_new_tokens}}}
export: {{license: apache-2.0}}
"""
    path = project / "pipelines" / "tiny-cai.yaml"
    path.write_text(text, encoding="utf-8")
    return path
