"""Reward models: a causal LM with a scalar head (``AutoModelForSequenceClassification``, one label), the
losses it is trained with, and the held-out measures of how well it ranks and how calibrated it is."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synthforge.errors import UserError
from synthforge.models import pad

Message = dict[str, str]


def soft_label_loss(chosen: torch.Tensor, rejected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between σ(r_chosen − r_rejected) and the judge's probability that chosen is better
    (the RLAIF papers' soft labels; with target 1 it is the usual −log σ(r_chosen − r_rejected))."""
    gap = chosen - rejected
    return -(target * torch.nn.functional.logsigmoid(gap) + (1 - target) * torch.nn.functional.logsigmoid(-gap)).mean()


def load_reward_model(ref: str, device: str | None = None) -> tuple[Any, Any, str, str]:
    """(model, tokenizer, name, location): a sequence classifier with one output, initialised from any causal LM
    we can load (a fresh scalar head) or loaded as it is from a reward-model directory; pad token set."""
    from transformers import AutoModelForSequenceClassification

    from synthforge.models import ensure_chat_template, load_pretrained
    from synthforge.train.student import student_location

    name, location = student_location(ref)
    model, tokenizer = load_pretrained(
        location, device, "a reward model from", ref, AutoModelForSequenceClassification, num_labels=1
    )
    ensure_chat_template(tokenizer, model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, name, location


def check_reward_dir(ref: str) -> Path:
    """A directory holding a trained reward model (a sequence classifier with one label); else a user error."""
    import json

    path = Path(ref).expanduser()
    config = path / "config.json"
    if not config.is_file():
        raise UserError(f"reward model {ref!r}: not a model directory (no config.json)")
    data = json.loads(config.read_text(encoding="utf-8"))
    architectures = data.get("architectures") or []
    classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
    if not classifier or len(data.get("id2label") or {"0": "LABEL_0"}) != 1:
        raise UserError(
            f"reward model {ref!r} is not a sequence classifier with one output (architectures: "
            f"{', '.join(architectures) or 'none'}): train one with `synthforge train reward`"
        )
    return path


@torch.inference_mode()
def reward_scores(
    model: Any, tokenizer: Any, conversations: Sequence[list[Message]], batch_size: int = 8, max_length: int = 512
) -> list[float]:
    """The reward of each conversation (prompt and answer, rendered by the chat template)."""
    device = next(model.parameters()).device
    encoded = [
        tokenizer.apply_chat_template(list(c), tokenize=True, return_dict=False)[-max_length:] for c in conversations
    ]
    encoded = [list(e["input_ids"]) if isinstance(e, dict) else list(e) for e in encoded]
    scores: list[float] = []
    for start in range(0, len(encoded), batch_size):
        ids, mask = pad(encoded[start : start + batch_size], tokenizer.pad_token_id)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        scores += logits[:, 0].tolist()
    return scores


@dataclass
class RewardReport:
    """Held-out measures of a reward model on preference pairs."""

    accuracy: float
    mean_gap: float
    pairs: int
    calibration_error: float | None  # expected calibration error against the judge's confidences

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 4),
            "mean_gap": round(self.mean_gap, 4),
            "pairs": self.pairs,
            "ece_vs_judge": None if self.calibration_error is None else round(self.calibration_error, 4),
        }


def calibration_error(predicted: Sequence[float], target: Sequence[float], bins: int = 10) -> float:
    """Expected calibration error: pairs binned by the model's P(chosen better); per bin, the gap between its
    mean prediction and the judge's mean probability, weighted by the bin's share of pairs."""
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, p in enumerate(predicted) if low <= p < high or (b == bins - 1 and p == 1.0)]
        if members:
            gap = sum(predicted[i] for i in members) / len(members) - sum(target[i] for i in members) / len(members)
            total += len(members) / len(predicted) * abs(gap)
    return total


def evaluate_rewards(
    model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], batch_size: int = 8, max_length: int = 512
) -> RewardReport | None:
    """Pairwise accuracy, mean reward gap and (rows with ``confidence``) calibration on held-out pairs."""
    if not rows:
        return None
    was_training = model.training
    model.eval()
    chosen = reward_scores(model, tokenizer, [r["prompt"] + r["chosen"] for r in rows], batch_size, max_length)
    rejected = reward_scores(model, tokenizer, [r["prompt"] + r["rejected"] for r in rows], batch_size, max_length)
    model.train(was_training)
    gaps = [c - r for c, r in zip(chosen, rejected, strict=True)]
    confidences = [r.get("confidence") for r in rows]
    ece = None
    if all(isinstance(c, int | float) for c in confidences):
        predicted = [1 / (1 + math.exp(-g)) for g in gaps]
        ece = calibration_error(predicted, [float(c) for c in confidences])  # type: ignore[arg-type]
    return RewardReport(sum(g > 0 for g in gaps) / len(gaps), sum(gaps) / len(gaps), len(gaps), ece)
