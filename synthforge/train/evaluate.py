"""Held-out preference evaluation: does the model give the chosen answer a higher (length-normalised)
log-probability than the rejected one? Optionally relative to a reference model (DPO's implicit reward)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from synthforge.models import token_logprobs

Message = dict[str, str]


@dataclass
class PreferenceReport:
    """Share of pairs with a positive margin, the mean margin, and how many pairs were scored."""

    accuracy: float
    mean_margin: float
    pairs: int
    relative_to_reference: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 4),
            "mean_margin": round(self.mean_margin, 4),
            "pairs": self.pairs,
            "relative_to_reference": self.relative_to_reference,
        }


def _encode(tokenizer, prompt: list[Message], completion: list[Message], max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion rendered by the chat template, and where the completion starts."""
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    answer_text = full_text[len(prompt_text) :] if full_text.startswith(prompt_text) else completion[-1]["content"]
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"][: max_length - 1]
    prompt_ids = prompt_ids[-(max_length - len(answer_ids)) :]  # keep the prompt's end when too long
    return prompt_ids + answer_ids, len(prompt_ids)


def mean_logprobs(model, tokenizer, prompts, completions, batch_size: int = 8, max_length: int = 512) -> list[float]:
    """Mean log-probability per completion token, for each (prompt, completion) pair."""
    encoded = [_encode(tokenizer, p, c, max_length) for p, c in zip(prompts, completions, strict=True)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores: list[float] = []
    for start in range(0, len(encoded), batch_size):
        pairs = [(tokens[:at], tokens[at:]) for tokens, at in encoded[start : start + batch_size]]
        scores += [sum(row) / len(row) if row else 0.0 for row in token_logprobs(model, pairs, pad_id)]
    return scores


def preference_margins(model, tokenizer, rows: Sequence[dict[str, Any]], batch_size: int = 8, max_length: int = 512):
    """Chosen minus rejected mean log-probability, per pair."""
    prompts = [r["prompt"] for r in rows]
    chosen = mean_logprobs(model, tokenizer, prompts, [r["chosen"] for r in rows], batch_size, max_length)
    rejected = mean_logprobs(model, tokenizer, prompts, [r["rejected"] for r in rows], batch_size, max_length)
    return [c - r for c, r in zip(chosen, rejected, strict=True)]


def summarize(margins: Sequence[float], base: Sequence[float] | None = None) -> PreferenceReport:
    """Accuracy and mean of ``margins`` (minus a reference model's ``base`` margins when given)."""
    if base is not None:
        margins = [m - b for m, b in zip(margins, base, strict=True)]
    if not margins:
        return PreferenceReport(0.0, 0.0, 0, base is not None)
    accuracy = sum(1 for m in margins if m > 0) / len(margins)
    return PreferenceReport(accuracy, sum(margins) / len(margins), len(margins), base is not None)


def evaluate_preferences(
    model, tokenizer, rows: Sequence[dict[str, Any]], reference=None, batch_size: int = 8, max_length: int = 512
) -> PreferenceReport:
    """Accuracy and mean margin of ``model`` on preference ``rows`` (minus ``reference``'s margins if given)."""
    margins = preference_margins(model, tokenizer, rows, batch_size, max_length)
    base = preference_margins(reference, tokenizer, rows, batch_size, max_length) if reference is not None else None
    return summarize(margins, base)
