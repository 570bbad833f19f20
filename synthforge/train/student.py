"""Load a student (or reference) model for training: fp32 on CPU, bf16 on a GPU that supports it, and a
tokenizer that has a chat template whose end-of-turn token is the EOS the model learns to emit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from synthforge.errors import UserError
from synthforge.models import EMBEDDED_NAMES, END_OF_TURN, HUB_ID, ensure_chat_template, load_pretrained, resolve_model

__all__ = ["END_OF_TURN", "Student", "load_student", "student_location"]


@dataclass
class Student:
    """A model, its tokenizer, where they came from, and whether we gave the tokenizer a chat template."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    path: str
    added_chat_template: bool


def student_location(ref: str) -> tuple[str, str]:
    """(display name, directory) of a model reference: "embedded", a model directory, or a .gguf file."""
    path = Path(ref).expanduser()
    if not path.exists() and ref.lower() not in EMBEDDED_NAMES and not HUB_ID.match(ref):
        raise UserError(f"model {ref!r} not found: give a model directory, a .gguf file or 'embedded'")
    name, _, location = resolve_model(ref)
    return name, str(location)


def load_student(ref: str, device: str | None = None, for_training: bool = True) -> Student:
    """Model and tokenizer from ``ref``, with a chat template and a pad token, on the chosen device."""
    name, location = student_location(ref)
    model, tokenizer = load_pretrained(location, device, "model", ref)
    added = ensure_chat_template(tokenizer, model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not for_training:
        model.eval()
    return Student(model, tokenizer, name, location, added)
