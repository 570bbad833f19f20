"""Preference pairs from rubric scores (UltraFeedback's recipe): per record, the best-rated candidate is
``chosen`` (``response``) and the worst-rated ``rejected``, when their mean scores differ by at least
``min_margin``; a record whose best and worst are closer (a tie), or that has fewer than two rated candidates,
goes to the ledger with the scores."""

from __future__ import annotations

from dataclasses import dataclass, replace

from synthforge.annotations import RATING, ScorePair
from synthforge.records import Candidate, Drop, Record, same_text
from synthforge.stages.base import Stage
from synthforge.stages.helpers.metrics import GroupSpec, Metrics
from synthforge.teachers.base import Teacher
from synthforge.trace import PAIRING_STEP


@dataclass
class PairByScoreConfig:
    """Settings of the pair_by_score stage."""

    min_margin: float = 1.0  # the chosen answer's mean score must beat the rejected one's by at least this

    def __post_init__(self) -> None:
        if not self.min_margin >= 0:
            raise ValueError(f"min_margin must be a number >= 0, got {self.min_margin!r}")


class PairByScore(Stage):
    """Reads ``candidates`` (rated); writes ``response`` (the best) and ``rejected`` (the worst)."""

    kind = "pair_by_score"
    traces = (PAIRING_STEP,)
    annotates = (RATING,)
    tags = ("rlaif",)
    Config = PairByScoreConfig
    reads = ("prompt", "candidates")
    writes = ("response", "rejected")
    uses_teacher = False
    metric_groups = {"member": GroupSpec(counts=("chosen",), rates={}, labels={"chosen": "chosen (best-rated)"})}

    def tally(self, step: dict, metrics: Metrics) -> None:
        if PAIRING_STEP.is_(step):
            metrics.count("paired")
            metrics.count("margin_sum", step["margin"])
            metrics.add("member", step["chosen_member"] or "-", chosen=1)

    def notes(self, summary: dict) -> list[str]:
        counters = summary.get("counters", {})
        if not counters.get("paired"):
            return []
        mean = counters.get("margin_sum", 0) / counters["paired"]
        return [f"{int(counters['paired'])} pairs, mean score margin {mean:.2f}"]

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        return [self._paired(record) for record in batch]

    def _paired(self, record: Record) -> Record | Drop:
        rated = [c for c in record.candidates if c.rating is not None]
        if len(rated) < 2:
            return self.drop(record, f"fewer than two rated candidates ({len(rated)} of {len(record.candidates)})")
        order = sorted(range(len(rated)), key=lambda k: (-(rated[k].rating or 0.0), k))  # best first, stable
        best, worst = rated[order[0]], rated[order[-1]]
        margin = (best.rating or 0.0) - (worst.rating or 0.0)
        scores = ", ".join(f"{c.member or k}: {c.rating:.2f}" for k, c in enumerate(rated))
        if same_text(best.text, worst.text):
            return self.drop(record, f"best and worst candidates are the same text ({scores})")
        if margin < self.config.min_margin or margin == 0:
            return self.drop(record, f"score tie: margin {margin:.2f} below {self.config.min_margin:g} ({scores})")
        step = PAIRING_STEP.make(
            self.name,
            chosen=_who(best, record.candidates.index(best)),
            rejected=_who(worst, record.candidates.index(worst)),
            chosen_member=best.member,
            margin=margin,
        )
        rating = ScorePair(
            best.rating or 0.0, worst.rating or 0.0, margin, best.teacher, worst.teacher, best.member, worst.member
        )
        return replace(RATING.on(record, rating), response=best.text, rejected=worst.text, steps=[*record.steps, step])


def _who(candidate: Candidate, index: int) -> dict[str, object]:
    return {"candidate": index, "member": candidate.member, "teacher": candidate.teacher, "scores": candidate.scores}
