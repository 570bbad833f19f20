"""Annotate records with a reward model's score of their answer (``meta.reward_score``), without pairing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthforge.annotations import REWARD_SCORE
from synthforge.records import Drop, Record
from synthforge.settings import SpecError
from synthforge.stages.base import Stage
from synthforge.teachers.base import Teacher


def reward_model_path(ref: str, base_dir: Path | None, where: str) -> Path:
    """The reward-model directory, relative to the pipeline file; a spec error when it isn't one."""
    from synthforge.errors import UserError
    from synthforge.train.reward_model import check_reward_dir

    path = Path(ref).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return check_reward_dir(str(path))
    except UserError as exc:
        raise SpecError(f"{where}.reward_model: {exc}") from None


class RewardScorer:
    """A reward model found relative to the pipeline file, identified by its weights, loaded on first use."""

    def __init__(self, ref: str, base_dir: Path | None, where: str):
        from synthforge.models import weights_id

        self.path = reward_model_path(ref, base_dir, where)
        self.identity = {"name": self.path.name, "weights": weights_id(self.path)}
        self._loaded: tuple[Any, Any] | None = None

    def score(self, pairs: list[tuple[Record, str]], config: Any) -> list[float]:
        """The reward of each (record, answer): the answer as the final turn of the record's conversation, scored
        in batches (fp32 on CPU)."""
        from synthforge.train.reward_model import load_reward_model, reward_scores

        if self._loaded is None:
            model, tokenizer, _, _ = load_reward_model(str(self.path))
            self._loaded = (model.eval(), tokenizer)
        conversations = [[*r.dialogue, {"role": "assistant", "content": a}] for r, a in pairs]
        return reward_scores(*self._loaded, conversations, config.batch_size, config.max_length)


@dataclass
class RewardScoreConfig:
    """``reward_model``: a directory from ``synthforge train reward`` (relative to the pipeline file)."""

    reward_model: str
    batch_size: int = 8
    max_length: int = 512


class RewardScore(Stage):
    """Reads ``prompt`` and ``response``; adds ``meta.reward_score``."""

    kind = "reward_score"
    annotates = (REWARD_SCORE,)
    Config = RewardScoreConfig
    reads = ("prompt", "response")
    uses_teacher = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scorer = RewardScorer(self.config.reward_model, self.resources.base_dir, self.where)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "reward_model": self.scorer.identity}

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        scores = self.scorer.score([(r, r.response or "") for r in batch], self.config)
        return [REWARD_SCORE.on(r, s) for r, s in zip(batch, scores, strict=True)]
