"""Training configs: plain dataclasses (as TRL's), filled from a YAML file and/or CLI options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from synthforge.files import read_text
from synthforge.settings import SpecError, build_config

# TRL 1.x DPO loss types (DPOConfig.loss_type).
DPO_LOSSES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


@dataclass
class LoraSettings:
    """LoRA adapters (peft); the saved student has them merged, so it loads as a plain model."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class TrainingConfig:
    """Settings shared by every trainer (SFT, DPO, reward, RLHF). ``max_steps`` > 0 overrides ``epochs``."""

    model: str = "embedded"
    data: str = ""
    out: str = ""
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-5
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    eval_fraction: float = 0.1
    seed: int = 42
    device: str | None = None
    logging_steps: int = 1
    lora: LoraSettings = field(default_factory=LoraSettings)

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be in [0, 1)")
        for name in ("batch_size", "grad_accum", "max_length", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be > 0")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be >= 1 (or -1: train for 'epochs'), got {self.max_steps}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")


@dataclass
class SFTTrainingConfig(TrainingConfig):
    """Supervised fine-tuning on ``sft.jsonl``-style data; the loss covers the final assistant turn of each
    conversation (``assistant_turns: final``) or every assistant turn (``all``: one row per turn)."""

    assistant_turns: str = "final"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.assistant_turns not in ("final", "all"):
            raise ValueError(f"assistant_turns must be final or all, got {self.assistant_turns!r}")


@dataclass
class DPOTrainingConfig(TrainingConfig):
    """DPO on ``dpo.jsonl``-style pairs. ``reference``: the frozen reference model (default: ``model``)."""

    learning_rate: float = 5e-6
    beta: float = 0.1
    loss_type: str = "sigmoid"
    reference: str | None = None
    evaluate: bool = True
    precompute_ref: bool = True  # reference log-probabilities computed once before training, not every step

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type not in DPO_LOSSES:
            raise ValueError(f"loss_type must be one of TRL's: {', '.join(DPO_LOSSES)}")
        if self.beta <= 0:
            raise ValueError("beta must be > 0")


REWARD_LABELS = ("auto", "hard", "soft", "margin")


@dataclass
class RewardTrainingConfig(TrainingConfig):
    """A reward model on preference pairs. ``labels``: auto (soft when rows carry the judge's ``confidence``),
    hard, soft, or margin; ``center_rewards``: TRL's coefficient that keeps rewards centred on zero."""

    learning_rate: float = 1e-5
    labels: str = "auto"
    center_rewards: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.labels not in REWARD_LABELS:
            raise ValueError(f"labels must be one of {', '.join(REWARD_LABELS)}, got {self.labels!r}")


@dataclass
class RLHFTrainingConfig(TrainingConfig):
    """RLHF with TRL's RLOO: the policy (``model``) samples ``num_generations`` answers per prompt, the reward
    model (``reward``) scores them, and ``beta`` × the KL to the starting policy is subtracted from the reward."""

    reward: str = ""
    learning_rate: float = 1e-6
    beta: float = 0.05
    num_generations: int = 4
    max_completion_length: int = 64
    temperature: float = 1.0
    evaluate: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta < 0:
            raise ValueError(f"beta (the KL coefficient) must be >= 0, got {self.beta}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2 (RLOO's baseline is the other samples' mean reward)")
        if self.max_completion_length < 1:
            raise ValueError("max_completion_length must be >= 1")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")


C = TypeVar("C", bound=TrainingConfig)


def load_training_config(cls: type[C], path: Path | None, options: dict[str, Any]) -> C:
    """``cls`` from YAML file ``path`` (if any) with ``options`` on top; errors name the file and key."""
    data: dict[str, Any] = {}
    where = "options"
    if path is not None:
        where = str(path)
        try:
            loaded = yaml.safe_load(read_text(path, "training config")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SpecError(f"{path}: cannot read training config: {exc}") from None
        if not isinstance(loaded, dict):
            raise SpecError(f"{path}: expected a mapping of training settings")
        data.update(loaded)
    for key, value in options.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **{k: v for k, v in value.items() if v is not None}}
        elif isinstance(value, dict):
            data[key] = {k: v for k, v in value.items() if v is not None}
        elif value is not None:
            data[key] = value
    return build_config(cls, data, where)
