"""Reward-ranked preference pairs: sample ``n`` answers per prompt (or take the record's ``response`` and
``rejected``), score each with a reward model, and keep the best as chosen and the worst as rejected, with
the score gap as ``margin``. Pairs whose gap is below ``min_gap`` go to the drop ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from synthforge.annotations import REWARD, RewardGap
from synthforge.records import Drop, Record, same_text, with_reasoning
from synthforge.stages.base import Stage
from synthforge.stages.reward_score import RewardScorer
from synthforge.teachers.base import Conversation, SamplingParams, Teacher
from synthforge.trace import REWARD_STEP, SAMPLE_STEP


@dataclass
class RewardRankConfig:
    """``reward_model``: a directory from ``synthforge train reward`` (relative to the pipeline file);
    ``n``: answers sampled per prompt (0: rank the record's own response and rejected)."""

    reward_model: str
    n: int = 4
    min_gap: float = 0.0
    respond_template: str = "respond"
    batch_size: int = 8
    max_length: int = 512
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=1.0, max_new_tokens=256))

    def __post_init__(self) -> None:
        if self.n == 1 or self.n < 0:
            raise ValueError("n must be 0 (rank response and rejected) or >= 2")
        if self.min_gap < 0:
            raise ValueError("min_gap must be >= 0")


class RewardRank(Stage):
    """Writes the best-scored answer as ``response`` and the worst as ``rejected`` (``meta.reward``)."""

    kind = "reward_rank"
    traces = (SAMPLE_STEP, REWARD_STEP)
    annotates = (REWARD,)
    tags = ("reward-model",)
    Config = RewardRankConfig
    reads = ("prompt",)
    writes = ("response", "rejected")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scorer = RewardScorer(self.config.reward_model, self.resources.base_dir, self.where)
        self.uses_teacher = self.config.n > 0  # with n = 0 no teacher is needed
        self.respond_template = self.use_template("respond", self.config.respond_template)

    def fields_read(self) -> tuple[str, ...]:
        return ("prompt",) if self.config.n else ("prompt", "response", "rejected")

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "reward_model": self.scorer.identity}

    def conversation(self, record: Record) -> Conversation:
        return self.answer_request(record, self.respond_template)

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        if self.config.n:
            assert teacher is not None
            params = [self.seeded(replace(self.config.sampling, n=self.config.n), r) for r in batch]
            samples = teacher.generate([self.conversation(r) for r in batch], params)
            candidates = [[c.text for c in group] for group in samples]
        else:
            samples = [[] for _ in batch]
            candidates = [[r.response or "", r.rejected or ""] for r in batch]
        flat = [(i, text) for i, texts in enumerate(candidates) for text in texts]
        scores = self.scorer.score([(batch[i], text) for i, text in flat], self.config)
        per_record: list[list[float]] = [[] for _ in batch]
        for (i, _), score in zip(flat, scores, strict=True):
            per_record[i].append(score)
        return [self._rank(r, candidates[i], per_record[i], samples[i]) for i, r in enumerate(batch)]

    def _rank(self, record: Record, texts: list[str], scores: list[float], samples: list) -> Record | Drop:
        best = max(range(len(texts)), key=lambda k: (scores[k], -k))
        worst = min(range(len(texts)), key=lambda k: (scores[k], k))
        gap = scores[best] - scores[worst]
        steps = [*record.steps]
        steps += [
            SAMPLE_STEP.answer(self.name, s, index=k, writes=["response", "rejected"]) for k, s in enumerate(samples)
        ]
        steps.append(REWARD_STEP.make(self.name, scores=scores, best=best, worst=worst))
        annotated = REWARD.on(record, RewardGap(scores[best], scores[worst], gap))
        ranked = replace(annotated, response=texts[best], rejected=texts[worst], steps=steps)
        ranked = with_reasoning(ranked, *((s.text, s.reasoning) for s in samples))
        if same_text(texts[best], texts[worst]):
            return self.drop(ranked, "identical answers: no preference to learn")
        if gap < self.config.min_gap:
            return self.drop(ranked, f"reward gap below min_gap {self.config.min_gap:g} ({gap:.3f})")
        return ranked

    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        return {"samples": records * self.config.n}

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        return [("samples", self.conversation(record))] if self.config.n else []
