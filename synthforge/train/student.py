"""Load a student (or reference) model for training: fp32 on CPU, bf16 on a GPU that supports it, and a
tokenizer that has a chat template whose end-of-turn token is the EOS the model learns to emit."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import torch

from synthforge.errors import UserError

END_OF_TURN = "<|im_end|>"
START_OF_TURN = "<|im_start|>"


@dataclass
class Student:
    """A model, its tokenizer, where they came from, and whether we gave the tokenizer a chat template."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    path: str
    added_chat_template: bool


def chatml_template() -> str:
    """The ChatML template given to tokenizers that have none (``synthforge/train/templates/chatml.jinja``)."""
    return files("synthforge.train").joinpath("templates/chatml.jinja").read_text(encoding="utf-8")


def resolve_model(ref: str) -> tuple[str, str]:
    """(display name, directory) of a model reference: "embedded", a model directory, or a .gguf file."""
    from synthforge.teachers.loading import EMBEDDED_NAMES, HUB_ID, resolve_teacher_dir

    path = Path(ref).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(f"model directory {ref} has no config.json (expected a transformers model directory)")
    if not path.exists() and ref.lower() not in EMBEDDED_NAMES and not HUB_ID.match(ref):
        raise UserError(f"model {ref!r} not found: give a model directory, a .gguf file or 'embedded'")

    name, _, location = resolve_teacher_dir(ref)
    return name, str(location)


def ensure_chat_template(tokenizer, model) -> bool:
    """Give a template-less tokenizer ChatML, with ``<|im_end|>`` as EOS (added and embedded if new).

    Returns True when a template was added. A tokenizer that has a template is left as it is.
    """
    if getattr(tokenizer, "chat_template", None):
        return False
    added = tokenizer.add_special_tokens({"additional_special_tokens": [START_OF_TURN, END_OF_TURN]})
    if added:
        model.resize_token_embeddings(len(tokenizer))
    tokenizer.chat_template = chatml_template()
    tokenizer.eos_token = END_OF_TURN
    eos_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    model.config.eos_token_id = eos_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = eos_id
    return True


def load_student(ref: str, device: str | None = None, for_training: bool = True) -> Student:
    """Model and tokenizer from ``ref``, with a chat template and a pad token, on the chosen device."""
    from synthforge.teachers.loading import load_pretrained

    name, location = resolve_model(ref)
    model, tokenizer = load_pretrained(location, device, "model", ref)
    added = ensure_chat_template(tokenizer, model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not for_training:
        model.eval()
    return Student(model, tokenizer, name, location, added)
